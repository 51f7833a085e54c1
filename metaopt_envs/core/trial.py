"""RL² trials over any batched core: K inner episodes on one task, memory kept across them.

RL² (Duan et al., 2016; Wang et al., 2016) keeps the recurrent state across
several episodes of the same task and feeds back the previous action, reward
and an episode-boundary flag. SB3's RecurrentPPO resets its LSTM state whenever
an episode starts, so this wrapper presents a whole trial to the learner as
one episode: inner episode ends are hidden (the row restarts on the same task
with a fresh initialization) and ``done`` is reported only when the trial ends.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import BatchedCore, StepResult, checks

REWARD_BOUND = 20.0


class RL2TrialCore(BatchedCore):
    """Trial mode of ``core``: ``episodes_per_trial`` inner episodes per task.

    Observation: the core's, then the previous action (``action_dim``, clipped into the
    action space), the previous reward (clipped to +-20) and a flag that is 1 on the first step
    of each inner episode. A trial ends as ``terminated`` (it ends by design,
    nothing follows it on this task); a row then draws a new task.
    """

    def __init__(self, core: BatchedCore, episodes_per_trial: int) -> None:
        self.episodes_per_trial = checks.integer(
            "episodes_per_trial", episodes_per_trial, note="inner episodes per trial"
        )
        self.core = core
        self.num_envs, self.device = core.num_envs, core.device
        action_dim = core.single_action_space.shape[0]
        base = core.single_observation_space
        self.observation_names = (
            *core.observation_names,
            *(f"previous_action_{i}" for i in range(action_dim)),
            "previous_reward",
            "new_episode",
        )
        low = np.concatenate([base.low, core.single_action_space.low, [-REWARD_BOUND, 0.0]]).astype(np.float32)
        high = np.concatenate([base.high, core.single_action_space.high, [REWARD_BOUND, 1.0]]).astype(np.float32)
        self.single_observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = core.single_action_space
        b = self.num_envs
        self.previous_action = torch.zeros(b, action_dim, device=self.device)
        self.previous_reward = torch.zeros(b, device=self.device)
        self.new_episode = torch.ones(b, device=self.device)
        self.episodes_done = torch.zeros(b, dtype=torch.int64, device=self.device)

    @property
    def unwrapped(self) -> BatchedCore:
        return self.core.unwrapped

    def __getattr__(self, name: str):
        # Core attributes (horizon, family, ...) read through the wrapper.
        if name == "core":
            raise AttributeError(name)
        return getattr(self.core, name)

    def reset_rows(self, rows: torch.Tensor, keys: torch.Tensor | None = None, same_task: bool = False) -> None:
        self.core.reset_rows(rows, keys, same_task)
        if not same_task:
            self.episodes_done[rows] = 0
        self.previous_action[rows] = 0.0
        self.previous_reward[rows] = 0.0
        self.new_episode[rows] = 1.0

    def observe(self) -> torch.Tensor:
        extra = [
            self.previous_action,
            self.previous_reward.clamp(-REWARD_BOUND, REWARD_BOUND).unsqueeze(-1),
            self.new_episode.unsqueeze(-1),
        ]
        return torch.cat([self.core.observe(), *extra], dim=-1)

    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        # Checked and clipped into the action space once: the core steps on it and it is fed back.
        checked = checks.actions(actions, self.num_envs, self.single_action_space, self.device)
        result = self.core.step(checked)
        inner_done = result.terminated | result.truncated
        self.episodes_done += inner_done.to(torch.int64)
        trial_done = self.episodes_done >= self.episodes_per_trial
        self.core.reset_rows(inner_done & ~trial_done, same_task=True)
        self.previous_action = checked.clone()  # reset_rows zeroes it in place
        self.previous_reward = result.reward.clone()  # reset_rows zeroes it in place
        self.new_episode = inner_done.to(torch.float32)
        info = dict(result.info, inner_episode_done=inner_done, inner_terminated=result.terminated)
        return StepResult(self.observe(), result.reward, trial_done, torch.zeros_like(trial_done), info)
