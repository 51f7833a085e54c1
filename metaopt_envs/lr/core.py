"""The batched core of MetaOpt-LR-v0: learning-rate control of B inner problems at once.

All state is tensors with leading dimension B; one ``step`` advances every
problem with one set of tensor operations (a loop over the ``action_every``
inner steps of a decision, never over problems).

The dynamics (one update, the measurement of the loss and the two minibatch
gradients, the observation features) are written once in
:mod:`metaopt_envs.lr.dynamics`; the core keeps their state (:class:`LRState`,
its fields readable as ``core.params``, ``core.loss``, ...), maps actions to
learning rates, computes rewards and resets rows.

Randomness is keyed per row (:mod:`metaopt_envs.core.rng`):

- ``row_key``: from ``reset(seed=...)``;
- task of episode e: ``fold(row_key, split, e)``;
- initialization of inner episode i of that task: ``fold(task_key, 1, i)``;
- minibatches at inner step t: ``fold(run_key, t, 0 | 1)`` with
  ``run_key = fold(task_key, 2, i)``.

So a row of a batch and a single env with the same seed are the same run.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import BatchedCore, StepResult, resolve_device, seeds_to_keys
from metaopt_envs.core.family import SPLIT_IDS
from metaopt_envs.lr import dynamics
from metaopt_envs.lr.dynamics import LR_FEATURES, VALIDATION_FEATURE, LRState  # noqa: F401  (re-exported)
from metaopt_envs.lr.families import TaskFamily, make_task_family
from metaopt_envs.lr.families.base import check_split, put, take
from metaopt_envs.lr.optimizers import InnerOptimizer, OptimizerState

ACTION_MODES = ("absolute", "relative")
_LARGE = float(torch.finfo(torch.float32).max)


class LRCore(BatchedCore):
    """Learning-rate control of ``num_envs`` inner problems; see ``MetaOptLREnv`` for the documentation."""

    def __init__(
        self,
        num_envs: int = 1,
        task_family: str | TaskFamily = "mixture",
        task_family_kwargs: dict[str, Any] | None = None,
        split: str = "train",
        inner_optimizer: str = "sgd",
        optimizer_kwargs: dict[str, float] | None = None,
        horizon: int = 100,
        action_every: int = 1,
        action_mode: str = "absolute",
        lr_range: tuple[float, float] = (1e-4, 10.0),
        initial_lr: float | None = None,
        max_lr_change: float = 2.0,
        observe_validation: bool = False,
        divergence_threshold: float = 1e4,
        divergence_penalty: float = 10.0,
        loss_floor: float = 1e-6,
        chunk_size: int = 1024,
        initial_params: torch.Tensor | np.ndarray | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive int (inner steps per episode), got {horizon!r}")
        if not isinstance(action_every, (int, np.integer)) or action_every < 1:
            raise ValueError(f"action_every must be a positive int, got {action_every!r}")
        if horizon % action_every:
            raise ValueError(f"horizon ({horizon}) must be a multiple of action_every ({action_every})")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        lr_low, lr_high = (float(v) for v in lr_range)
        if not (0.0 < lr_low < lr_high and math.isfinite(lr_high)):
            raise ValueError(f"lr_range must be (low, high) with 0 < low < high < inf, got {tuple(lr_range)}")
        if initial_lr is not None and not lr_low <= initial_lr <= lr_high:
            raise ValueError(f"initial_lr must lie in lr_range {tuple(lr_range)}, got {initial_lr}")
        if not max_lr_change > 1.0:
            raise ValueError(f"max_lr_change must be > 1 (the largest factor per decision), got {max_lr_change}")
        if not divergence_threshold > 1.0:
            raise ValueError(f"divergence_threshold must be > 1 (a multiple of the initial loss), got {divergence_threshold}")
        if not divergence_penalty >= 0.0:
            raise ValueError(f"divergence_penalty must be >= 0, got {divergence_penalty}")
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if not 0.0 < loss_floor < 1.0:
            raise ValueError(f"loss_floor must be in (0, 1), got {loss_floor}")

        self.num_envs = int(num_envs)
        self.device = resolve_device(device)
        self.family = make_task_family(task_family, **(task_family_kwargs or {})).to(self.device)
        self.split = check_split(split)
        self.optimizer = InnerOptimizer(inner_optimizer, **(optimizer_kwargs or {}))
        self.horizon, self.action_every = int(horizon), int(action_every)
        self.num_decisions = self.horizon // self.action_every
        self.action_mode = action_mode
        self.log_lr_low, self.log_lr_high = math.log(lr_low), math.log(lr_high)
        self.initial_log_lr = (
            math.log(initial_lr) if initial_lr is not None else 0.5 * (self.log_lr_low + self.log_lr_high)
        )
        self.log_max_change = math.log(max_lr_change)
        if observe_validation and not self.family.has_validation:
            raise ValueError(f"observe_validation=True needs a family with validation data; {self.family.name!r} has none")
        self.observe_validation = observe_validation
        self.divergence_threshold, self.divergence_penalty = divergence_threshold, divergence_penalty
        self.loss_floor = loss_floor
        self.chunk_size = int(chunk_size)
        self.initial_params = None
        if initial_params is not None:
            initial = torch.as_tensor(initial_params, dtype=torch.float32, device=self.device).reshape(-1)
            if initial.numel() != self.family.param_dim or not torch.isfinite(initial).all():
                raise ValueError(
                    f"initial_params must be {self.family.param_dim} finite numbers (the {self.family.name!r} family's "
                    f"parameter vector), got {tuple(torch.as_tensor(initial_params).shape)}"
                )
            self.initial_params = initial  # e.g. a MAML or Reptile initialization: every inner problem starts here

        features = dynamics.feature_spec(observe_validation)
        self.observation_names = tuple(name for name, _, _ in features)
        self.single_observation_space = gym.spaces.Box(
            np.array([low for _, low, _ in features], dtype=np.float32),
            np.array([high for _, _, high in features], dtype=np.float32),
            dtype=np.float32,
        )
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

        # Allocate every state tensor once by resetting all rows with placeholder seeds.
        b, dev = self.num_envs, self.device
        self.row_key = seeds_to_keys(0, b, dev)
        self.episode_index = torch.zeros(b, dtype=torch.int64, device=dev)
        self.inner_episode = torch.zeros(b, dtype=torch.int64, device=dev)
        self.task_key = torch.zeros(b, dtype=torch.int64, device=dev)
        self.run_key = torch.zeros(b, dtype=torch.int64, device=dev)
        self.tasks = self.family.sample(self.row_key, self.split)
        self.state: dynamics.LRState | None = None
        self.reset_rows(torch.ones(b, dtype=torch.bool, device=dev), keys=self.row_key)

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor, keys: torch.Tensor | None = None, same_task: bool = False) -> None:
        index = rows.nonzero().squeeze(-1)
        if index.numel() == 0:
            return
        if self.advance_keys(index, keys, same_task, SPLIT_IDS[self.split]):
            put(self.tasks, index, self.family.sample(self.task_key[index], self.split))
        task_key, inner_episode = self.task_key[index], self.inner_episode[index]
        self.run_key[index] = dynamics.run_key(task_key, inner_episode)
        every = index.numel() == self.num_envs
        tasks = self.tasks if every else take(self.tasks, index)
        if self.initial_params is not None:
            params = self.initial_params.expand(index.numel(), -1).clone()
        else:
            params = self.family.init_params(tasks, dynamics.init_key(task_key, inner_episode))
        log_lr = torch.full((index.numel(),), self.initial_log_lr, device=self.device)
        fresh = dynamics.start(
            self.family, self.optimizer, params, tasks, self.run_key[index], log_lr, self.observe_validation,
            self.chunk_size,
        )
        self.state = fresh if every or self.state is None else _put_rows(self.state, index, fresh)

    def observe(self) -> torch.Tensor:
        return dynamics.features(
            self.state, self.horizon, (self.log_lr_low, self.log_lr_high), self.loss_floor, self.observe_validation
        )

    def _check_actions(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if actions.shape == (self.num_envs,):
            actions = actions.unsqueeze(-1)
        if actions.shape != (self.num_envs, 1):
            raise ValueError(f"actions must have shape ({self.num_envs}, 1) or ({self.num_envs},), got {tuple(actions.shape)}")
        if not torch.isfinite(actions).all():
            raise ValueError("actions must be finite numbers in [-1, 1]; got NaN or inf")
        return actions.clamp(-1.0, 1.0)

    @torch.no_grad()
    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """Set each row's learning rate from ``actions: (B, 1)``, then take ``action_every`` inner steps."""
        action = self._check_actions(actions)[:, 0]
        if self.action_mode == "absolute":
            log_lr = self.log_lr_low + 0.5 * (action + 1.0) * (self.log_lr_high - self.log_lr_low)
        else:
            log_lr = (self.state.log_lr + action * self.log_max_change).clamp(self.log_lr_low, self.log_lr_high)
        start_loss = self.state.loss
        self.state = state = dynamics.step(
            self.state, log_lr, self.family, self.optimizer, self.tasks, self.run_key, self.action_every,
            self.observe_validation, self.divergence_threshold, self.chunk_size,
        )
        diverged = state.diverged
        floor = self.loss_floor * state.initial_loss
        reward = torch.log((start_loss + floor) / (state.loss + floor))
        reward = torch.where(diverged, torch.full_like(reward, -self.divergence_penalty), reward)
        reward = torch.nan_to_num(reward, nan=-self.divergence_penalty)
        truncated = (state.inner_step >= self.horizon) & ~diverged
        # Copies, not the state tensors: the adapters reset ended rows right after.
        info = {
            "loss": torch.nan_to_num(state.loss, nan=_LARGE, posinf=_LARGE),
            "initial_loss": state.initial_loss.clone(),
            "lr": torch.exp(log_lr),
            "diverged": diverged.clone(),
            "inner_step": state.inner_step.clone(),
            "grad_dot_previous_update": torch.nan_to_num(state.grad_dot_previous_update, posinf=_LARGE, neginf=-_LARGE),
            "family": self.family.family_index(self.tasks).clone(),
        }
        return StepResult(self.observe(), reward.to(torch.float32), diverged.clone(), truncated, info)

    def optimal_constant_lr(self) -> torch.Tensor:
        """The analytic optimal constant SGD step ``(B,)`` for the current quadratic tasks (the oracle)."""
        from metaopt_envs.lr.families import NoisyQuadraticFamily

        if not isinstance(self.family, NoisyQuadraticFamily) or self.optimizer.name != "sgd":
            raise ValueError("optimal_constant_lr needs task_family='quadratic' and inner_optimizer='sgd'")
        return self.family.optimal_constant_lr(self.tasks, self.horizon)


def _put_rows(state: dynamics.LRState, index: torch.Tensor, fresh: dynamics.LRState) -> dynamics.LRState:
    """``state`` with rows ``index`` replaced by ``fresh`` (new tensors: fields of a state may share storage)."""
    fields = []
    for old, new in zip(state, fresh):
        if isinstance(old, OptimizerState):
            fields.append(OptimizerState(*(o.index_put((index,), n) for o, n in zip(old, new))))
        else:
            fields.append(old.index_put((index,), new))
    return dynamics.LRState(*fields)


def _state_field(name: str) -> property:
    return property(lambda self: getattr(self.state, name), doc=f"``state.{name}`` (read-only; see LRState).")


# The state's fields read as attributes of the core: ``core.params``, ``core.loss``, ...
for _name in dynamics.LRState._fields:
    setattr(LRCore, _name, _state_field(_name))
