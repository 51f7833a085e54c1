"""The dynamics of MetaOpt-LR-v0, written once: a pure step over a state of tensors.

:class:`~metaopt_envs.lr.core.LRCore` and the differentiable unrolls of the
learned optimizers (:mod:`agents.meta.learned_optimizers`) run these same
functions, so an env rollout and a meta-training unroll see the same
gradients, the same optimizer updates and the same observation features.

Every function here is pure: it reads tensors and returns new ones, with no
in-place write, so an unroll can backpropagate through it (truncated BPTT)
under ``torch.enable_grad()``; the env calls it under ``torch.no_grad()``.

One inner step (:func:`inner_step`): the optimizer updates the parameters with
the gradient measured at the previous step, then :func:`measure` evaluates at
the new parameters the full training loss and two independent minibatch
gradients ``g_a``, ``g_b`` (keys :func:`minibatch_keys`). Their mean
``g = (g_a + g_b) / 2`` is the next update's gradient; their difference the
gradient noise. One decision (:func:`step`) sets the learning rate and takes
``num_inner_steps`` inner steps.

Keys of a row (see :mod:`metaopt_envs.core.rng`): its task key comes from
``BatchedCore.advance_keys``; inner episode ``i`` of a task initializes with
``init_key(task_key, i)`` and draws minibatches from ``run_key(task_key, i)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch

from metaopt_envs.core import rng
from metaopt_envs.lr.families.base import TINY, LRTaskFamily, TaskData
from metaopt_envs.lr.optimizers import InnerOptimizer, OptimizerState

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


def feature_spec(observe_validation: bool = False) -> tuple[tuple[str, float, float], ...]:
    """The observation's features ``(name, low, high)``, with the validation feature if observed."""
    return LR_FEATURES + ((VALIDATION_FEATURE,) if observe_validation else ())


# ---------------------------------------------------------------------- keys
def init_key(task_key: torch.Tensor, inner_episode: torch.Tensor | int) -> torch.Tensor:
    """Key ``(B,)`` of the initialization of inner episode ``inner_episode`` of each task."""
    return rng.fold(task_key, 1, inner_episode)


def run_key(task_key: torch.Tensor, inner_episode: torch.Tensor | int) -> torch.Tensor:
    """Key ``(B,)`` of the minibatch stream of inner episode ``inner_episode`` of each task."""
    return rng.fold(task_key, 2, inner_episode)


def init_and_run_keys(task_key: torch.Tensor, inner_episode: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(init_key(...), run_key(...))`` in three hashes instead of six (the same keys)."""
    episode = inner_episode.unsqueeze(-1) if isinstance(inner_episode, torch.Tensor) else inner_episode
    both = rng.fold(rng.fold_each(task_key, (1, 2)), episode)
    return both[:, 0], both[:, 1]


def minibatch_keys(run_key: torch.Tensor, inner_step: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys ``(B,)`` of the two minibatches measured at inner step ``inner_step: (B,)`` (or one int for all).

    ``fold(step_key, 0)`` and ``fold(step_key, 1)``, hashed together: the two are columns of one
    ``(B, 2)`` tensor, so a family that stacks them back to draw both minibatches at once copies nothing new.
    """
    pair = rng.fold_each(rng.fold(run_key, inner_step), (0, 1))
    return pair[:, 0], pair[:, 1]


# ---------------------------------------------------------------------- measurement
class Measurement(NamedTuple):
    """What one evaluation at the current parameters gives: ``loss``, ``grad_norm``,
    ``noise_ratio``, ``val_loss``: (B,); ``grad``: (B, P), the mean of the two minibatch gradients."""

    loss: torch.Tensor
    grad: torch.Tensor
    grad_norm: torch.Tensor
    noise_ratio: torch.Tensor
    val_loss: torch.Tensor


def _measure_block(
    family: LRTaskFamily,
    params: torch.Tensor,
    tasks: TaskData,
    run_key: torch.Tensor,
    inner_step: torch.Tensor | int,
    observe_validation: bool,
    grad_out: torch.Tensor | None = None,
) -> Measurement:
    key_a, key_b = minibatch_keys(run_key, inner_step)
    loss, grad, grad_norm, noise = family.measure_paired(params, tasks, key_a, key_b, grad_out)
    val = family.loss(params, tasks, "val") if observe_validation else torch.zeros_like(loss)
    return Measurement(loss, grad, grad_norm, noise, val)


def measure(
    family: LRTaskFamily,
    params: torch.Tensor,
    tasks: TaskData,
    run_key: torch.Tensor,
    inner_step: torch.Tensor | int,
    observe_validation: bool = False,
    chunk_size: int | None = None,
) -> Measurement:
    """Loss, mean minibatch gradient, noise ratio and validation loss at ``params: (B, P)``.

    ``run_key``, ``inner_step``: (B,) select the minibatches (``inner_step`` may be one int for
    every row). With ``chunk_size`` the rows are evaluated in contiguous blocks of that many
    (large batches stay in cache; a loop over a few blocks, never over problems).
    """
    count = params.shape[0]
    if chunk_size is None or count <= chunk_size:
        return _measure_block(family, params, tasks, run_key, inner_step, observe_validation)
    # Outside autograd each block's mean gradient is written into its rows of one (B, P) tensor
    # (no concatenation pass over it); a differentiable unroll concatenates.
    grad = None if torch.is_grad_enabled() and params.requires_grad else params.new_empty(params.shape)
    parts = []
    for start in range(0, count, chunk_size):
        block = slice(start, start + chunk_size)  # views: no copy of the task data
        parts.append(
            _measure_block(
                family,
                params[block],
                {name: value[block] for name, value in tasks.items()},
                run_key[block],
                inner_step if isinstance(inner_step, int) else inner_step[block],
                observe_validation,
                None if grad is None else grad[block],
            )
        )
    columns = [
        torch.cat(column) if name != "grad" or grad is None else grad
        for name, column in zip(Measurement._fields, zip(*parts))
    ]
    return Measurement(*columns)


# ---------------------------------------------------------------------- state and step
class LRState(NamedTuple):
    """Everything the LR dynamics keep per row between inner steps.

    ``params``, ``grad``: (B, P) (``grad`` measured at ``params``, the next
    update's); ``opt_state``: the inner optimizer's; ``inner_step``: (B,) int64;
    ``diverged``: (B,) bool; every other field (B,) float. ``previous_*`` and
    ``grad_dot_previous_*`` describe the last update: the gradient it used and
    its direction ``(params_before - params_after) / lr``.
    """

    params: torch.Tensor
    opt_state: OptimizerState
    inner_step: torch.Tensor
    log_lr: torch.Tensor
    initial_loss: torch.Tensor
    loss: torch.Tensor
    previous_loss: torch.Tensor
    initial_val_loss: torch.Tensor
    val_loss: torch.Tensor
    grad: torch.Tensor
    grad_norm: torch.Tensor
    previous_grad_norm: torch.Tensor
    initial_grad_norm: torch.Tensor
    noise_ratio: torch.Tensor
    grad_dot_previous_grad: torch.Tensor
    grad_dot_previous_update: torch.Tensor
    previous_update_norm: torch.Tensor
    diverged: torch.Tensor


def start(
    family: LRTaskFamily,
    optimizer: InnerOptimizer,
    params: torch.Tensor,
    tasks: TaskData,
    run_key: torch.Tensor,
    log_lr: torch.Tensor,
    observe_validation: bool = False,
    chunk_size: int | None = None,
) -> LRState:
    """The state of a fresh inner run at ``params: (B, P)`` with rate ``exp(log_lr: (B,))`` (inner step 0)."""
    # Inner step 0 folded into the minibatch keys as an int: one hash fewer than a tensor of zeros (the same keys).
    m = measure(family, params, tasks, run_key, 0, observe_validation, chunk_size)
    zeros = torch.zeros_like(m.loss)
    return LRState(
        params=params,
        opt_state=optimizer.init(params),
        inner_step=torch.zeros_like(run_key),
        log_lr=log_lr,
        initial_loss=m.loss,
        loss=m.loss,
        previous_loss=m.loss,
        initial_val_loss=m.val_loss,
        val_loss=m.val_loss,
        grad=m.grad,
        grad_norm=m.grad_norm,
        previous_grad_norm=zeros,
        initial_grad_norm=m.grad_norm,
        noise_ratio=m.noise_ratio,
        grad_dot_previous_grad=zeros,
        grad_dot_previous_update=zeros,
        previous_update_norm=zeros,
        diverged=torch.zeros_like(m.loss, dtype=torch.bool),
    )


def inner_step(
    state: LRState,
    family: LRTaskFamily,
    optimizer: InnerOptimizer,
    tasks: TaskData,
    run_key: torch.Tensor,
    lr: torch.Tensor,
    observe_validation: bool = False,
    divergence_threshold: float = 1e4,
    chunk_size: int | None = None,
) -> LRState:
    """One update at rate ``lr: (B,)`` and the measurement at the new parameters.

    A row diverges (and stays diverged) when its loss is not finite or exceeds
    ``divergence_threshold`` times its initial loss, or its gradient is not finite.
    """
    new_params, opt_state = optimizer.step(state.params, state.grad, lr, state.opt_state)
    step_index = state.inner_step + 1
    m = measure(family, new_params, tasks, run_key, step_index, observe_validation, chunk_size)
    # Per-row statistics of the update, so that no (B, P) tensor is kept for them.
    grad_dot_previous_grad = torch.linalg.vecdot(m.grad, state.grad)
    if optimizer.name == "sgd":  # SGD's update direction is its gradient
        grad_dot_previous_update, previous_update_norm = grad_dot_previous_grad, state.grad_norm
    else:
        update = (state.params - new_params) / lr.unsqueeze(-1)
        grad_dot_previous_update = torch.linalg.vecdot(m.grad, update)
        previous_update_norm = torch.linalg.vector_norm(update, dim=-1)
    bad = ~torch.isfinite(m.loss) | (m.loss > divergence_threshold * state.initial_loss) | ~torch.isfinite(m.grad_norm)
    return state._replace(
        params=new_params,
        opt_state=opt_state,
        inner_step=step_index,
        previous_loss=state.loss,
        loss=m.loss,
        val_loss=m.val_loss,
        grad=m.grad,
        previous_grad_norm=state.grad_norm,
        grad_norm=m.grad_norm,
        noise_ratio=m.noise_ratio,
        grad_dot_previous_grad=grad_dot_previous_grad,
        grad_dot_previous_update=grad_dot_previous_update,
        previous_update_norm=previous_update_norm,
        diverged=state.diverged | bad,
    )


def step(
    state: LRState,
    log_lr: torch.Tensor,
    family: LRTaskFamily,
    optimizer: InnerOptimizer,
    tasks: TaskData,
    run_key: torch.Tensor,
    num_inner_steps: int = 1,
    observe_validation: bool = False,
    divergence_threshold: float = 1e4,
    chunk_size: int | None = None,
) -> LRState:
    """One decision: set the rate to ``exp(log_lr: (B,))`` and take ``num_inner_steps`` inner steps.

    ``previous_loss`` of the result is the loss before the decision (the loss-change feature).
    """
    lr = torch.exp(log_lr)
    start_loss = state.loss
    state = state._replace(log_lr=log_lr)
    for _ in range(num_inner_steps):
        state = inner_step(
            state, family, optimizer, tasks, run_key, lr, observe_validation, divergence_threshold, chunk_size
        )
    return state._replace(previous_loss=start_loss)


def select_rows(mask: torch.Tensor, if_true: LRState, if_false: LRState) -> LRState:
    """Row-wise choice between two states: ``if_true`` where ``mask: (B,) bool`` is set (differentiable)."""

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)

    return map_tensors(pick, if_true, if_false)


def detach(state: LRState) -> LRState:
    """``state`` cut from the autograd graph (the end of a truncated-BPTT window)."""
    return map_tensors(torch.Tensor.detach, state)


def map_tensors(fn: Callable[..., torch.Tensor], *states: LRState) -> LRState:
    """A new state whose every tensor is ``fn`` of the matching tensors of ``states``, field by
    field (the optimizer state's buffers one by one)."""
    fields: list[torch.Tensor | OptimizerState] = []
    for column in zip(*states):
        if isinstance(column[0], OptimizerState):
            fields.append(OptimizerState._make(map(fn, *column)))
        else:
            fields.append(fn(*column))
    return LRState._make(fields)


# ---------------------------------------------------------------------- observation
def update_cosine(state: LRState) -> torch.Tensor:
    """``cos(g_t, u_{t-1})`` ``(B,)``: the observation's ``update_cosine``, in [-1, 1] (0 where undefined)."""
    cosine = state.grad_dot_previous_update / (state.grad_norm * state.previous_update_norm + TINY)
    return torch.nan_to_num(cosine, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)


def features(
    state: LRState,
    horizon: int,
    log_lr_range: tuple[float, float],
    loss_floor: float = 1e-6,
    observe_validation: bool = False,
) -> torch.Tensor:
    """The observation ``(B, F)`` float32 of ``state``, clipped into the bounds of :func:`feature_spec`.

    Losses are relative to the initial ones (``loss_floor`` times the initial loss
    is added so that a solved problem stays finite); ``log_lr`` is mapped from
    ``log_lr_range`` onto [-1, 1]; progress is ``inner_step / horizon``.
    """
    low, high = log_lr_range
    floor = loss_floor * state.initial_loss
    grad_norm = state.grad_norm
    columns = [
        torch.log((state.loss + floor) / (state.initial_loss + TINY)),
        torch.log((state.loss + floor) / (state.previous_loss + floor)),
        torch.log((grad_norm + TINY) / (state.initial_grad_norm + TINY)),
        state.grad_dot_previous_grad / (grad_norm * state.previous_grad_norm + TINY),
        torch.log(state.noise_ratio + TINY),
        2.0 * (state.log_lr - low) / (high - low) - 1.0,
        state.inner_step.to(torch.float32) / horizon,
        update_cosine(state),
    ]
    if observe_validation:
        val_floor = loss_floor * state.initial_val_loss
        columns.append(torch.log((state.val_loss + val_floor) / (state.initial_val_loss + TINY)))
    obs = torch.stack(columns, dim=-1).to(torch.float32)
    # A diverged row's statistics may be inf or NaN: clip them into the space.
    obs = torch.nan_to_num(obs, nan=0.0, posinf=1e30, neginf=-1e30)
    obs_low, obs_high = _feature_bounds(observe_validation, obs.device)
    return torch.maximum(torch.minimum(obs, obs_high), obs_low)


@functools.lru_cache(maxsize=16)
def _feature_bounds(observe_validation: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The features' bounds as tensors on ``device``, made once (a copy to a GPU per step would wait on it)."""
    spec = feature_spec(observe_validation)
    return (
        torch.tensor([lo for _, lo, _ in spec], device=device),
        torch.tensor([hi for _, _, hi in spec], device=device),
    )
