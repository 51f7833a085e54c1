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

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import BatchedCore, StepResult, allocator, checks, resolve_device, rng, seeds_to_keys
from metaopt_envs.core.family import SPLIT_IDS, TaskData, check_split, put, take
from metaopt_envs.core.registry import env_task_family
from metaopt_envs.lr import dynamics
from metaopt_envs.lr.dynamics import LR_FEATURES, VALIDATION_FEATURE, LRState  # noqa: F401  (re-exported)
from metaopt_envs.lr.families import LRTaskFamily
from metaopt_envs.lr.optimizers import InnerOptimizer, OptimizerState

ACTION_MODES = ("absolute", "relative", "hypergradient")
_LARGE = float(torch.finfo(torch.float32).max)


class LRCore(BatchedCore):
    """Learning-rate control of ``num_envs`` inner problems; see ``MetaOptLREnv`` for the documentation."""

    state: LRState
    """Every row's dynamics state; set by the first ``reset_rows`` (of all rows) in ``__init__``."""

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
        hypergradient_beta: float = 0.1,
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
        hypergradient_beta = checks.finite_float(
            "hypergradient_beta",
            hypergradient_beta,
            low=0.0,
            note="the hypergradient step of action_mode='hypergradient'",
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
        allocator.apply_default()  # freed step tensors stay in the heap: no page faults per step
        self.family = env_task_family("lr", LRTaskFamily, task_family, task_family_kwargs, self.device)
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
        self.hypergradient_beta = float(hypergradient_beta)
        if observe_validation and not self.family.has_validation:
            raise ValueError(
                f"observe_validation=True needs a family with validation data; {self.family.name!r} has none"
            )
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
        self._lookahead: dict[bool, _Lookahead] = {}  # keyed by new_task; see reset_lookahead
        self.reset_rows(torch.ones(b, dtype=torch.bool, device=dev), keys=self.row_key)

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor, keys: torch.Tensor | None = None, same_task: bool = False) -> None:
        index = rows.nonzero().squeeze(-1)
        if index.numel() == 0:
            return
        every = index.numel() == self.num_envs
        if self.reset_lookahead and keys is None and not every and self._reset_from_lookahead(rows, index, same_task):
            return
        new_task = self.advance_keys(index, keys, same_task, SPLIT_IDS[self.split])
        self._used_lookahead(index, new_task)  # these rows' next starts move on
        task_key = self.task_key[index]
        if new_task:
            put(self.tasks, index, self.family.sample(task_key, self.split))
        # A new task starts at inner episode 0: folded as an int, one hash fewer (the same keys).
        inner_episode = 0 if new_task else self.inner_episode[index]
        tasks = self.tasks if every else take(self.tasks, index)
        fresh, run_key = self._start(tasks, task_key, inner_episode)
        self.run_key[index] = run_key
        if every:
            self.state = fresh
        else:
            self.state = _put_rows(self.state, index, fresh, self._shared_with_state())

    reset_lookahead: bool = True
    """Resets of some rows without new seeds start from states made ahead, for many rows at once.

    A reset's cost is mostly a fixed cost per call (a few hundred small tensor operations at small B),
    so resetting 1-3 rows costs about what resetting all of them does. Rows reset out of step with
    each other whenever inner runs diverge (and, in RL² trials, their trials then end out of step):
    on the default ``metaopt-train`` configuration a quarter of the env's time went to such resets.
    With the lookahead, the first such reset computes the next start state of *every* row whose
    next start is not computed yet, in one batched call (for a new task: its sample, initialization and
    first measurement; for the next inner episode of the same task: its initialization and measurement),
    and later resets copy their rows' states in. A row's start state is a pure function of its keys and
    its task, so it is the same bits whenever it is computed (tested against ``reset_lookahead = False``);
    an entry is used only if it was made for exactly the row's next start (its row key and next episode;
    its task key and next inner episode), so reseeding, a restored checkpoint or any other change of a
    row's counters simply recomputes it.
    A row reset again before any other row was (the same rows every call) is reset on demand: there is
    nothing to batch. Costs two more copies of the rows' state and one of their tasks in memory; set
    ``core.reset_lookahead = False`` to reset every row on demand. Resets of every row, and resets with
    new seeds, always compute on demand.
    """

    def _start(
        self, tasks: TaskData, task_key: torch.Tensor, inner_episode: torch.Tensor | int
    ) -> tuple[LRState, torch.Tensor]:
        """The start state of inner episode ``inner_episode`` of tasks ``task_key`` (rows of ``tasks``); its run key."""
        init_key, run_key = dynamics.init_and_run_keys(task_key, inner_episode)
        n = task_key.shape[0]
        if self.initial_params is not None:
            params = self.initial_params.expand(n, -1).clone()
        else:
            params = self.family.init_params(tasks, init_key)
        log_lr = torch.full((n,), self.initial_log_lr, device=self.device)
        fresh = dynamics.start(
            self.family, self.optimizer, params, tasks, run_key, log_lr, self.observe_validation, self.chunk_size
        )
        return fresh, run_key

    def _shared_with_state(self) -> tuple[torch.Tensor, ...]:
        """Tensors a state's fields may share storage with (see :func:`_put_rows`)."""
        return (*self.tasks.values(), *(() if self.initial_params is None else (self.initial_params,)))

    def _reset_from_lookahead(self, rows: torch.Tensor, index: torch.Tensor, same_task: bool) -> bool:
        """Start the rows ``index`` (``rows`` as a mask) from their states made ahead, moving their counters
        on with :meth:`advance_keys`; False, changing nothing, where only these rows' states are missing
        (then nothing is gained: the caller resets them on demand)."""
        new_task = not same_task
        ahead = self._lookahead.get(new_task)
        # The rows' next episode (a new task) or their task's next inner episode (the same task).
        step = (self.episode_index if new_task else self.inner_episode)[index] + 1
        if ahead is None or not bool(ahead.matches(index, self.row_key if new_task else self.task_key, step).all()):
            refilled = self._refill_lookahead(rows, index, new_task, ahead)
            if refilled is None:
                return False
            ahead = refilled
        # The counters move on; a new task's key is read from the entry made for it instead of hashed again.
        self.advance_keys(
            index, None, same_task, SPLIT_IDS[self.split], task_key=ahead.task_key[index] if new_task else None
        )
        rows = rows.to(torch.bool)
        if new_task:
            assert ahead.tasks is not None
            _merge_task_rows(self.tasks, rows, index, ahead.tasks)
        torch.where(rows, ahead.run_key, self.run_key, out=self.run_key)
        self.state = _merge_rows(self.state, rows, index, ahead.state, self._shared_with_state())
        self._used_lookahead(index, new_task)
        return True

    def _used_lookahead(self, index: torch.Tensor, new_task: bool) -> None:
        """Mark the entries of rows ``index`` as used: a hint of which rows a refill would make (a row's
        next start of the same task moves on with any reset, its next new task only with a new task)."""
        for kind, ahead in self._lookahead.items():
            if new_task or not kind:
                ahead.used[index] = True

    def _refill_lookahead(
        self, rows: torch.Tensor, index: torch.Tensor, new_task: bool, ahead: _Lookahead | None
    ) -> _Lookahead | None:
        """Make the next start state of every row whose entry does not match its next start (one batched
        call); None, making nothing, where no row but those being reset now would need one."""
        elsewhere = ~rows.to(torch.bool)
        if ahead is not None and not bool((ahead.used & elsewhere).any()):
            return None  # only these rows were reset since the last refill: nothing to batch (cheap to tell)
        # Each row's next start of this kind (its counters are not moved on yet): its next episode, a new
        # task, keyed by (row key, episode); its current task's next inner episode, by (task key, inner episode).
        if new_task:
            owner, step = self.row_key.clone(), self.episode_index + 1
            task_key = rng.fold(owner, SPLIT_IDS[self.split], step)
            inner = torch.zeros_like(self.inner_episode)
        else:
            owner, step = self.task_key.clone(), self.inner_episode + 1
            task_key, inner = owner, step
        if ahead is None:
            need = torch.arange(self.num_envs, device=self.device)
        else:
            missing = ~ahead.matches(None, owner, step)
            if not bool((missing & elsewhere).any()):
                return None
            need = missing.nonzero().squeeze(-1)
        every = need.numel() == self.num_envs
        if new_task:
            tasks = self.family.sample(task_key[need], self.split)
            fresh, run_key = self._start(tasks, task_key[need], 0)
        else:  # a copy of the rows' tasks: a start state may hold a task tensor itself, which a reset writes into
            fresh, run_key = self._start(take(self.tasks, need), task_key[need], inner[need])
        if ahead is None or every:
            used = torch.zeros_like(self.inner_episode, dtype=torch.bool)
            ahead = _Lookahead(owner, step, task_key, run_key, fresh, tasks if new_task else None, used)
            self._lookahead[new_task] = ahead
            return ahead
        ahead.owner[need], ahead.step[need], ahead.task_key[need] = owner[need], step[need], task_key[need]
        ahead.run_key[need] = run_key
        ahead.used[need] = False
        others: tuple[torch.Tensor, ...] = ()
        if ahead.tasks is not None:
            put(ahead.tasks, need, tasks)
            others = tuple(ahead.tasks.values())
        if self.initial_params is not None:
            others = (*others, self.initial_params)
        ahead.state = _put_rows(ahead.state, need, fresh, others)
        return ahead

    def observe(self) -> torch.Tensor:
        return dynamics.features(
            self.state, self.horizon, (self.log_lr_low, self.log_lr_high), self.loss_floor, self.observe_validation
        )

    def _check_actions(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(B, 1)`` or ``(B,)`` actions, checked and clipped to [-1, 1]: ``(B, 1)`` float32."""
        return checks.actions(actions, self.num_envs, self.single_action_space, self.device)

    @torch.no_grad()
    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """Set each row's learning rate from ``actions: (B, 1)``, then take ``action_every`` inner steps."""
        action = self._check_actions(actions)[:, 0]
        if self.action_mode == "absolute":
            log_lr = self.log_lr_low + 0.5 * (action + 1.0) * (self.log_lr_high - self.log_lr_low)
        else:
            log_lr = self.state.log_lr + action * self.log_max_change
            if self.action_mode == "hypergradient":  # a correction of the multiplicative hypergradient rule
                log_lr = log_lr + self.hypergradient_beta * dynamics.update_cosine(self.state)
            log_lr = log_lr.clamp(self.log_lr_low, self.log_lr_high)
        start_loss = self.state.loss
        self.state = state = dynamics.step(
            self.state,
            log_lr,
            self.family,
            self.optimizer,
            self.tasks,
            self.run_key,
            self.action_every,
            self.observe_validation,
            self.divergence_threshold,
            self.chunk_size,
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


@dataclasses.dataclass
class _Lookahead:
    """Start states made ahead for every row (:attr:`LRCore.reset_lookahead`). For a new task, row ``i`` holds
    the start of episode ``step[i]`` of the row keyed ``owner[i]`` (its task ``task_key[i]``); for the same
    task, the start of inner episode ``step[i]`` of task ``owner[i]``. A start is a pure function of these,
    so an entry stays right after it is used: a row whose counters are rewound to it, as a restored
    checkpoint does, uses it again."""

    owner: torch.Tensor
    step: torch.Tensor
    task_key: torch.Tensor
    run_key: torch.Tensor
    state: LRState
    tasks: TaskData | None  # the new tasks' data (for the start of a new task), else None
    used: torch.Tensor  # rows reset since their entry was made: a hint only (an entry is used iff it matches)

    def matches(self, index: torch.Tensor | None, owner: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Where the entries (rows ``index``, or all) are made for ``owner`` (``(B,)``) and ``step`` (rows
        ``index`` of it, or ``(B,)``)."""
        if index is None:
            return (self.owner == owner) & (self.step == step)
        return (self.owner[index] == owner[index]) & (self.step[index] == step)


_WHERE_LIMIT = 1 << 15
"""Fields of at most this many numbers are merged with one ``torch.where`` (:func:`_merge_rows`)."""


def _merge_rows(
    state: LRState, rows: torch.Tensor, index: torch.Tensor, source: LRState, others: Iterable[torch.Tensor] = ()
) -> LRState:
    """``state`` with the rows ``rows`` (a ``(B,)`` bool mask, ``index`` its set rows) taken from ``source``
    (a state of the same B rows), bit for bit; only under ``torch.no_grad()``.

    A small field is merged with one ``torch.where`` (a new tensor: one op instead of a gather and a
    scatter, which is what a reset of a few rows at small B pays for); a large one gets its rows
    written as :func:`_put_rows` writes them (no pass over all of its B rows).
    """
    writers: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = []  # made for the first large field

    def merge(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        if old.numel() <= _WHERE_LIMIT:
            return torch.where(_row_mask(rows, old.dim()), new, old)
        if not writers:
            writers.append(_row_writer(state, index, others))
        return writers[0](old, new[index])

    return dynamics.map_tensors(merge, state, source)


def _merge_task_rows(tasks: TaskData, rows: torch.Tensor, index: torch.Tensor, source: TaskData) -> None:
    """Rows ``rows`` (mask; ``index`` its set rows) of every field of ``tasks`` set from ``source``, in place
    (as :func:`~metaopt_envs.core.family.put`; a small field with one ``torch.where`` into itself)."""
    for name, value in tasks.items():
        if value.numel() <= _WHERE_LIMIT:
            torch.where(_row_mask(rows, value.dim()), source[name], value, out=value)
        else:
            value[index] = source[name][index]


def _row_mask(rows: torch.Tensor, dim: int) -> torch.Tensor:
    """The ``(B,)`` mask ``rows`` shaped to broadcast over a ``dim``-dimensional field."""
    return rows.view(-1, *([1] * (dim - 1)))


def _put_rows(state: LRState, index: torch.Tensor, fresh: LRState, others: Iterable[torch.Tensor] = ()) -> LRState:
    """``state`` with rows ``index`` replaced by ``fresh``; only under ``torch.no_grad()`` (the core's reset).

    A field that owns its storage alone is written in place (``index_put_``: no copy of a whole
    ``(B, P)`` tensor). A field whose storage it shares with another field (one tensor in two
    fields, views of one buffer: the dynamics make both) or with ``others`` (the tasks, which a
    family's ``init_params`` may return as they are) gets a new tensor, so that the write changes
    nothing else. A reference to a state tensor held across a reset sees the new rows: copy it
    (``core.params.clone()``) to keep it.
    """
    return dynamics.map_tensors(_row_writer(state, index, others), state, fresh)


def _row_writer(
    state: LRState, index: torch.Tensor, others: Iterable[torch.Tensor]
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``put(old, new)``: field ``old`` of ``state`` with rows ``index`` set to ``new``, in place where
    ``old`` owns its storage alone (see :func:`_put_rows`)."""
    leaves = [leaf for value in state for leaf in (value if isinstance(value, OptimizerState) else (value,))]
    storages = [leaf.untyped_storage().data_ptr() for leaf in leaves]
    # Addresses of storages (equal addresses on two devices would only make a field go out of place).
    owners = Counter(storages + [tensor.untyped_storage().data_ptr() for tensor in others])
    alone = {id(leaf) for leaf, storage in zip(leaves, storages) if owners[storage] == 1}

    def put(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        # A stride 0 (an expanded tensor) lets rows share memory: never written in place.
        if id(old) in alone and 0 not in old.stride():
            return old.index_put_((index,), new)
        return old.index_put((index,), new)

    return put


def _state_field(name: str) -> property:
    return property(
        lambda self: getattr(self.state, name),
        doc=f"``state.{name}`` (read-only; see LRState). Live: a reset of some rows may write into it; clone to keep.",
    )


# The state's fields read as attributes of the core: ``core.params``, ``core.loss``, ...
for _name in dynamics.LRState._fields:
    setattr(LRCore, _name, _state_field(_name))
