"""``gymnasium.Env`` over a batched core with one row."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import BatchedCore, seeds_to_keys


class CoreEnv(gym.Env):
    """A single environment: the batched core with ``num_envs=1``.

    Subclasses set ``core_class``; keyword arguments go to it.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    core_class: type[BatchedCore]

    def __init__(self, **core_kwargs: Any) -> None:
        self.core = self.core_class(num_envs=1, **core_kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._all = torch.ones(1, dtype=torch.bool, device=self.core.device)
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        keys = None
        if seed is not None or not self._seeded:
            keys = seeds_to_keys(seed, 1, self.core.device)
            self._seeded = True
        self.core.reset_rows(self._all, keys=keys)
        return self.core.observe()[0].cpu().numpy(), {}

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        result = self.core.step(torch.as_tensor(action, device=self.core.device).unsqueeze(0))
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
