"""The batched core of MetaOpt-LR-v0: learning-rate control of B inner problems at once.

All state is tensors with leading dimension B; one ``step`` advances every
problem with one set of tensor operations (a loop over the ``action_every``
inner steps of a decision, never over problems).

Per inner step the core evaluates, at the current parameters, two independent
minibatch gradients ``g_a`` and ``g_b`` and the full training loss. The update
uses their mean ``g = (g_a + g_b) / 2`` (an effective minibatch of two
``batch_size`` draws); their difference measures the gradient noise. The
gradient at the new parameters is reused by the next update, so each inner
step costs one gradient evaluation of two minibatches and one full loss.

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

from metaopt_envs.core import rng
from metaopt_envs.core import BatchedCore, StepResult, checks, resolve_device, seeds_to_keys
from metaopt_envs.lr.optimizers import InnerOptimizer
from metaopt_envs.core.family import SPLIT_IDS, check_split, put, take
from metaopt_envs.core.registry import env_task_family
from metaopt_envs.lr.families import LRTaskFamily

ACTION_MODES = ("absolute", "relative")

# (name, low, high): each observation feature and the bounds it is clipped to.
LR_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("log_loss_ratio", -15.0, 10.0),
    ("loss_change", -10.0, 10.0),
    ("log_grad_norm_ratio", -15.0, 15.0),
    ("grad_cosine", -1.0, 1.0),
    ("grad_noise", -15.0, 5.0),
    ("log_lr", -1.0, 1.0),
    ("progress", 0.0, 1.0),
    ("update_cosine", -1.0, 1.0),
)
VALIDATION_FEATURE = ("log_val_loss_ratio", -15.0, 10.0)
_SPLIT_ID = SPLIT_IDS
_TINY = 1e-30
_LARGE = float(torch.finfo(torch.float32).max)


class LRCore(BatchedCore):
    """Learning-rate control of ``num_envs`` inner problems; see ``MetaOptLREnv`` for the documentation."""

    def __init__(
        self,
        num_envs: int = 1,
        task_family: str | LRTaskFamily = "mixture",
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
        num_envs = checks.integer("num_envs", num_envs)
        horizon = checks.integer("horizon", horizon, note="inner steps per episode")
        action_every = checks.integer("action_every", action_every, note="inner steps per decision")
        if horizon % action_every:
            raise ValueError(f"horizon ({horizon}) must be a multiple of action_every ({action_every})")
        checks.choice("action_mode", action_mode, ACTION_MODES)
        lr_low, lr_high = checks.float_pair("lr_range", lr_range, low=0.0, low_open=True, note="learning rates")
        if initial_lr is not None:
            initial_lr = checks.finite_float("initial_lr", initial_lr, low=lr_low, high=lr_high, note="inside lr_range")
        max_lr_change = checks.finite_float(
            "max_lr_change", max_lr_change, low=1.0, low_open=True, note="the largest factor per decision"
        )
        divergence_threshold = checks.finite_float(
            "divergence_threshold", divergence_threshold, low=1.0, low_open=True, note="a multiple of the initial loss"
        )
        divergence_penalty = checks.finite_float("divergence_penalty", divergence_penalty, low=0.0)
        chunk_size = checks.integer("chunk_size", chunk_size)
        loss_floor = checks.finite_float("loss_floor", loss_floor, low=0.0, high=1.0, low_open=True, high_open=True)
        observe_validation = checks.boolean("observe_validation", observe_validation)

        self.num_envs = int(num_envs)
        self.device = resolve_device(device)
        self.family = env_task_family("lr", task_family, task_family_kwargs, self.device)
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

        features = LR_FEATURES + ((VALIDATION_FEATURE,) if observe_validation else ())
        self.observation_names = tuple(name for name, _, _ in features)
        self._obs_low = torch.tensor([low for _, low, _ in features], device=self.device)
        self._obs_high = torch.tensor([high for _, _, high in features], device=self.device)
        self.single_observation_space = gym.spaces.Box(
            self._obs_low.cpu().numpy(), self._obs_high.cpu().numpy(), dtype=np.float32
        )
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

        # Allocate every state tensor once by resetting all rows with placeholder seeds.
        b, p, dev = self.num_envs, self.family.param_dim, self.device
        self.row_key = seeds_to_keys(0, b, dev)
        self.episode_index = torch.zeros(b, dtype=torch.int64, device=dev)
        self.inner_episode = torch.zeros(b, dtype=torch.int64, device=dev)
        self.task_key = torch.zeros(b, dtype=torch.int64, device=dev)
        self.run_key = torch.zeros(b, dtype=torch.int64, device=dev)
        self.tasks = self.family.sample(self.row_key, self.split)
        self.params = torch.zeros(b, p, device=dev)
        self.opt_state = self.optimizer.init(self.params)
        self.inner_step = torch.zeros(b, dtype=torch.int64, device=dev)
        self.log_lr = torch.full((b,), self.initial_log_lr, device=dev)
        zeros = torch.zeros(b, device=dev)
        self.initial_loss, self.loss, self.previous_loss = zeros.clone(), zeros.clone(), zeros.clone()
        self.initial_val_loss, self.val_loss = zeros.clone(), zeros.clone()
        self.grad = torch.zeros(b, p, device=dev)
        self.initial_grad_norm, self.noise_ratio = zeros.clone(), zeros.clone()
        self.grad_norm, self.previous_grad_norm = zeros.clone(), zeros.clone()
        self.grad_dot_previous_grad, self.previous_update_norm = zeros.clone(), zeros.clone()
        self.grad_dot_previous_update = zeros.clone()
        self.diverged = torch.zeros(b, dtype=torch.bool, device=dev)
        self.reset_rows(torch.ones(b, dtype=torch.bool, device=dev), keys=self.row_key)

    # ------------------------------------------------------------------ measurement
    def _measure(self, rows: torch.Tensor | slice) -> tuple[torch.Tensor, ...]:
        """Loss, mean gradient, noise ratio and validation loss of ``rows`` at the current params.

        Evaluated in blocks of ``chunk_size`` rows so that large batches stay in cache
        (a loop over a few blocks, not over problems; rows are independent, so the
        blocking does not change any result).
        """
        count = self.num_envs if isinstance(rows, slice) else rows.numel()
        if count <= self.chunk_size:
            return self._measure_block(rows)
        if isinstance(rows, slice):  # contiguous blocks are views: no copy of the task data
            blocks = [slice(start, start + self.chunk_size) for start in range(0, self.num_envs, self.chunk_size)]
        else:
            blocks = list(rows.split(self.chunk_size))
        parts = [self._measure_block(block) for block in blocks]
        return tuple(torch.cat(column) for column in zip(*parts))

    def _measure_block(self, rows: torch.Tensor | slice) -> tuple[torch.Tensor, ...]:
        params = self.params[rows]
        tasks = {name: value[rows] for name, value in self.tasks.items()} if isinstance(rows, slice) else take(self.tasks, rows)
        step_key = rng.fold(self.run_key[rows], self.inner_step[rows])
        loss, grads = self.family.loss_and_paired_grads(params, tasks, rng.fold(step_key, 0), rng.fold(step_key, 1))
        grad = grads.mean(1)
        grad_norm = torch.linalg.vector_norm(grad, dim=-1)
        # norm(g_a - g_b)^2 / norm(g_a + g_b)^2, with g_a + g_b = 2 g.
        noise = torch.linalg.vector_norm(grads[:, 0] - grads[:, 1], dim=-1).square() / (4.0 * grad_norm.square() + _TINY)
        val = self.family.loss(params, tasks, "val") if self.observe_validation else torch.zeros_like(loss)
        return loss, grad, grad_norm, noise, val

    # ------------------------------------------------------------------ contract
    def reset_rows(self, rows: torch.Tensor, keys: torch.Tensor | None = None, same_task: bool = False) -> None:
        index = rows.nonzero().squeeze(-1)
        if index.numel() == 0:
            return
        if self.advance_keys(index, keys, same_task, _SPLIT_ID[self.split]):
            put(self.tasks, index, self.family.sample(self.task_key[index], self.split))
        task_key = self.task_key[index]
        self.run_key[index] = rng.fold(task_key, 2, self.inner_episode[index])
        if self.initial_params is not None:
            self.params[index] = self.initial_params
        else:
            self.params[index] = self.family.init_params(take(self.tasks, index), rng.fold(task_key, 1, self.inner_episode[index]))
        self.opt_state = self.optimizer.reset_rows(self.opt_state, rows)
        self.inner_step[index] = 0
        self.log_lr[index] = self.initial_log_lr
        self.diverged[index] = False
        loss, grad, grad_norm, noise, val = self._measure(index if index.numel() < self.num_envs else slice(None))
        self.initial_loss[index] = loss
        self.loss[index] = loss
        self.previous_loss[index] = loss
        self.initial_val_loss[index] = val
        self.val_loss[index] = val
        self.grad[index] = grad
        self.grad_norm[index] = grad_norm
        self.previous_grad_norm[index] = 0.0
        self.initial_grad_norm[index] = grad_norm
        self.noise_ratio[index] = noise
        self.grad_dot_previous_update[index] = 0.0
        self.grad_dot_previous_grad[index] = 0.0
        self.previous_update_norm[index] = 0.0

    def _log_ratio(self, value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        floor = self.loss_floor * reference
        return torch.log((value + floor) / (reference + _TINY))

    def observe(self) -> torch.Tensor:
        floor = self.loss_floor * self.initial_loss
        grad_norm = self.grad_norm
        cosine = self.grad_dot_previous_grad / (grad_norm * self.previous_grad_norm + _TINY)
        columns = [
            self._log_ratio(self.loss, self.initial_loss),
            torch.log((self.loss + floor) / (self.previous_loss + floor)),
            torch.log((grad_norm + _TINY) / (self.initial_grad_norm + _TINY)),
            cosine,
            torch.log(self.noise_ratio + _TINY),
            2.0 * (self.log_lr - self.log_lr_low) / (self.log_lr_high - self.log_lr_low) - 1.0,
            self.inner_step.to(torch.float32) / self.horizon,
            self.grad_dot_previous_update / (grad_norm * self.previous_update_norm + _TINY),
        ]
        if self.observe_validation:
            columns.append(self._log_ratio(self.val_loss, self.initial_val_loss))
        obs = torch.stack(columns, dim=-1).to(torch.float32)
        # A diverged row's statistics may be inf or NaN: clip them into the space.
        obs = torch.nan_to_num(obs, nan=0.0, posinf=1e30, neginf=-1e30)
        return torch.maximum(torch.minimum(obs, self._obs_high), self._obs_low)

    def _check_actions(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(B, 1)`` or ``(B,)`` actions, checked and clipped to [-1, 1]: ``(B, 1)`` float32."""
        return checks.actions(actions, self.num_envs, self.single_action_space, self.device)

    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """Set each row's learning rate from ``actions: (B, 1)``, then take ``action_every`` inner steps."""
        action = self._check_actions(actions)[:, 0]
        if self.action_mode == "absolute":
            self.log_lr = self.log_lr_low + 0.5 * (action + 1.0) * (self.log_lr_high - self.log_lr_low)
        else:
            self.log_lr = (self.log_lr + action * self.log_max_change).clamp(self.log_lr_low, self.log_lr_high)
        lr = torch.exp(self.log_lr)
        start_loss = self.loss
        diverged = self.diverged.clone()
        for _ in range(self.action_every):
            new_params, self.opt_state = self.optimizer.step(self.params, self.grad, lr, self.opt_state)
            self.inner_step += 1
            previous_params, self.params = self.params, new_params
            loss, grad, grad_norm, noise, val = self._measure(slice(None))
            # Per-row statistics of the last update, so that no (B, P) tensor is kept for them.
            self.grad_dot_previous_grad = torch.linalg.vecdot(grad, self.grad)
            if self.optimizer.name == "sgd":  # SGD's update direction is its gradient
                self.grad_dot_previous_update, self.previous_update_norm = self.grad_dot_previous_grad, self.grad_norm
            else:
                update = (previous_params - new_params) / lr.unsqueeze(-1)
                self.grad_dot_previous_update = torch.linalg.vecdot(grad, update)
                self.previous_update_norm = torch.linalg.vector_norm(update, dim=-1)
            self.previous_grad_norm, self.grad_norm = self.grad_norm, grad_norm
            self.grad = grad
            self.previous_loss, self.loss = self.loss, loss
            self.noise_ratio, self.val_loss = noise, val
            diverged |= ~torch.isfinite(loss) | (loss > self.divergence_threshold * self.initial_loss)
            diverged |= ~torch.isfinite(grad_norm)  # inf or NaN anywhere, or overflow
        self.previous_loss = start_loss
        floor = self.loss_floor * self.initial_loss
        reward = torch.log((start_loss + floor) / (self.loss + floor))
        reward = torch.where(diverged, torch.full_like(reward, -self.divergence_penalty), reward)
        reward = torch.nan_to_num(reward, nan=-self.divergence_penalty)
        self.diverged = diverged
        truncated = (self.inner_step >= self.horizon) & ~diverged
        # Copies, not the state tensors: the adapters reset ended rows in place right after.
        info = {
            "loss": torch.nan_to_num(self.loss, nan=_LARGE, posinf=_LARGE),
            "initial_loss": self.initial_loss.clone(),
            "lr": lr,
            "diverged": diverged.clone(),
            "inner_step": self.inner_step.clone(),
            "grad_dot_previous_update": torch.nan_to_num(self.grad_dot_previous_update, posinf=_LARGE, neginf=-_LARGE),
            "family": self.family.family_index(self.tasks).clone(),
        }
        return StepResult(self.observe(), reward.to(torch.float32), diverged.clone(), truncated, info)

    def optimal_constant_lr(self) -> torch.Tensor:
        """The analytic optimal constant SGD step ``(B,)`` for the current quadratic tasks (the oracle)."""
        from metaopt_envs.lr.families import NoisyQuadraticFamily

        if not isinstance(self.family, NoisyQuadraticFamily) or self.optimizer.name != "sgd":
            raise ValueError("optimal_constant_lr needs task_family='quadratic' and inner_optimizer='sgd'")
        return self.family.optimal_constant_lr(self.tasks, self.horizon)
