"""``gymnasium.Env`` over a batched core with one row."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import BatchedCore, checks, seeds_to_keys
from metaopt_envs.core.base import CoreConstructor
from metaopt_envs.core.trial import RL2TrialCore


class CoreEnv(gym.Env):
    """A single environment: the batched core with ``num_envs=1``.

    Subclasses set ``core_class``; keyword arguments go to it. The core ends
    episodes itself (nothing is registered as ``max_episode_steps``);
    ``episodes_per_trial=K`` switches on RL² trial mode, as in the vector envs.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    core_class: ClassVar[CoreConstructor]

    def __init__(self, episodes_per_trial: int | None = None, **core_kwargs: Any) -> None:
        core: BatchedCore = self.core_class(num_envs=1, **core_kwargs)
        self.core = RL2TrialCore(core, episodes_per_trial) if episodes_per_trial is not None else core
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._all = torch.ones(1, dtype=torch.bool, device=self.core.device)
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            seed = checks.seed(seed)  # before Gymnasium's own check, so the message names the range
        super().reset(seed=seed)
        keys = None
        if seed is not None or not self._seeded:
            keys = seeds_to_keys(seed, 1, self.core.device)
            self._seeded = True
        self.core.reset_rows(self._all, keys=keys)
        return self.core.observe()[0].cpu().numpy(), {}

    def step(self, action: np.ndarray):
        actions = checks.actions(action, 1, self.core.single_action_space, self.core.device, batched=False)
        result = self.core.step(actions)
        info = {
            name: value[0].item() if value[0].numel() == 1 else value[0].cpu().numpy()  # scalars and (K,) entries
            for name, value in result.info.items()
        }
        return (
            result.observation[0].cpu().numpy(),
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            info,
        )
