"""Per-family reward scales for training on a task mixture (``agent.reward_scale`` of ``metaopt-train``).

On a mixture, the families' returns differ by an order of magnitude (log(L0/LT) of a tuned
constant: about 3.4 on quadratics, 0.2 on logistic regression), and PPO normalizes advantages
over minibatches that mix them, so the policy gradient is mostly the large-return families'.
:class:`FamilyRewardScale` multiplies each row's reward by its task family's scale: every
family keeps its own objective (the divergence penalty is scaled with the progress, so the
trade-off inside a family is unchanged), only their weights in the sum change.

The scale applies to what the learner sees; ``VecMonitor`` (inside this wrapper) logs, and the
evaluation harness scores, the env's unscaled rewards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents.controllers.base import core_of


def family_scales(families: tuple[str, ...], reward_scale: Mapping[str, Any]) -> torch.Tensor:
    """``(len(families),)`` float32: the scale of each family (1 where ``reward_scale`` names none).

    A ValueError names an unknown family (with the env's families) or a scale that is not a
    positive finite number.
    """
    scales = []
    for name in reward_scale:
        if name not in families:
            raise ValueError(
                f"agent.reward_scale names the family {name!r}, which the env does not have; "
                f"its families are {', '.join(families)}"
            )
    for name in families:
        value = reward_scale.get(name, 1.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"agent.reward_scale.{name} must be a positive finite number, got {value!r}")
        scales.append(float(value))
    return torch.tensor(scales, dtype=torch.float32)


class FamilyRewardScale(VecEnvWrapper):
    """Multiply each row's reward by the scale of the family of the task it acted on.

    The family is read from the core's tasks when the actions are sent (``step_async``), before
    the step's autoreset can draw a new task for an ended row.
    """

    def __init__(self, venv: VecEnv, reward_scale: Mapping[str, Any]) -> None:
        super().__init__(venv)
        self.core = core_of(venv)
        self.families = tuple(self.core.family.families())
        self.scales = family_scales(self.families, reward_scale).to(self.core.device)
        self._row_scale: np.ndarray | None = None

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        index = self.core.family.family_index(self.core.tasks)
        self._row_scale = self.scales[index].cpu().numpy()
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        assert self._row_scale is not None, "step_async must be called before step_wait"
        return obs, (rewards * self._row_scale).astype(np.float32), dones, infos


REWARD_SHAPINGS = ("final_loss",)
"""The values of ``agent.reward_shaping`` (null: the env's rewards)."""


class FinalLossReward(VecEnvWrapper):
    """Rewards whose discounted sum over an inner episode is its final objective, discounted.

    The env's reward is ``r_t = log(L_t / L_{t+1})`` (with the loss floor), which sums to the objective
    ``log(L_0 / L_T)`` but whose *discounted* sum favours early gains: with ``gamma = 0.99`` a schedule
    that raises the loss first and ends lower (a large rate, then decay) scores below one that gains
    early and ends higher. This wrapper adds potential-based shaping (Ng et al., 1999) with potential
    ``c_t = log(L_0 / L_t)``, the inner episode's reward so far: ``r'_t = gamma c_{t+1} - c_t
    = r_t - (1 - gamma) c_{t+1}``, so that ``sum_k gamma^k r'_{s+k} = gamma^T c_T`` over an inner
    episode of ``T`` decisions: every policy is ranked by the final losses alone, and from any state the
    better action is the one that ends lower. With ``gamma = 1`` it changes nothing.

    ``c`` restarts with each inner episode (rows whose inner step is 0 after the step: a new inner
    episode of the trial, or a new trial).
    """

    def __init__(self, venv: VecEnv, gamma: float) -> None:
        super().__init__(venv)
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0.0 < gamma <= 1.0:
            raise ValueError(f"agent.reward_shaping needs agent.hyperparameters.gamma in (0, 1], got {gamma!r}")
        self.core = core_of(venv)
        self.gamma = float(gamma)
        self.so_far = np.zeros(venv.num_envs, dtype=np.float64)

    def reset(self):
        self.so_far[:] = 0.0
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.so_far += rewards
        shaped = rewards - (1.0 - self.gamma) * self.so_far
        restarted = (self.core.state.inner_step == 0).cpu().numpy()
        self.so_far[restarted] = 0.0
        return obs, shaped.astype(np.float32), dones, infos
