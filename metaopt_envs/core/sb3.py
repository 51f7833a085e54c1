"""Stable-Baselines3 ``VecEnv`` over a batched core: numpy float32 at the boundary."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from metaopt_envs.core import BatchedCore, checks, seeds_to_keys
from metaopt_envs.core.vector_env import finish_step


class CoreSB3VecEnv(VecEnv):
    """SB3's VecEnv contract over one batched core.

    Ended rows reset in the same step; their last observation is in
    ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]``
    says whether the episode was cut by the horizon (so SB3 bootstraps its
    value). ``seed(s)`` seeds row ``i`` with ``s + i`` at the next ``reset()``.
    """

    def __init__(self, core: BatchedCore) -> None:
        self.core = core
        self.render_mode = None
        super().__init__(core.num_envs, core.single_observation_space, core.single_action_space)
        self._actions: torch.Tensor | None = None
        self._seeded = False

    def reset(self) -> np.ndarray:
        keys = None
        row_seeds = [s for s in self._seeds if s is not None]  # seed() sets every row or none
        if row_seeds:
            keys = seeds_to_keys(row_seeds, self.num_envs, self.core.device)
        elif not self._seeded:
            keys = seeds_to_keys(None, self.num_envs, self.core.device)
        self._seeded = True
        self.core.reset_rows(torch.ones(self.num_envs, dtype=torch.bool, device=self.core.device), keys=keys)
        self._reset_seeds()
        self._reset_options()
        return self.core.observe().cpu().numpy()

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed row ``i`` with ``seed + i`` at the next ``reset()``; ``None`` draws a random seed."""
        if seed is not None:
            seed = checks.seed(seed, self.num_envs)
        return list(super().seed(seed))

    def step_async(self, actions: np.ndarray) -> None:
        # Checked here, so that a bad action raises at the call that passed it.
        self._actions = checks.actions(actions, self.num_envs, self.core.single_action_space, self.core.device)

    def step_wait(self):
        assert self._actions is not None, "step_async must be called before step_wait"
        result = self.core.step(self._actions)
        obs, final_obs, done = finish_step(self.core, result)
        done_np = done.cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done_np.any():
            final_np = final_obs.cpu().numpy()
            time_limit = (result.truncated & ~result.terminated).cpu().numpy()
            last = {name: value.cpu().numpy() for name, value in result.info.items()}
            for i in np.flatnonzero(done_np):  # only the rows that ended
                infos[i] = {name: value[i].item() if value[i].size == 1 else value[i] for name, value in last.items()}
                infos[i]["terminal_observation"] = final_np[i]
                infos[i]["TimeLimit.truncated"] = bool(time_limit[i])
        return obs.cpu().numpy(), result.reward.cpu().numpy(), done_np, infos

    def close(self) -> None:
        pass

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [None for _ in self._indices(indices)]
        value = getattr(self.core, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.core, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        result = getattr(self.core, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]
