"""The batched core of MetaOpt-HPO-v0: B black-box searches, one evaluation per step each.

Every row holds one objective from a family (plain task data), the last
configuration and its value, and the best value so far. A step evaluates B
configurations with one batched call of the family's ``evaluate``. See
:class:`metaopt_envs.hpo.env.MetaOptHPOEnv` for the documentation of spaces,
reward and episode.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import BatchedCore, StepResult, allocator, checks, resolve_device, seeds_to_keys
from metaopt_envs.core.family import SPLIT_IDS, check_split, put
from metaopt_envs.core.registry import env_task_family
from metaopt_envs.hpo.families import ObjectiveFamily

REWARD_MODES = ("log_regret", "regret")
VALUE_CLIP = (-1.0, 10.0)


def feature_names(max_dim: int) -> tuple[str, ...]:
    """Names of the observation features (2D + 5 of them)."""
    return (
        *(f"x[{i}]" for i in range(max_dim)),
        *(f"mask[{i}]" for i in range(max_dim)),
        "value",
        "log10_value",
        "best",
        "log10_best",
        "budget_used",
    )


class HPOCore(BatchedCore):
    """Sequential search on ``num_envs`` objectives; see ``MetaOptHPOEnv`` for the documentation."""

    def __init__(
        self,
        num_envs: int = 1,
        task_family: str | ObjectiveFamily = "mixture",
        task_family_kwargs: dict[str, Any] | None = None,
        split: str = "train",
        budget: int = 32,
        reward_mode: str = "log_regret",
        regret_floor: float = 1e-6,
        max_dim: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        num_envs = checks.integer("num_envs", num_envs)
        budget = checks.integer("budget", budget, note="evaluations per episode")
        checks.choice("reward_mode", reward_mode, REWARD_MODES)
        regret_floor = checks.finite_float(
            "regret_floor", regret_floor, low=0.0, high=1.0, low_open=True, high_open=True
        )
        self.num_envs = int(num_envs)
        self.device = resolve_device(device)
        allocator.apply_default()  # freed step tensors stay in the heap: no page faults per step
        self.family = env_task_family("hpo", ObjectiveFamily, task_family, task_family_kwargs, self.device)
        self.split = check_split(split)
        self.budget = self.num_decisions = int(budget)
        self.reward_mode, self.regret_floor = reward_mode, float(regret_floor)
        self.log_floor = math.log10(self.regret_floor)
        d = int(self.family.max_dim)
        if max_dim is not None:
            d = checks.integer("max_dim", max_dim, minimum=d, note="the family's largest dimension or more")
        self.max_dim = d
        self.observation_names = feature_names(d)
        low = np.concatenate(
            [-np.ones(d), np.zeros(d), [VALUE_CLIP[0], self.log_floor, VALUE_CLIP[0], self.log_floor, 0.0]]
        )
        high = np.concatenate([np.ones(d), np.ones(d), [VALUE_CLIP[1], 1.0, VALUE_CLIP[1], 1.0, 1.0]])
        self.single_observation_space = gym.spaces.Box(
            low.astype(np.float32), high.astype(np.float32), dtype=np.float32
        )
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (d,), dtype=np.float32)

        b, dev = self.num_envs, self.device
        self.row_key = seeds_to_keys(0, b, dev)
        self.episode_index = torch.zeros(b, dtype=torch.int64, device=dev)
        self.inner_episode = torch.zeros(b, dtype=torch.int64, device=dev)
        self.task_key = torch.zeros(b, dtype=torch.int64, device=dev)
        self.tasks = self.family.sample(self.row_key, self.split)
        self.mask = torch.zeros(b, d, device=dev)
        self.x = torch.zeros(b, d, device=dev)
        self.value = torch.ones(b, device=dev)
        self.best = torch.ones(b, device=dev)
        self.t = torch.zeros(b, dtype=torch.int64, device=dev)
        self.reset_rows(torch.ones(b, dtype=torch.bool, device=dev), keys=self.row_key)

    def reset_rows(self, rows: torch.Tensor, keys: torch.Tensor | None = None, same_task: bool = False) -> None:
        index = rows.nonzero().squeeze(-1)
        if index.numel() == 0:
            return
        if self.advance_keys(index, keys, same_task, SPLIT_IDS[self.split]):
            put(self.tasks, index, self.family.sample(self.task_key[index], self.split))
        dims = self.tasks["dim"][index]
        self.mask[index] = (torch.arange(self.max_dim, device=self.device) < dims.unsqueeze(-1)).to(torch.float32)
        self.x[index] = 0.0
        self.value[index] = 1.0
        self.best[index] = 1.0
        self.t[index] = 0

    def _log(self, value: torch.Tensor) -> torch.Tensor:
        return torch.log10(value.clamp_min(self.regret_floor))

    def observe(self) -> torch.Tensor:
        value = self.value.clamp(*VALUE_CLIP)
        best = self.best.clamp(*VALUE_CLIP)
        columns = [
            self.x,
            self.mask,
            value.unsqueeze(-1),
            self._log(value).clamp(max=1.0).unsqueeze(-1),
            best.unsqueeze(-1),
            self._log(best).clamp(max=1.0).unsqueeze(-1),
            (self.t.to(torch.float32) / self.budget).unsqueeze(-1),
        ]
        return torch.cat(columns, dim=-1)

    def _check_actions(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(B, D)`` actions, checked and clipped to [-1, 1]."""
        return checks.actions(actions, self.num_envs, self.single_action_space, self.device)

    def normalize(self, f: torch.Tensor) -> torch.Tensor:
        """Normalized regret ``(f - f_opt) / (f_ref - f_opt)`` of raw values ``f: (B,)``."""
        f_opt, f_ref = self.tasks["f_opt"], self.tasks["f_ref"]
        return (f - f_opt) / (f_ref - f_opt).clamp_min(1e-12)

    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """Evaluate each row's configuration ``actions: (B, D)`` (padded coordinates are ignored)."""
        x = self._check_actions(actions) * self.mask
        f = self.family.evaluate(self.tasks, x[:, : self.family.max_dim]).to(torch.float32)
        value = torch.nan_to_num(self.normalize(f), nan=VALUE_CLIP[1], posinf=VALUE_CLIP[1], neginf=VALUE_CLIP[0])
        previous = self.best
        best = torch.minimum(previous, value)
        if self.reward_mode == "log_regret":
            reward = self._log(previous) - self._log(best)
        else:
            reward = previous.clamp(max=VALUE_CLIP[1]) - best.clamp(max=VALUE_CLIP[1])
        self.x, self.value, self.best = x, value, best
        self.t = self.t + 1
        truncated = self.t >= self.budget
        info = {
            "value": f,
            "regret": value.clone(),
            "best_regret": best.clone(),
            "evaluation": self.t.clone(),
            "exact_optimum": self.tasks["exact_optimum"].clone(),
            "family": self.family.family_index(self.tasks).clone(),
        }
        return StepResult(self.observe(), reward.to(torch.float32), torch.zeros_like(truncated), truncated, info)


__all__ = ["HPOCore", "REWARD_MODES", "feature_names"]
