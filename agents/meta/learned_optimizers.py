"""Learned optimizers meta-trained by differentiating through unrolled inner loops.

* :class:`LearnedLRController` -- a small MLP (8 -> 32 -> 1 by default) from the
  MetaOpt-LR-v0 observation features (:data:`metaopt_envs.lr.dynamics.LR_FEATURES`)
  to the next log learning rate of an inner optimizer (SGD by default). It is
  meta-trained by backpropagating through a truncated, unrolled inner loop
  (:func:`unroll`) that runs the env's own dynamics (:mod:`metaopt_envs.lr.dynamics`:
  the same measurement, the same :class:`~metaopt_envs.lr.optimizers.InnerOptimizer`
  update, the same features), and it answers SB3's ``predict`` on LR-env
  observations (absolute action mode), so :func:`agents.evaluation.lr.evaluate` runs
  it beside the hand-designed baselines.
* :class:`CoordinatewiseLSTMOptimizer` -- Andrychowicz et al. (2016): a two-layer
  LSTM (hidden 20) shared by every coordinate of every problem, fed the
  log-magnitude / sign preprocessed gradient, emitting the update; meta-trained
  by truncated BPTT over the unrolled inner loop. :meth:`~CoordinatewiseLSTMOptimizer.optimize`
  returns per-task loss curves and the LR harness's metric ``log10(L_T / L_0)``.

Problems are drawn like the LR core draws them (:func:`sample_problems`): for
row keys ``k`` (``seeds_to_keys(seed, n)`` in the harness) the task key is
``fold(k, split_id, 0)``, the initialization ``dynamics.init_key(task_key, 0)``
and the minibatches ``dynamics.minibatch_keys(dynamics.run_key(task_key, 0), t)``;
so the unroll and the env see the same tasks, initial points and minibatches.

Gradients inside the unroll are the families' own (closed forms, the MLPs'
hand-written backward), differentiable in the parameters, so the meta-gradient
of the LR controller is second order through them. (A user family that only
defines ``minibatch_loss`` gets its gradients from ``LRTaskFamily``'s autograd
default, which keeps their graph when the parameters require grad: the
meta-gradient is second order too; so does :class:`~metaopt_envs.lr.families.module.ModuleFamily`,
the realistic suite's base, through ``torch.func`` and autograd with ``create_graph``.)
``meta_train`` takes one family or several, cycled over the iterations.

Both unrolls freeze a problem once it diverges (loss above
``divergence_threshold`` times its initial loss, or not finite), as the env
ends such an episode: its later losses stay at the value it diverged with, so
the meta-gradient still pushes away from divergence and no inf/NaN enters the
graph.
"""

from __future__ import annotations

import copy
import inspect
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.controllers.lr import LRController as Controller
from metaopt_envs.core import rng, seeds_to_keys
from metaopt_envs.core.family import SPLIT_IDS
from metaopt_envs.lr import dynamics
from metaopt_envs.lr.dynamics import LR_FEATURES, LRState
from metaopt_envs.lr.families import LRTaskFamily, make_task_family
from metaopt_envs.lr.families.base import TaskData
from metaopt_envs.lr.optimizers import InnerOptimizer

FEATURE_LOW = torch.tensor([low for _, low, _ in LR_FEATURES])
FEATURE_HIGH = torch.tensor([high for _, _, high in LR_FEATURES])
# Inputs to the networks are the features divided by their largest bound: every one in [-1, 1].
FEATURE_SCALE = torch.maximum(FEATURE_LOW.abs(), FEATURE_HIGH.abs())
DIVERGED_LOG10 = math.log10(1e30)  # the harness's final log10 loss ratio of a diverged run


@dataclass
class Problems:
    """A batch of inner problems as the LR core draws them: tasks, initial params, minibatch keys."""

    tasks: TaskData
    params: torch.Tensor  # (B, P)
    run_key: torch.Tensor  # (B,) int64

    @property
    def num(self) -> int:
        return self.params.shape[0]


def sample_problems(family: LRTaskFamily, keys: torch.Tensor, split: str = "train") -> Problems:
    """The problems of row keys ``keys: (B,)`` (their first episode), exactly as ``LRCore.reset_rows`` draws them."""
    zero = torch.zeros_like(keys)
    task_key = rng.fold(keys, SPLIT_IDS[split], zero)
    tasks = family.sample(task_key, split)
    params = family.init_params(tasks, dynamics.init_key(task_key, zero))
    return Problems(tasks, params, dynamics.run_key(task_key, zero))


def harness_problems(family: LRTaskFamily, num_tasks: int, seed: int, split: str = "test") -> Problems:
    """The problems :func:`agents.evaluation.lr.evaluate` runs for ``seed`` (reset with ``evaluation_seed(seed)``)."""
    from agents.evaluation.metrics import evaluation_seed

    return sample_problems(family, seeds_to_keys(evaluation_seed(seed), num_tasks, torch.device("cpu")), split)


def _as_family(family: str | LRTaskFamily) -> LRTaskFamily:
    return family if isinstance(family, LRTaskFamily) else make_task_family(family)


FamilyOrFamilies = str | LRTaskFamily | Sequence[str | LRTaskFamily]
"""A training family, or several that meta-training cycles through (iteration ``i`` draws from family ``i % n``)."""


def _as_families(family: FamilyOrFamilies) -> list[LRTaskFamily]:
    if isinstance(family, (str, LRTaskFamily)):
        return [_as_family(family)]
    families = [_as_family(member) for member in family]
    if not families:
        raise ValueError("meta-training needs at least one task family, got an empty sequence")
    return families


def _validation_sets(
    families: list[LRTaskFamily], validation: Problems | Sequence[Problems] | None
) -> list[tuple[LRTaskFamily, Problems]]:
    """Pairs of (family, its validation problems): one :class:`Problems` goes with the first family,
    a sequence with the families in order (one each)."""
    if validation is None:
        return []
    sets = [validation] if isinstance(validation, Problems) else list(validation)
    if len(sets) != (1 if isinstance(validation, Problems) else len(families)):
        raise ValueError(
            f"validation must be one Problems (for the first family) or one per training family "
            f"({len(families)}), got {len(sets)}"
        )
    return list(zip(families, sets))


# ====================================================================== LR controller
def init_unroll_state(
    family: LRTaskFamily, problems: Problems, initial_log_lr: float, optimizer: InnerOptimizer | None = None
) -> LRState:
    """The state after ``LRCore.reset_rows`` (inner step 0, rate ``initial_log_lr``), a constant of the graph."""
    params = problems.params.detach().clone()
    with torch.no_grad():
        return dynamics.start(
            family,
            optimizer or InnerOptimizer("sgd"),
            params,
            problems.tasks,
            problems.run_key,
            torch.full((params.shape[0],), initial_log_lr, device=params.device),
        )


def unroll_step(
    family: LRTaskFamily,
    problems: Problems,
    state: LRState,
    log_lr: torch.Tensor,
    optimizer: InnerOptimizer | None = None,
    divergence_threshold: float = 1e4,
) -> LRState:
    """One ``LRCore.step`` with ``action_every=1`` at rate ``exp(log_lr)`` (the env's :func:`dynamics.step`).

    Rows that had diverged keep their state (frozen), so their loss stays finite.
    Differentiable under ``torch.enable_grad()``.
    """
    new = dynamics.step(
        state,
        log_lr,
        family,
        optimizer or InnerOptimizer("sgd"),
        problems.tasks,
        problems.run_key,
        divergence_threshold=divergence_threshold,
    )
    kept = dynamics.select_rows(state.diverged, state, new)
    return kept._replace(inner_step=new.inner_step, diverged=new.diverged)


class LRNet(nn.Module):
    """Features (scaled to [-1, 1]) -> action in (-1, 1) (tanh), the absolute-mode action of the next rate."""

    scale: torch.Tensor  # a buffer (register_buffer): nn.Module's __getattr__ types it as Tensor | Module

    def __init__(self, hidden: int = 32, initial_action: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(len(LR_FEATURES), hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)  # starts as the constant rate of ``initial_action``
        nn.init.constant_(self.out.bias, math.atanh(max(min(initial_action, 0.999), -0.999)))
        self.register_buffer("scale", FEATURE_SCALE.clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(torch.tanh(self.hidden(features / self.scale)))).squeeze(-1)


@dataclass
class UnrollResult:
    features: torch.Tensor  # (T, B, 8): the observation each decision was taken on
    log_lrs: torch.Tensor  # (T, B)
    log_loss_ratios: torch.Tensor  # (T + 1, B): log((L_t + floor) / L_0), frozen after divergence
    diverged: torch.Tensor  # (B,) bool
    meta_loss: torch.Tensor  # scalar, the sum of the window losses (each window detached from the last)
    state: LRState = field(repr=False)


def _window_update(
    optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor], clip: float, log: list[float]
) -> Callable[[torch.Tensor], None]:
    """The truncated-BPTT step taken at the end of each unroll window: backward, non-finite
    gradients zeroed, norm clipped to ``clip``, one optimizer step; the window's loss goes to ``log``."""

    def update(window_loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        window_loss.backward()
        for p in parameters:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        torch.nn.utils.clip_grad_norm_(parameters, clip)
        optimizer.step()
        log.append(float(window_loss.detach()))

    return update


class LearnedLRController(Controller):
    """An MLP learning-rate controller on MetaOpt-LR-v0, meta-trained through unrolled inner loops.

    ``inner_optimizer`` (an :data:`~metaopt_envs.lr.optimizers.INNER_OPTIMIZERS` name, SGD by
    default) is the optimizer whose rate it sets, in the unroll as in the env (pass the same
    ``inner_optimizer`` to the env it is evaluated on).

    ``predict(observation, ...)`` takes LR-env observations ``(n, 8)`` and returns
    absolute-mode actions ``(n, 1)`` for ``lr_range`` (the env's, default
    ``(1e-4, 10)``); rates are the network's ``tanh`` output mapped onto
    ``[log low, log high]``, so they always lie in ``lr_range``.
    """

    name = "learned_lr"

    def __init__(
        self,
        hidden: int = 32,
        lr_range: tuple[float, float] = (1e-4, 10.0),
        initial_lr: float = 0.01,
        horizon: int = 50,
        loss_floor: float = 1e-6,
        seed: int = 0,
        inner_optimizer: str = "sgd",
    ) -> None:
        super().__init__(lr_range)
        self.optimizer = InnerOptimizer(inner_optimizer)
        self.lr_range = (float(lr_range[0]), float(lr_range[1]))
        self.hidden_size, self.initial_lr, self.horizon, self.loss_floor = hidden, initial_lr, horizon, loss_floor
        torch.manual_seed(seed)
        self.net = LRNet(hidden, initial_action=float(self.lr_to_action(np.array([initial_lr]))[0, 0]))
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------- the policy
    @property
    def log_lr_range(self) -> tuple[float, float]:
        return self.log_low, self.log_high

    def log_lr(self, features: torch.Tensor) -> torch.Tensor:
        """Next log rate ``(B,)`` from features ``(B, 8)``, differentiable."""
        action = self.net(features)
        return self.log_low + 0.5 * (action + 1.0) * (self.log_high - self.log_low)

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            features = torch.as_tensor(np.asarray(observation)[:, : len(LR_FEATURES)], dtype=torch.float32)
            return torch.exp(self.log_lr(features)).double().numpy()

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        observation = np.atleast_2d(np.asarray(observation, dtype=np.float32))
        with torch.no_grad():
            features = torch.as_tensor(observation[:, : len(LR_FEATURES)])
            action = self.net(features).numpy()
        return np.clip(action, -1.0, 1.0).astype(np.float32).reshape(-1, 1), state

    # ---------------------------------------------------------------- meta-training
    def meta_train(
        self,
        family: FamilyOrFamilies = "quadratic",
        iterations: int = 200,
        num_tasks: int = 32,
        horizon: int | None = None,
        truncation: int = 10,
        meta_lr: float = 3e-3,
        clip: float = 1.0,
        objective: str = "mean",
        seed: int = 0,
        time_budget_s: float | None = None,
        log_every: int = 0,
        validation: Problems | Sequence[Problems] | None = None,
        validate_every: int = 10,
    ) -> list[dict[str, float]]:
        """Adam on the controller through truncated unrolls of SGD on fresh training tasks.

        ``family``: one family, or several (iteration ``i`` draws from family ``i % n``).
        Each iteration draws ``num_tasks`` training-split problems and unrolls
        ``horizon`` steps; every ``truncation`` steps the window's meta-loss is
        backpropagated, the gradient clipped to norm ``clip``, Adam steps, and the
        inner state is detached. ``time_budget_s`` stops early. With ``validation``
        problems (draw them from the training split; one :class:`Problems` per family when
        there are several), the mean final log loss on them is measured every
        ``validate_every`` iterations and the best network is kept.
        """
        import time

        families = _as_families(family)
        validation_sets = _validation_sets(families, validation)
        horizon = horizon or self.horizon
        self.horizon = horizon
        optimizer = torch.optim.Adam(self.net.parameters(), lr=meta_lr)
        start, best = time.perf_counter(), None
        for iteration in range(iterations):
            keys = rng.keys_from_seeds(torch.arange(num_tasks) + 1_000_003 * (seed + 1) + iteration * num_tasks)
            family = families[iteration % len(families)]
            problems = sample_problems(family, keys, "train")
            window_losses: list[float] = []
            update = _window_update(optimizer, list(self.net.parameters()), clip, window_losses)

            result = unroll(self, family, problems, horizon, truncation, objective=objective, on_window=update)
            final = float(result.log_loss_ratios[-1].detach().mean() / math.log(10.0))
            record = {"iteration": iteration, "meta_loss": float(np.mean(window_losses)), "log10_final": final}
            stop = time_budget_s is not None and time.perf_counter() - start > time_budget_s
            if validation_sets and (iteration % validate_every == 0 or stop or iteration + 1 == iterations):
                record["validation_log10_final"] = score = float(
                    np.mean([self.evaluate_unroll(f, p, horizon).mean() for f, p in validation_sets])
                )
                if best is None or score < best[0]:
                    best = (score, copy.deepcopy(self.net.state_dict()))
            self.history.append(record)
            if log_every and iteration % log_every == 0:
                print(
                    f"[learned_lr] it {iteration} meta_loss {np.mean(window_losses):.3f} log10 LT/L0 {final:.3f}",
                    flush=True,
                )
            if stop:
                break
        if best is not None:
            self.net.load_state_dict(best[1])
        return self.history

    def evaluate_unroll(self, family: str | LRTaskFamily, problems: Problems, horizon: int | None = None) -> np.ndarray:
        """Per-task final ``log10(L_T / L_0)`` of the controller's SGD run (30 where it diverged, as the harness)."""
        family = _as_family(family)
        result = unroll(self, family, problems, horizon or self.horizon, None, create_graph=False)
        return final_log10(result.state.loss, result.state.initial_loss, result.diverged)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str) -> None:
        torch.save(
            {
                "config": {
                    "hidden": self.hidden_size,
                    "lr_range": self.lr_range,
                    "initial_lr": self.initial_lr,
                    "horizon": self.horizon,
                    "loss_floor": self.loss_floor,
                    "inner_optimizer": self.optimizer.name,
                },
                "state_dict": self.net.state_dict(),
                "history": self.history,
            },
            path,
        )

    @classmethod
    def load(cls, path: str) -> LearnedLRController:
        """What :meth:`save` wrote: tensors and plain data only (``torch.load(weights_only=True)``), the
        network rebuilt from the recorded config; no code from the file runs."""
        blob = load_blob(path, cls)
        controller = cls(**blob["config"])
        controller.net.load_state_dict(blob["state_dict"])
        controller.history = blob.get("history", [])
        return controller


def load_blob(path: str, cls: type) -> dict[str, Any]:
    """A file written by ``cls.save``, loaded with ``torch.load(weights_only=True)`` (no unpickling of code);
    ValueError naming the file if it holds anything else or a config ``cls`` does not take."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: not a {cls.__name__} file (it holds pickled objects beyond tensors and plain data, which "
            f"are not loaded: {str(error).splitlines()[0]})"
        ) from error
    if not (isinstance(blob, dict) and isinstance(blob.get("config"), dict) and "state_dict" in blob):
        raise ValueError(f"{path}: not a {cls.__name__} file (no config and state_dict)")
    unknown = sorted(set(blob["config"]) - set(inspect.signature(cls).parameters))
    if unknown:
        raise ValueError(f"{path}: {cls.__name__} takes no argument {unknown[0]!r} (from the file's config)")
    return blob


def final_log10(loss: torch.Tensor, initial_loss: torch.Tensor, diverged: torch.Tensor) -> np.ndarray:
    """The harness's metric: ``log10(L_T / L_0)`` per task, ``log10(1e30)`` where the run diverged."""
    with torch.no_grad():
        ratio = torch.log10((loss / initial_loss.clamp_min(1e-30)).clamp(1e-30, 1e30))
        return torch.where(diverged, torch.full_like(ratio, DIVERGED_LOG10), ratio).double().numpy()


def unroll(
    controller: LearnedLRController,
    family: str | LRTaskFamily,
    tasks: Problems | TaskData,
    horizon: int,
    truncation: int | None = None,
    *,
    params: torch.Tensor | None = None,
    run_key: torch.Tensor | None = None,
    objective: str = "mean",
    create_graph: bool = True,
    divergence_threshold: float = 1e4,
    on_window: Any = None,
) -> UnrollResult:
    """Unroll ``horizon`` inner steps (``controller.optimizer``), the controller choosing each rate from the features.

    ``tasks``: a :class:`Problems` (tasks, initial params, minibatch keys), or
    task data with ``params`` and ``run_key``. The rate in force at the start is
    the core's default (the geometric middle of ``lr_range``), so the first
    observation equals ``LRCore.observe()`` after a reset. Every ``truncation``
    steps (``None``: never) the inner state is detached; the window's meta-loss is
    the mean over its steps of ``log((L_t + floor) / L_0)`` (``objective="mean"``) or
    that of its last step (``"final"``), averaged over tasks; ``on_window(loss)``
    (if given) is called with each window's loss before the detach, e.g. to take
    a meta-optimizer step. ``meta_loss`` sums the window losses.
    """
    family = _as_family(family)
    if isinstance(tasks, Problems):
        problems = tasks
    elif params is None or run_key is None:
        raise ValueError("unroll on task data needs params= and run_key= (or pass a Problems)")
    else:
        problems = Problems(tasks, params, run_key)
    if objective not in ("mean", "final"):
        raise ValueError(f"objective must be 'mean' or 'final', got {objective!r}")
    low, high = controller.log_lr_range
    state = init_unroll_state(family, problems, 0.5 * (low + high), controller.optimizer)
    floor = controller.loss_floor
    features, log_lrs, ratios = [], [], [torch.log((state.loss + floor * state.initial_loss) / state.initial_loss)]
    window: list[torch.Tensor] = []
    meta_loss = torch.zeros(())
    with torch.enable_grad() if create_graph else torch.no_grad():
        for t in range(horizon):
            obs = dynamics.features(state, horizon, (low, high), floor)
            log_lr = controller.log_lr(obs)
            features.append(obs)
            log_lrs.append(log_lr)
            state = unroll_step(family, problems, state, log_lr, controller.optimizer, divergence_threshold)
            ratio = torch.log((state.loss + floor * state.initial_loss) / state.initial_loss)
            ratios.append(ratio)
            window.append(ratio)
            end = t + 1 == horizon or (truncation is not None and (t + 1) % truncation == 0)
            if end:
                window_loss = (torch.stack(window).mean(0) if objective == "mean" else window[-1]).mean()
                if on_window is not None and window_loss.requires_grad:
                    on_window(window_loss)
                meta_loss = meta_loss + (window_loss.detach() if on_window is not None else window_loss)
                window = []
                if truncation is not None:
                    state = dynamics.detach(state)
    return UnrollResult(
        torch.stack(features), torch.stack(log_lrs), torch.stack(ratios), state.diverged, meta_loss, state
    )


# ====================================================================== LSTM optimizer
def preprocess_gradient(grad: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Andrychowicz et al. (2016), appendix A: ``(..., 2)``.

    ``(log|g| / p, sign g)`` if ``|g| >= e^-p``, else ``(-1, e^p g)``.
    """
    magnitude = grad.abs()
    big = magnitude >= math.exp(-p)
    first = torch.where(big, torch.log(magnitude.clamp_min(math.exp(-p))) / p, torch.full_like(grad, -1.0))
    second = torch.where(big, torch.sign(grad), math.exp(p) * grad)
    return torch.stack([first, second], dim=-1)


class CoordinatewiseLSTMOptimizer(nn.Module):
    """Andrychowicz et al. (2016)'s coordinatewise LSTM optimizer.

    One two-layer LSTM (``hidden`` 20) with shared weights runs on every
    coordinate of every problem (batch = problems x parameters); its input is
    the preprocessed gradient (:func:`preprocess_gradient`) and its output, times
    ``output_scale`` (0.1), the update added to that coordinate. The gradient it
    sees is the LR core's: the mean of the two paired minibatch gradients.
    Meta-trained by truncated BPTT (:meth:`meta_train`); gradients are treated as
    constants in the meta-gradient unless ``second_order`` (the paper's choice).
    """

    def __init__(self, hidden: int = 20, output_scale: float = 0.1, preprocess_p: float = 10.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.hidden_size, self.output_scale, self.preprocess_p = hidden, output_scale, preprocess_p
        self.cell1 = nn.LSTMCell(2, hidden)
        self.cell2 = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, 1)
        self.history: list[dict[str, float]] = []

    def init_state(self, count: int) -> tuple[torch.Tensor, ...]:
        zeros = torch.zeros(count, self.hidden_size)
        return zeros, zeros.clone(), zeros.clone(), zeros.clone()

    def update(
        self, grad: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Update ``(B, P)`` for gradient ``(B, P)`` and the new LSTM state (rows = B * P coordinates)."""
        x = preprocess_gradient(grad.reshape(-1), self.preprocess_p)
        h1, c1 = self.cell1(x, (state[0], state[1]))
        h2, c2 = self.cell2(h1, (state[2], state[3]))
        return self.output_scale * self.head(h2).view_as(grad), (h1, c1, h2, c2)

    def run(
        self,
        family: LRTaskFamily,
        problems: Problems,
        horizon: int,
        truncation: int | None = None,
        on_window: Any = None,
        train: bool = True,
        second_order: bool = False,
        divergence_threshold: float = 1e4,
        loss_floor: float = 1e-6,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unroll ``horizon`` steps; returns losses ``(T + 1, B)`` (frozen after divergence), initial loss, diverged."""
        b = problems.num
        params = problems.params.detach().clone()
        lstm = self.init_state(b * params.shape[1])
        # The env's measurement (its keys, its gradients); the gradients are constants of the
        # meta-gradient unless ``second_order``, the loss is differentiable in the params.
        second_order = train and second_order
        tasks, run_key = problems.tasks, problems.run_key
        with torch.no_grad():
            first = dynamics.measure(family, params, tasks, run_key, torch.zeros_like(run_key))
        initial, loss, grad = first.loss, first.loss, first.grad
        diverged = torch.zeros(b, dtype=torch.bool)
        losses, window = [loss.detach()], []
        floor = loss_floor * initial
        with torch.enable_grad() if train else torch.no_grad():
            for t in range(horizon):
                step, lstm = self.update(grad, lstm)
                new_params = params + step
                measured = dynamics.measure(family, new_params, tasks, run_key, torch.full_like(run_key, t + 1))
                new_loss, new_grad = measured.loss, measured.grad if second_order else measured.grad.detach()
                mask = diverged.unsqueeze(-1)
                params = torch.where(mask, params, new_params)
                grad = torch.where(mask, grad, new_grad)
                loss = torch.where(diverged, loss, new_loss)
                diverged = (
                    diverged
                    | ~torch.isfinite(loss)
                    | (loss > divergence_threshold * initial)
                    | ~torch.isfinite(grad).all(-1)
                )
                losses.append(loss.detach())
                window.append(torch.log((loss + floor) / initial))
                end = t + 1 == horizon or (truncation is not None and (t + 1) % truncation == 0)
                if end:
                    if on_window is not None and train:
                        on_window(torch.stack(window).mean())
                    window = []
                    if truncation is not None:
                        params, grad, loss = params.detach(), grad.detach(), loss.detach()
                        lstm = tuple(s.detach() for s in lstm)
        return torch.stack(losses), initial, diverged

    def meta_train(
        self,
        family: FamilyOrFamilies = "quadratic",
        iterations: int = 200,
        num_tasks: int = 32,
        horizon: int = 50,
        truncation: int = 10,
        meta_lr: float = 3e-3,
        clip: float = 1.0,
        seed: int = 0,
        time_budget_s: float | None = None,
        second_order: bool = False,
        log_every: int = 0,
        validation: Problems | Sequence[Problems] | None = None,
        validate_every: int = 10,
    ) -> list[dict[str, float]]:
        """Adam on the LSTM through truncated unrolls on fresh training-split problems (one step per window).

        ``family`` (one or several, cycled), ``validation`` / ``validate_every``: as
        :meth:`LearnedLRController.meta_train` (the best weights by mean final log loss are kept).
        """
        import time

        families = _as_families(family)
        validation_sets = _validation_sets(families, validation)
        optimizer = torch.optim.Adam(self.parameters(), lr=meta_lr)
        start, best = time.perf_counter(), None
        for iteration in range(iterations):
            keys = rng.keys_from_seeds(torch.arange(num_tasks) + 2_000_003 * (seed + 1) + iteration * num_tasks)
            family = families[iteration % len(families)]
            problems = sample_problems(family, keys, "train")
            window_losses: list[float] = []
            update = _window_update(optimizer, list(self.parameters()), clip, window_losses)

            losses, initial, diverged = self.run(family, problems, horizon, truncation, update, True, second_order)
            final = float(np.mean(final_log10(losses[-1], initial, diverged)))
            record = {"iteration": iteration, "meta_loss": float(np.mean(window_losses)), "log10_final": final}
            stop = time_budget_s is not None and time.perf_counter() - start > time_budget_s
            if validation_sets and (iteration % validate_every == 0 or stop or iteration + 1 == iterations):
                record["validation_log10_final"] = score = float(
                    np.mean([self.optimize(p, horizon, f)[1].mean() for f, p in validation_sets])
                )
                if best is None or score < best[0]:
                    best = (score, copy.deepcopy(self.state_dict()))
            self.history.append(record)
            if log_every and iteration % log_every == 0:
                print(
                    f"[lstm] it {iteration} meta_loss {np.mean(window_losses):.3f} log10 LT/L0 {final:.3f}", flush=True
                )
            if stop:
                break
        if best is not None:
            self.load_state_dict(best[1])
        return self.history

    def optimize(
        self, tasks: Problems, horizon: int, family: str | LRTaskFamily = "quadratic"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the learned optimizer on ``tasks`` (a :class:`Problems`) for ``horizon`` steps.

        Returns the per-task loss curves ``(B, T + 1)`` (``L_0 .. L_T``, frozen once a
        task diverges) and the harness's metric, final ``log10(L_T / L_0)`` per task
        (``log10(1e30)`` where it diverged).
        """
        family = _as_family(family)
        losses, initial, diverged = self.run(family, tasks, horizon, None, None, train=False)
        return losses.T.double().numpy(), final_log10(losses[-1], initial, diverged)

    def save(self, path: str) -> None:
        torch.save(
            {
                "config": {
                    "hidden": self.hidden_size,
                    "output_scale": self.output_scale,
                    "preprocess_p": self.preprocess_p,
                },
                "state_dict": self.state_dict(),
                "history": self.history,
            },
            path,
        )

    @classmethod
    def load(cls, path: str) -> CoordinatewiseLSTMOptimizer:
        """What :meth:`save` wrote, loaded as :meth:`LearnedLRController.load` (weights only, no code runs)."""
        blob = load_blob(path, cls)
        model = cls(**blob["config"])
        model.load_state_dict(blob["state_dict"])
        model.history = blob.get("history", [])
        return model
