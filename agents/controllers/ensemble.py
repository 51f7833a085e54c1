"""Hand-designed ensemble-weighting controllers for MetaOpt-Ensemble-v0, with SB3's ``predict``.

Every controller answers ``predict(observation, state=None, episode_start=None,
deterministic=True) -> (actions, state)`` on a batch of MetaOpt-Ensemble-v0 observations
``(n, 5K + 4)`` and emits ``action_mode="simplex"`` actions: ``(n, K)`` float32 weight vectors,
each entry in ``[0, 1]``, each row summing to 1 (up to float32 rounding; the env divides by
the sum anyway). ``K`` is read from the observation width, ``K = (obs_dim - 4) / 5``.

Features read (see the env's docstring for the full layout):

- ``obs[0:K]``: the last signed normalized error ``e_k`` of each forecaster; the loss of
  forecaster ``k`` is ``l_k = e_k ** 2``;
- ``obs[5K]``: the last signed normalized error of the ensemble ``e_ens = sum_k w_k e_k``
  (:class:`ExponentiatedGradient` only).

**Per-row state and the episode-start convention.** The online learners keep their state
(cumulative losses, weights, update counts) per row in float64 numpy arrays on the controller
itself (the SB3 ``state`` argument is passed through untouched). The state is re-initialised
when the batch size or ``K`` changes; a row is reset when ``episode_start[row]`` is true (and
every row is new on the first call). At an episode start a row's state is reset and it outputs
its initial weights (uniform) *without* using that observation's errors: they come from the
warm-up under uniform weights, not from the forecasts the controller weighted. On every later
call the row first updates with the losses read from the observation (the errors of the
forecast made with the weights it sent last), then outputs the new weights. Updates work in
float64 and in log space, so nothing under- or overflows: weights are never NaN, and losses
as large as the observation's clip (``e = 100``, ``l = 1e4``) over thousands of steps are fine.

The two oracles (:class:`BestSingleInHindsight`, :class:`RegimeOracle`) read the whole
episode from the env's core (``bind_core``; the harness calls it before running): they are
reference rows that no agent can reach, not agents.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agents.controllers.base import Controller, core_of
from agents.controllers.base import check_positive as _check_positive

__all__ = [
    "ENSEMBLE_BASELINES",
    "BayesFilter",
    "BestSingleInHindsight",
    "EnsembleController",
    "ExponentiatedGradient",
    "FixedShare",
    "FollowTheLeader",
    "Hedge",
    "RegimeOracle",
    "ShareFilterAgent",
    "Uniform",
    "num_forecasters",
]


def num_forecasters(obs_dim: int) -> int:
    """``K`` from the observation width ``5K + 4``; ValueError if the width is not of that form."""
    k, rest = divmod(int(obs_dim) - 4, 5)
    if rest != 0 or k < 1:
        raise ValueError(
            f"observation width must be 5K + 4 for K >= 1 forecasters (MetaOpt-Ensemble-v0), got {obs_dim}"
        )
    return k


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, stable for any finite logits; rows sum to 1."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _log_normalize(log_weights: np.ndarray) -> np.ndarray:
    """Subtract the row-wise log-sum-exp: ``exp`` of the result sums to 1."""
    top = log_weights.max(axis=-1, keepdims=True)
    return log_weights - (top + np.log(np.exp(log_weights - top).sum(axis=-1, keepdims=True)))


def _to_numpy(x: Any) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (no copy when already numpy)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _take_rows(x: Any, rows: np.ndarray) -> np.ndarray:
    """``x[rows]`` as numpy, for a torch tensor (indexed on its device first) or an array."""
    if hasattr(x, "detach"):
        import torch

        return x[torch.as_tensor(rows, dtype=torch.long, device=x.device)].detach().cpu().numpy()
    return np.asarray(x)[rows]


class EnsembleController(Controller):
    """Base: per-row online state, the episode-start convention, and ``predict``.

    The observation checks, the ``episode_start`` flags and the re-allocation when the batch
    size or ``K`` changes come from :class:`agents.controllers.base.Controller`.
    Subclasses implement :meth:`_allocate` (fresh state for ``n`` rows and ``K`` forecasters),
    :meth:`_reset_rows` (initial state for the rows of a boolean mask), :meth:`_update`
    (every row's update from the losses ``(n, K)`` and the observation) and :meth:`_weights`
    (the ``(n, K)`` float64 weights to output). The base updates every row and then resets the
    starting rows, so a starting row never uses its observation's errors.
    """

    name = "ensemble_controller"
    action_mode = "simplex"
    observation_width = "5K + 4"
    _size_from_width = staticmethod(num_forecasters)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments, for result files."""
        return {}

    # ----------------------------------------------------------------- subclass hooks
    def _allocate(self, n: int, k: int) -> None:
        self.steps = np.zeros(n, dtype=np.int64)  # updates since the row's episode start

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.steps[rows] = 0

    def _update(self, losses: np.ndarray, obs: np.ndarray) -> None:
        self.steps += 1

    def _weights(self) -> np.ndarray:
        assert self._n is not None and self._size is not None, "allocated by _prepare"
        return np.full((self._n, self._size), 1.0 / self._size)

    # ----------------------------------------------------------------- SB3 interface
    def _act(self, observation: Any, episode_start: Any) -> np.ndarray:
        """Weights ``(n, K)`` float32 for a batch of observations."""
        obs, k, start = self._prepare(observation, episode_start)
        errors = obs[:, :k]
        self._update(errors * errors, obs)
        if start.any():
            self._reset_rows(start)
        weights = self._weights()
        weights = weights / weights.sum(axis=-1, keepdims=True)
        return weights.astype(np.float32)


class _CumulativeLoss(EnsembleController):
    """Base: the cumulative loss ``cum_loss (n, K)`` of each forecaster this episode (0 at a start)."""

    def _allocate(self, n: int, k: int) -> None:
        super()._allocate(n, k)
        self.cum_loss = np.zeros((n, k))

    def _reset_rows(self, rows: np.ndarray) -> None:
        super()._reset_rows(rows)
        self.cum_loss[rows] = 0.0

    def _update(self, losses: np.ndarray, obs: np.ndarray) -> None:
        super()._update(losses, obs)
        self.cum_loss += losses


class _LogWeights(EnsembleController):
    """Base: per-row weights kept as ``log_weights (n, K)``, uniform at a start; outputs their softmax."""

    def _allocate(self, n: int, k: int) -> None:
        super()._allocate(n, k)
        self.log_weights = np.full((n, k), -math.log(k))

    def _reset_rows(self, rows: np.ndarray) -> None:
        super()._reset_rows(rows)
        self.log_weights[rows] = -math.log(self.log_weights.shape[1])

    def _weights(self) -> np.ndarray:
        return _softmax(self.log_weights)


class Uniform(EnsembleController):
    """Equal weights ``1/K`` always (the simple average, a strong baseline on forecast combination)."""

    name = "uniform"


class FollowTheLeader(_CumulativeLoss):
    """All weight on the forecaster with the lowest cumulative loss ``L_k = sum l_k``.

    Ties go to the lowest index; before its first update in an episode the row outputs uniform
    weights (the initial weights of every controller).
    """

    name = "follow_the_leader"

    def _weights(self) -> np.ndarray:
        n, k = self.cum_loss.shape
        onehot = np.zeros((n, k))
        onehot[np.arange(n), np.argmin(self.cum_loss, axis=-1)] = 1.0
        return np.where((self.steps > 0)[:, None], onehot, 1.0 / k)


class Hedge(_CumulativeLoss):
    """Hedge / exponential weights (Vovk 1990; Littlestone & Warmuth 1994; Freund & Schapire 1997).

    ``w_k ∝ exp(-eta * L_k)`` with ``L_k`` the cumulative loss of forecaster ``k`` this episode.

    - ``eta=None`` (default): the anytime rate ``eta_t = sqrt(8 ln K / t)`` (``t`` = the number
      of updates so far, including the current one) on losses clipped and scaled to ``[0, 1]``:
      ``min(l, loss_scale) / loss_scale``; the regret guarantee for bounded losses.
    - ``eta`` a number: the fixed rate on the raw losses ``l`` (``loss_scale`` is then unused).
    """

    name = "hedge"

    def __init__(self, eta: float | None = None, loss_scale: float = 25.0) -> None:
        super().__init__()
        self.eta = None if eta is None else _check_positive("eta", eta)
        self.loss_scale = _check_positive("loss_scale", loss_scale)

    def hyperparameters(self) -> dict[str, Any]:
        return {"eta": self.eta, "loss_scale": self.loss_scale}

    def _update(self, losses: np.ndarray, obs: np.ndarray) -> None:
        if self.eta is None:
            losses = np.minimum(losses, self.loss_scale) / self.loss_scale
        super()._update(losses, obs)

    def learning_rate(self) -> np.ndarray:
        """The rate ``(n,)`` in force for each row (0 before a row's first update)."""
        if self.eta is not None:
            return np.where(self.steps > 0, self.eta, 0.0)
        k = self.cum_loss.shape[1]
        return np.sqrt(8.0 * math.log(k) / np.maximum(self.steps, 1)) * (self.steps > 0)

    def _weights(self) -> np.ndarray:
        return _softmax(-self.learning_rate()[:, None] * self.cum_loss)


class FixedShare(_LogWeights):
    """Fixed Share (Herbster & Warmuth 1998): Hedge that tracks the best forecaster as it changes.

    ``v_k = w_k exp(-eta l_k)``, normalized; then ``w = (1 - alpha) v + alpha / K``: a share
    ``alpha`` of the weight is redistributed uniformly at every step, so a forecaster that
    was bad earlier can take over quickly after a regime change. Losses are the raw ``l``.
    ``alpha = 0`` is Hedge with a fixed ``eta``; ``alpha = 1`` is :class:`Uniform`.
    """

    name = "fixed_share"

    def __init__(self, eta: float = 1.0, alpha: float = 0.01) -> None:
        super().__init__()
        self.eta = _check_positive("eta", eta)
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def hyperparameters(self) -> dict[str, Any]:
        return {"eta": self.eta, "alpha": self.alpha}

    def _update(self, losses: np.ndarray, obs: np.ndarray) -> None:
        super()._update(losses, obs)
        log_v = _log_normalize(self.log_weights - self.eta * losses)
        if self.alpha > 0.0:  # every weight >= alpha / K > 0: its log is finite
            k = losses.shape[1]
            self.log_weights = np.log((1.0 - self.alpha) * np.exp(log_v) + self.alpha / k)
        else:  # stay in log space: no weight underflows to 0
            self.log_weights = log_v


class ExponentiatedGradient(_LogWeights):
    """Exponentiated gradient (EG; Kivinen & Warmuth 1997) on the mixture's squared error.

    The loss of the weights is the ensemble's normalized squared error
    ``f(w) = ((sum_k w_k p_k - y) / sigma)^2``. The rule uses ``g_k = 2 e_ens e_k`` with
    ``e_ens = obs[5K]`` (``= sum_k w_k e_k`` on the simplex) and ``e_k = obs[k]``. The true
    gradient ``df/dw_k = 2 e_ens p_k / sigma`` differs from ``g_k`` by the constant shift
    ``c = 2 e_ens y / sigma``, the same for every ``k``; ``exp(-eta (g_k + c))`` only rescales
    every weight by ``exp(-eta c)``, which the normalisation cancels, so the update is the same.

    ``w_k ∝ w_k exp(-eta g_k)``, kept in log space (no weight underflows to 0).
    """

    name = "exponentiated_gradient"

    def __init__(self, eta: float = 0.1) -> None:
        super().__init__()
        self.eta = _check_positive("eta", eta)

    def hyperparameters(self) -> dict[str, Any]:
        return {"eta": self.eta}

    def _update(self, losses: np.ndarray, obs: np.ndarray) -> None:
        super()._update(losses, obs)
        k = losses.shape[1]
        gradient = 2.0 * obs[:, 5 * k : 5 * k + 1] * obs[:, :k]
        self.log_weights = _log_normalize(self.log_weights - self.eta * gradient)


class _HindsightOracle(EnsembleController):
    """Base of the oracles: reads the episode from the core (``bind_core``), one plan per row.

    A row's plan is recomputed, vectorised over the rows that need it, when its
    ``episode_start`` flag is set (the core drew a new stream), on the first call after
    ``bind_core``, and when the core's ``t`` did not advance since the last call (a reset the
    flag did not report, e.g. a new inner episode of an RL² trial).
    """

    def __init__(self) -> None:
        super().__init__()
        self.core: Any = None
        self._plan: np.ndarray | None = None
        self._last_t: np.ndarray | None = None

    def bind_core(self, core: Any) -> None:
        """Read the episodes from ``core`` (an EnsembleCore, an RL² trial over one, or any adapter of it)."""
        self.core = core_of(core)
        self._plan, self._last_t = None, None

    def _squared_errors(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """Normalized squared errors ``(len(rows), K, T)`` float64 (non-finite -> inf), and warmup."""
        values = _take_rows(self.core.values, rows).astype(np.float64)
        forecasts = _take_rows(self.core.forecasts, rows).astype(np.float64)
        sigma = _take_rows(self.core.sigma, rows).astype(np.float64).reshape(-1)
        with np.errstate(all="ignore"):
            sq = ((forecasts - values[:, None, :]) / sigma[:, None, None]) ** 2
        sq = np.where(np.isfinite(sq), sq, np.inf)
        return sq, int(self.core.warmup)

    def _compute_plan(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _choice(self, plan: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The forecaster ``(B,)`` to back at each row's time ``t``, by the rows' ``plan``."""
        raise NotImplementedError

    def _act(self, observation: Any, episode_start: Any) -> np.ndarray:
        """Weights ``(n, K)`` float32 from each row's plan (one-hot on the forecaster it backs)."""
        if self.core is None:
            raise RuntimeError(
                f"{type(self).__name__} must be bound to the env's core first (bind_core; the harness does this)"
            )
        obs, k = self._check_observation(observation)
        n = obs.shape[0]
        start = self._episode_starts(episode_start, n)
        b, core_k, horizon = (int(s) for s in self.core.forecasts.shape)
        if n != b or k != core_k:
            raise ValueError(
                f"observation has shape {obs.shape} but the bound core has {b} rows of {core_k} forecasters"
            )
        t = _to_numpy(self.core.t).astype(np.int64).reshape(-1)
        if self._plan is None or self._plan.shape[0] != b:
            self._plan = None
            start = np.ones(n, dtype=bool)
        elif self._last_t is not None:
            start = start | (t <= self._last_t)
        self._last_t = t.copy()
        rows = np.flatnonzero(start)
        if rows.size:
            fresh = self._compute_plan(rows)
            if self._plan is None:
                self._plan = np.zeros((b,) + fresh.shape[1:], dtype=fresh.dtype)
            self._plan[rows] = fresh
        assert self._plan is not None, "without a plan every row starts"
        return self._plan_weights(self._plan, np.clip(t, int(self.core.warmup), horizon - 1), k)

    def _plan_weights(self, plan: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
        """The ``(B, K)`` float32 weights at each row's time ``t``: one-hot on :meth:`_choice`."""
        weights = np.zeros((plan.shape[0], k), dtype=np.float32)
        weights[np.arange(plan.shape[0]), self._choice(plan, t)] = 1.0
        return weights


class BestSingleInHindsight(_HindsightOracle):
    """All weight on the forecaster with the lowest total squared error over the episode's decisions.

    The errors are summed over ``t in [warmup, T)`` (ties go to the lowest index). An oracle:
    it reads the future of the stream from the core (``bind_core``).
    """

    name = "best_single"

    def _compute_plan(self, rows: np.ndarray) -> np.ndarray:
        sq, warmup = self._squared_errors(rows)
        return np.argmin(sq[:, :, warmup:].sum(axis=-1), axis=-1)

    def _choice(self, plan: np.ndarray, t: np.ndarray) -> np.ndarray:
        return plan


class RegimeOracle(_HindsightOracle):
    """Knows the regime segmentation: in each segment, all weight on that segment's best forecaster.

    The decision steps ``[warmup, T)`` are cut into maximal runs of a constant ``core.regime``
    label (a label that recurs later starts a new segment); within each segment the oracle backs
    the forecaster with the lowest squared error summed over that segment (hindsight within the
    segment; ties go to the lowest index). It reads the future from the core (``bind_core``).
    """

    name = "regime_oracle"

    def _compute_plan(self, rows: np.ndarray) -> np.ndarray:
        sq, warmup = self._squared_errors(rows)  # (r, K, T)
        regime = _take_rows(self.core.regime, rows)[:, warmup:]  # (r, D)
        sq = sq[:, :, warmup:].transpose(0, 2, 1)  # (r, D, K)
        r, d, k = sq.shape
        if d == 0:  # no decision step
            return np.zeros((r, warmup), dtype=np.int64)
        change = np.zeros((r, d), dtype=np.int64)
        change[:, 1:] = regime[:, 1:] != regime[:, :-1]
        segment = np.cumsum(change, axis=1)  # (r, D): segment index of each decision step
        totals = np.zeros((r, int(segment.max()) + 1, k))
        np.add.at(totals, (np.repeat(np.arange(r), d), segment.reshape(-1)), sq.reshape(r * d, k))
        best = np.argmin(totals, axis=-1)  # (r, segments)
        plan = np.zeros((r, warmup + d), dtype=np.int64)
        plan[:, warmup:] = np.take_along_axis(best, segment, axis=1)
        plan[:, :warmup] = plan[:, warmup : warmup + 1]
        return plan  # (r, T): the forecaster to back when forecasting y_t

    def _choice(self, plan: np.ndarray, t: np.ndarray) -> np.ndarray:
        return plan[np.arange(plan.shape[0]), t]


class BayesFilter(_HindsightOracle):
    """The Bayes-optimal causal forecast of the switching-AR experts setting: a bound, not an agent.

    With a pool of the regimes' true AR(2) models (``forecasters=("expert0", ..., "expert{R-1}")`` on
    ``task_family="switching_ar"`` with a fixed number ``R`` of regimes), the forecast with the least
    expected squared error given the past is the posterior-weighted mix of the experts' forecasts. This
    reference computes that posterior exactly with the forward algorithm of the stream's generative
    process, which it reads from the family: segments of ``min_segment`` steps plus a geometric number
    with mean ``mean_segment - min_segment`` (a hidden semi-Markov chain: the state is the regime and the
    time spent in it, capped at ``min_segment``), each next regime uniform among the ``R - 1`` others,
    no switch in the last ``min_segment`` steps, Gaussian innovations of the family's ``noise_std``.
    Its weights at step ``t`` use the values before ``t`` only (the warm-up included); what it knows
    beyond an agent is the process's law (segment lengths, noise level), not the future. Any causal
    agent's expected MSE is at least this filter's, so the share of the gap between Fixed-Share and
    the regime oracle that it closes is the most any agent can close in expectation.
    """

    name = "bayes_filter"

    @staticmethod
    def _check_setting(core: Any) -> dict[str, Any]:
        family: Any = getattr(core, "family", None)
        names = tuple(getattr(core, "forecaster_names", ()))
        regimes = list(getattr(core, "expert_regimes", ()))
        k = len(names)
        count = tuple(getattr(family, "num_regimes", ()))
        if getattr(family, "name", None) != "switching_ar" or len(regimes) != k or sorted(regimes) != list(range(k)):
            raise ValueError(
                "bayes_filter needs the experts setting: task_family='switching_ar' and forecasters "
                f"expert0..expert{{R-1}} (each regime's true AR(2) model, once each); got task_family="
                f"{getattr(family, 'name', family)!r}, forecasters={names!r}"
            )
        if count != (k, k):
            raise ValueError(
                f"bayes_filter needs a fixed number of regimes equal to the {k} experts: task_family_kwargs "
                f"num_regimes=[{k}, {k}], got {list(count)}"
            )
        return {
            "min_segment": int(family.min_segment),
            "p_end": 1.0 / (max(float(family.mean_segment) - family.min_segment, 0.0) + 1.0),
            "noise_std": float(family.noise_std),
        }

    def _compute_plan(self, rows: np.ndarray) -> np.ndarray:
        model = self._check_setting(self.core)
        values = _take_rows(self.core.values, rows).astype(np.float64)  # (r, T)
        forecasts = _take_rows(self.core.forecasts, rows).astype(np.float64)  # (r, K, T)
        r, k, length = forecasts.shape
        span, p_end = model["min_segment"], model["p_end"]
        # post[:, j, d]: P(regime j, d + 1 steps into its segment (d = span - 1: at least span) | past).
        post = np.zeros((r, k, span))
        post[:, :, 0] = 1.0 / k
        weights = np.zeros((r, length, k))
        for t in range(length):
            weights[:, t] = post.sum(-1)
            z = (forecasts[:, :, t] - values[:, None, t]) / model["noise_std"]
            log_lik = -0.5 * z * z
            post = post * np.exp(log_lik - log_lik.max(-1, keepdims=True))[:, :, None]
            post /= post.sum(axis=(1, 2), keepdims=True)
            end = p_end if t + 1 <= length - span else 0.0  # the generator merges a short last segment
            nxt = np.zeros_like(post)
            nxt[:, :, 1:] = post[:, :, :-1]
            nxt[:, :, -1] += post[:, :, -1] * (1.0 - end)
            leaving = post[:, :, -1] * end
            nxt[:, :, 0] = (leaving.sum(-1, keepdims=True) - leaving) / (k - 1)
            post = nxt
        return weights  # (r, T, K), in the pool's column order (the experts' likelihoods are per column)

    def _plan_weights(self, plan: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
        return plan[np.arange(plan.shape[0]), t].astype(np.float32)


class ShareFilterAgent:
    """Plays the env's first share filter: ``action_mode="residual"`` with the action 0 (an ablation row).

    That is Fixed-Share with the filter's ``(eta, alpha)``, started from the warm-up's errors rather
    than from uniform weights: what an RL² policy in the residual mode plays before it has learned
    any correction. Use it as ``agents.controllers.ensemble:ShareFilterAgent`` (the env adds the
    filter ``[1.0, 0.01]`` unless ``share_filters`` names one).
    """

    action_mode = "residual"

    def __init__(self) -> None:
        self.num_forecasters: int | None = None

    def bind_core(self, core: Any) -> None:
        """Read ``K`` from the env's core (the harness calls this before running)."""
        self.num_forecasters = int(core_of(core).num_forecasters)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        if self.num_forecasters is None:
            raise RuntimeError(
                "ShareFilterAgent must be bound to the env's core first (bind_core; the harness does this)"
            )
        n = np.atleast_2d(_to_numpy(observation)).shape[0]
        return np.zeros((n, self.num_forecasters), dtype=np.float32), state


ENSEMBLE_BASELINES: dict[str, type[EnsembleController]] = {
    cls.name: cls
    for cls in (
        Uniform,
        FollowTheLeader,
        Hedge,
        FixedShare,
        ExponentiatedGradient,
        BestSingleInHindsight,
        RegimeOracle,
        BayesFilter,
    )
}
"""Ensemble baselines by name; ``best_single``, ``regime_oracle`` and ``bayes_filter`` read the core (``bind_core``);
``bayes_filter`` only in the switching-AR experts setting."""
