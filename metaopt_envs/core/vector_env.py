"""Native ``gymnasium.vector.VectorEnv`` over a batched core, with same-step autoreset."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metaopt_envs.core import BatchedCore, StepResult, checks, seeds_to_keys
from metaopt_envs.core.base import CoreConstructor
from metaopt_envs.core.trial import RL2TrialCore


def finish_step(core: BatchedCore, result: StepResult) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same-step autoreset: reset the rows that ended; return (next obs, final obs, done mask)."""
    done = result.terminated | result.truncated
    if done.any():
        core.reset_rows(done)
        return core.observe(), result.observation, done
    return result.observation, result.observation, done


class CoreVectorEnv(VectorEnv):
    """B environments advanced by one batched core.

    Autoreset is ``SAME_STEP``: when a row ends, ``step`` returns the first
    observation of its next episode (a freshly drawn task) and puts the last
    one in ``infos["final_obs"]`` (masked by ``infos["_final_obs"]``).
    ``episodes_per_trial=K`` switches on RL² trial mode (see
    :class:`~metaopt_envs.core.trial.RL2TrialCore`).

    The core owns the episode length (nothing is registered as ``max_episode_steps``).
    A ``max_episode_steps`` you pass yourself to ``gym.make_vec`` acts as
    ``gymnasium.wrappers.TimeLimit`` does on ``gym.make``: every row (a whole trial in
    trial mode) reports ``truncated`` once it has run that many steps, so
    ``gym.make_vec`` and ``gym.make`` with the same arguments report the same flags.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    core_class: ClassVar[CoreConstructor]

    def __init__(
        self,
        num_envs: int = 1,
        episodes_per_trial: int | None = None,
        max_episode_steps: int | None = None,
        **core_kwargs: Any,
    ) -> None:
        if max_episode_steps is not None:
            max_episode_steps = checks.integer(
                "max_episode_steps", max_episode_steps, note="a time limit on top of the core's own"
            )
        core: BatchedCore = self.core_class(num_envs=num_envs, **core_kwargs)
        if episodes_per_trial is not None:
            core = RL2TrialCore(core, episodes_per_trial)
        self.core = core
        self.num_envs = core.num_envs
        self.max_episode_steps = max_episode_steps
        horizon = core.num_decisions * (episodes_per_trial or 1)
        if max_episode_steps is not None and max_episode_steps < horizon:
            warnings.warn(
                f"max_episode_steps={max_episode_steps} truncates episodes before their end "
                f"({horizon} decisions); the core ends episodes by itself, so leave max_episode_steps out "
                f"to run whole episodes",
                stacklevel=2,
            )
        self.single_observation_space = core.single_observation_space
        self.single_action_space = core.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.int64, device=core.device)
        self._seeded = False  # the first reset without a seed draws fresh entropy for every row

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        # VectorEnv's own np_random takes one int; a list seeds it with its first entry.
        seeds = None if seed is None else checks.seeds(seed, self.num_envs)
        super().reset(seed=None if seeds is None else seeds[0])
        rows = torch.ones(self.num_envs, dtype=torch.bool, device=self.core.device)
        if options and "reset_mask" in options:
            rows = torch.as_tensor(options["reset_mask"], dtype=torch.bool, device=self.core.device)
        keys = None if seeds is None and self._seeded else seeds_to_keys(seeds, self.num_envs, self.core.device)
        self._seeded = True
        self.core.reset_rows(rows, keys=keys)
        self._elapsed[rows] = 0
        return self.core.observe().cpu().numpy(), {}

    def step(self, actions: np.ndarray):
        result = self.core.step(actions)  # the core checks and clips them
        self._elapsed += 1
        if self.max_episode_steps is not None:  # as gymnasium.wrappers.TimeLimit
            result = result._replace(truncated=result.truncated | (self._elapsed >= self.max_episode_steps))
        obs, final_obs, done = finish_step(self.core, result)
        self._elapsed[done] = 0
        infos: dict[str, Any] = {}
        everywhere = np.ones(self.num_envs, dtype=bool)
        for name, value in result.info.items():
            infos[name], infos[f"_{name}"] = value.cpu().numpy(), everywhere
        done_np = done.cpu().numpy()
        if done_np.any():
            final = np.full(self.num_envs, None, dtype=object)
            final_np = final_obs.cpu().numpy()
            for i in np.flatnonzero(done_np):  # only the rows that ended
                final[i] = final_np[i]
            infos["final_obs"], infos["_final_obs"] = final, done_np
            infos["final_info"] = {k: v for k, v in infos.items() if k not in ("final_obs", "_final_obs")}
            infos["_final_info"] = done_np
        return (
            obs.cpu().numpy(),
            result.reward.cpu().numpy(),
            result.terminated.cpu().numpy(),
            result.truncated.cpu().numpy(),
            infos,
        )
