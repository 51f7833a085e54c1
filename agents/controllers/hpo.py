"""Hand-designed search controllers for MetaOpt-HPO-v0, with SB3's ``predict``.

Every controller answers ``predict(observation, state=None, episode_start=None,
deterministic=True) -> (actions, state)`` on a batch of MetaOpt-HPO-v0 observations
``(n, 2D + 5)`` and emits ``(n, D)`` float32 configurations in ``[-1, 1]``; coordinates
outside a row's active dimensions are 0. ``D`` is read from the observation width,
``D = (obs_dim - 5) / 2``. ``deterministic`` is accepted and ignored: every controller draws
from seeded generators, so its output is a function of ``seed`` and the observations.

Features read (see the env's docstring for the full layout):

- ``obs[0:D]``: the last evaluated configuration (its active coordinates are recorded);
- ``obs[D:2D]``: the mask of the task's active dimensions (1 active, 0 padding);
- ``obs[2D]``: the last normalized value ``y`` (0 = optimum, 1 = a typical random point;
  clipped to ``[-1, 10]`` by the env);
- ``obs[2D + 4]``: the budget used ``t / budget`` (0 at the first decision of an episode).

**Per-row state and the episode-start convention.** Every controller keeps, per row, the
history of the evaluated points of the current episode (``history(row) -> (X (t, d), y (t,))``
in the row's active dimensions) on the controller itself (the SB3 ``state`` argument is passed
through untouched). The state is re-initialised when the batch size or ``D`` changes (every
row is new on the first call). A row starts a new episode when ``episode_start[row]`` is true,
and also when its observation says so without the flag: budget used ``0`` (only the first
decision of an episode has it) or a mask different from the one of the row's episode. At an
episode start the row's history is cleared, its active dimensions are read from the mask, and
its observation is *not* recorded (nothing was evaluated yet); on every later call the row
first appends ``(obs x_last[active], obs y_last)`` to its history, then proposes.

**Randomness.** Each row draws from ``numpy.random.default_rng([seed, row, episode])``, with
``episode`` the number of episodes the row started before on this controller (Sobol and Optuna
seeds are drawn from it), so a run is reproducible with the same ``seed`` and the same sequence
of observations, and a row's draws do not depend on the other rows of the batch.

**Timing.** Every ``predict`` call appends its wall time divided by the number of rows to
``suggest_seconds`` (seconds per suggestion, history bookkeeping included).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch

from agents.controllers.base import Controller
from agents.controllers.base import check_positive as _check_positive
from metaopt_envs.hpo.gp import (  # the one batched GP, shared with MetaOpt-Acquisition-v0
    LOG_LS_BOUNDS,
    LOG_NOISE_BOUNDS,
    LOG_S2_BOUNDS,
    PRIOR_LS_STD,
    PRIOR_NOISE,
    PRIOR_S2,
    expected_improvement,
    fit_log_hyperparameters,
    gp_log_marginal_likelihood,
    gp_posterior,
    log_expected_improvement,
    matern52,
)

__all__ = [
    "GPEI",
    "HPO_BASELINES",
    "HPOController",
    "RandomSearch",
    "Sobol",
    "TPE",
    "expected_improvement",
    "gp_log_marginal_likelihood",
    "gp_posterior",
    "log_expected_improvement",
    "matern52",
    "max_dim",
]


def max_dim(obs_dim: int) -> int:
    """``D`` from the observation width ``2D + 5``; ValueError if the width is not of that form."""
    d, rest = divmod(int(obs_dim) - 5, 2)
    if rest != 0 or d < 1:
        raise ValueError(f"observation width must be 2D + 5 for D >= 1 dimensions (MetaOpt-HPO-v0), got {obs_dim}")
    return d


# ---------------------------------------------------------------------------- validation helpers
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


# ---------------------------------------------------------------------------- base controller
class HPOController(Controller):
    """Base: per-row histories, the episode-start convention, timing, and ``predict``.

    The observation checks, the ``episode_start`` flags and the re-allocation when the batch
    size or ``D`` changes come from :class:`agents.controllers.base.Controller`.
    Subclasses implement :meth:`_propose` (one configuration per row of a list, in the row's
    active dimensions) and may extend :meth:`_reset_row` (fresh per-row state at an episode
    start; ``self.rng[row]`` is already the episode's generator).
    """

    name = "hpo_controller"
    observation_width = "2D + 5"
    _size_from_width = staticmethod(max_dim)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = _check_int("seed", seed, 0)
        self.suggest_seconds: list[float] = []

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments, for result files."""
        return {"seed": self.seed}

    def reset(self) -> None:
        """Forget every row (the next call starts all rows afresh, episode counts from 0); keeps ``suggest_seconds``."""
        self._n = self._size = None

    def history(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The row's evaluated points of this episode: ``X (t, d)`` (active dims) and ``y (t,)``."""
        return self.X[row].copy(), self.Y[row].copy()

    # ----------------------------------------------------------------- observation checks
    @classmethod
    def _check_observation(cls, observation: Any) -> tuple[np.ndarray, int]:
        obs, d = super()._check_observation(observation)
        if not (obs[:, d : 2 * d] > 0.5).any(axis=1).all():
            raise ValueError("observation mask (obs[D:2D]) has a row with no active dimension")
        return obs, d

    # ----------------------------------------------------------------- per-row state
    def _allocate(self, n: int, d: int) -> None:
        self.masks = np.zeros((n, d), dtype=bool)
        self.dims: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in range(n)]
        self.X: list[np.ndarray] = [np.zeros((0, 0)) for _ in range(n)]
        self.Y: list[np.ndarray] = [np.zeros(0) for _ in range(n)]
        self.episodes = np.zeros(n, dtype=np.int64)  # episodes started so far, per row
        self.rng: dict[int, np.random.Generator] = {}  # row -> its episode's generator, set at each episode start

    def _reset_row(self, row: int) -> None:
        d = self.dims[row].size
        self.X[row] = np.zeros((0, d))
        self.Y[row] = np.zeros(0)

    def _propose(self, rows: list[int]) -> list[np.ndarray]:
        raise NotImplementedError

    # ----------------------------------------------------------------- SB3 interface
    def _act(self, observation: Any, episode_start: Any) -> np.ndarray:
        """Configurations ``(n, D)`` float32 for a batch of observations."""
        started = time.perf_counter()
        obs, d, start = self._prepare(observation, episode_start)
        n = obs.shape[0]
        mask = obs[:, d : 2 * d] > 0.5
        start = start | (obs[:, 2 * d + 4] <= 0.0) | (mask != self.masks).any(axis=1)
        for row in range(n):
            if start[row]:
                self.masks[row] = mask[row]
                self.dims[row] = np.flatnonzero(mask[row])
                self.rng[row] = np.random.default_rng([self.seed, row, int(self.episodes[row])])
                self.episodes[row] += 1
                self._reset_row(row)
            else:
                x = obs[row, self.dims[row]]
                self.X[row] = np.concatenate([self.X[row], x[None, :]], axis=0)
                self.Y[row] = np.append(self.Y[row], obs[row, 2 * d])
        proposals = self._propose(list(range(n)))
        actions = np.zeros((n, d), dtype=np.float32)
        for row, x in enumerate(proposals):
            actions[row, self.dims[row]] = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
        self.suggest_seconds.append((time.perf_counter() - started) / n)
        return actions


def _seed_from(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


class RandomSearch(HPOController):
    """Uniform random configurations in the active dimensions (the reference every method must beat)."""

    name = "random"

    def _propose(self, rows: list[int]) -> list[np.ndarray]:
        return [self.rng[r].uniform(-1.0, 1.0, size=self.dims[r].size) for r in rows]


class Sobol(HPOController):
    """A scrambled Sobol sequence per row and episode (``torch.quasirandom.SobolEngine``), mapped to ``[-1, 1]^d``."""

    name = "sobol"

    def _allocate(self, n: int, d: int) -> None:
        super()._allocate(n, d)
        self.engines: dict[int, torch.quasirandom.SobolEngine] = {}  # row -> its episode's sequence

    def _reset_row(self, row: int) -> None:
        super()._reset_row(row)
        self.engines[row] = torch.quasirandom.SobolEngine(
            self.dims[row].size, scramble=True, seed=_seed_from(self.rng[row])
        )

    def _propose(self, rows: list[int]) -> list[np.ndarray]:
        return [self.engines[r].draw(1, dtype=torch.float64)[0].numpy() * 2.0 - 1.0 for r in rows]


Y_TRANSFORMS = ("log", "none")


class GPEI(HPOController):
    """Sequential model-based optimization with a Gaussian process and Expected Improvement.

    - **Initial design:** the first ``num_initial`` points of a row's episode are a scrambled
      Sobol sequence.
    - **Targets:** with ``y_transform="log"`` (default) the GP models
      ``z = log(y - min y + log_shift * (median y - min y))`` over the row's observed values:
      about linear in ``y`` below the median, logarithmic above it, so a few very bad points
      (normalized values up to 10) do not dominate the standardized targets, while the
      resolution near the incumbent is kept at any scale (the shift follows the data; it works
      for the slightly negative values the normalization allows). ``"none"`` models ``y``.
      On Branin, a 4-d sphere, 3-d Rosenbrock and 4-d Styblinski-Tang this was as good as or
      better than ``"none"`` and than ``log(y + c)`` with a fixed ``c``. The targets are then
      standardized per row (mean 0, std 1; ``np.std`` convention).
    - **Model:** zero-mean GP, ``signal_var * Matérn-5/2 ARD(lengthscales) + noise_var``.
      Hyperparameters maximize the log marginal likelihood plus weak log-normal priors
      (``log l ~ N(log(0.5 sqrt(d)), 1)`` per active dim, ``log signal_var ~ N(0, 1.5)``,
      ``log noise_var ~ N(log 1e-3, 2)``) with ``fit_steps`` Adam steps (``lr = fit_lr``) on
      the log-parameters with the analytic gradient, clamped to ``l in [0.01, 20]``, ``signal_var in [0.01, 100]``,
      ``noise_var in [1e-6, 1]``. A row starts from the default (``l = 0.5 sqrt(d)``, 1, 1e-3)
      at its first fit of an episode and from its previous fit afterwards.
    - **Acquisition:** EI (minimization, on the standardized targets, incumbent = the lowest
      observed target, latent std) maximized over ``num_candidates`` scrambled Sobol points
      plus ``num_local`` Gaussian perturbations of the best observed point (scales log-uniform
      in ``[1e-3, 0.3]``), then ``num_local // 4`` perturbations of the 8 best candidates (scales
      in ``[1e-4, 0.03]``); the argmax of log-EI (:func:`log_expected_improvement`) is returned.
    - **Batching:** rows with the same number of observed points are stacked (padded to the
      group's largest ``d`` with zeros, which add nothing to the kernel distances) and go
      through one batched fit, Cholesky and candidate evaluation in float64 torch; the fit and
      the choice of a row do not depend on the other rows of its group.

    ``self.fitted[row]`` holds the row's last hyperparameters (``lengthscales``, ``signal_var``,
    ``noise_var``, in standardized target units).
    """

    name = "gp_ei"

    def __init__(
        self,
        num_initial: int = 5,
        num_candidates: int = 2048,
        seed: int = 0,
        num_local: int = 512,
        fit_steps: int = 60,
        fit_lr: float = 0.1,
        y_transform: str = "log",
        log_shift: float = 1.0,
    ) -> None:
        super().__init__(seed)
        self.num_initial = _check_int("num_initial", num_initial, 1)
        self.num_candidates = _check_int("num_candidates", num_candidates, 1)
        self.num_local = _check_int("num_local", num_local, 0)
        self.fit_steps = _check_int("fit_steps", fit_steps, 0)
        self.fit_lr = _check_positive("fit_lr", fit_lr)
        if y_transform not in Y_TRANSFORMS:
            raise ValueError(f"y_transform must be one of {Y_TRANSFORMS}, got {y_transform!r}")
        self.y_transform = y_transform
        self.log_shift = _check_positive("log_shift", log_shift)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "num_initial": self.num_initial,
            "num_candidates": self.num_candidates,
            "seed": self.seed,
            "num_local": self.num_local,
            "fit_steps": self.fit_steps,
            "fit_lr": self.fit_lr,
            "y_transform": self.y_transform,
            "log_shift": self.log_shift,
        }

    # ----------------------------------------------------------------- bounds and priors
    _LOG_LS, _LOG_S2, _LOG_NOISE = LOG_LS_BOUNDS, LOG_S2_BOUNDS, LOG_NOISE_BOUNDS
    _PRIOR_S2, _PRIOR_NOISE, _PRIOR_LS_STD = PRIOR_S2, PRIOR_NOISE, PRIOR_LS_STD

    @staticmethod
    def _default_log_lengthscale(d: int) -> float:
        return math.log(0.5 * math.sqrt(d))

    def _allocate(self, n: int, d: int) -> None:
        super()._allocate(n, d)
        self.initial_design: dict[int, np.ndarray] = {}  # row -> its episode's Sobol design (num_initial, d)
        self.fitted: list[dict[str, np.ndarray | float] | None] = [None] * n

    def _reset_row(self, row: int) -> None:
        super()._reset_row(row)
        d = self.dims[row].size
        engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=_seed_from(self.rng[row]))
        self.initial_design[row] = engine.draw(self.num_initial, dtype=torch.float64).numpy() * 2.0 - 1.0
        self.fitted[row] = None

    def transform(self, y: np.ndarray) -> np.ndarray:
        """The modelled targets ``z`` of raw normalized values ``y`` (before standardization)."""
        if self.y_transform == "none":
            return np.asarray(y, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        low = float(y.min())
        return np.log(y - low + self.log_shift * (float(np.median(y)) - low) + 1e-12)

    def _propose(self, rows: list[int]) -> list[np.ndarray]:
        out: dict[int, np.ndarray] = {}
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            t = self.Y[r].size
            if t < self.num_initial:
                out[i] = self.initial_design[r][t]
            else:
                groups.setdefault(t, []).append(i)
        for members in groups.values():
            chosen = self._suggest([rows[i] for i in members])
            for i, x in zip(members, chosen):
                out[i] = x
        return [out[i] for i in range(len(rows))]

    # ----------------------------------------------------------------- model fit
    def _fit(self, x, z, dim_mask, rows):
        """Batched MAP fit; returns (lengthscales (B, d), signal_var (B,), noise_var (B,)).

        Adam on the log-parameters with the analytic gradient of the log marginal likelihood,
        ``d lml / d theta = 1/2 tr((alpha alpha^T - K^-1) dK/d theta)`` (no autograd: the fit
        is a few dozen small batched ops per step). Rows are independent: each row's gradient
        depends only on its own data.
        """
        b, _, dmax = x.shape
        dims = dim_mask.sum(-1).to(x.dtype)
        prior_ls = torch.log(0.5 * dims.sqrt())  # (B,)
        log_ls = prior_ls[:, None].repeat(1, dmax)
        log_s2 = torch.zeros(b, dtype=x.dtype)
        log_noise = torch.full((b,), math.log(1e-3), dtype=x.dtype)
        for i, r in enumerate(rows):
            fit = self.fitted[r]
            if fit is not None:
                d = self.dims[r].size
                log_ls[i, :d] = torch.as_tensor(np.log(fit["lengthscales"]))
                log_s2[i] = math.log(fit["signal_var"])
                log_noise[i] = math.log(fit["noise_var"])
        params = [log_ls, log_s2, log_noise]
        fit_log_hyperparameters(x, z, dim_mask, params, self.fit_steps, self.fit_lr)
        ls, s2, noise = (p.exp() for p in params)
        for i, r in enumerate(rows):
            d = self.dims[r].size
            self.fitted[r] = {
                "lengthscales": ls[i, :d].numpy().copy(),
                "signal_var": float(s2[i]),
                "noise_var": float(noise[i]),
            }
        return ls, s2, noise

    # ----------------------------------------------------------------- acquisition
    def _local(self, rng: np.random.Generator, centers: np.ndarray, count: int, low: float, high: float) -> np.ndarray:
        """``count`` Gaussian perturbations of ``centers (k, d)`` (round robin), log-uniform scales, clipped."""
        k, d = centers.shape
        scales = np.exp(rng.uniform(math.log(low), math.log(high), size=(count, 1)))
        base = centers[np.arange(count) % k]
        return np.clip(base + scales * rng.standard_normal((count, d)), -1.0, 1.0)

    def _suggest(self, rows: list[int]) -> list[np.ndarray]:
        b = len(rows)
        dmax = max(self.dims[r].size for r in rows)
        t = self.Y[rows[0]].size
        x = torch.zeros(b, t, dmax, dtype=torch.float64)
        z = torch.zeros(b, t, dtype=torch.float64)
        dim_mask = torch.zeros(b, dmax, dtype=torch.bool)
        for i, r in enumerate(rows):
            d = self.dims[r].size
            x[i, :, :d] = torch.as_tensor(self.X[r])
            zr = self.transform(self.Y[r])
            sd = zr.std()
            z[i] = torch.as_tensor((zr - zr.mean()) / (sd if sd > 1e-12 else 1.0))
            dim_mask[i, :d] = True
        ls, s2, noise = self._fit(x, z, dim_mask, rows)
        best = z.min(-1).values[:, None]  # (B, 1)

        def score(cands: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                mean, std = gp_posterior(x, z, cands, ls, s2, noise)
                return log_expected_improvement(mean, std, best)

        n_global, n_local = self.num_candidates, self.num_local
        cands = torch.zeros(b, n_global + n_local, dmax, dtype=torch.float64)
        for i, r in enumerate(rows):
            d, rng = self.dims[r].size, self.rng[r]
            engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=_seed_from(rng))
            cands[i, :n_global, :d] = engine.draw(n_global, dtype=torch.float64) * 2.0 - 1.0
            if n_local:
                incumbent = self.X[r][np.argmin(self.Y[r])][None, :]
                cands[i, n_global:, :d] = torch.as_tensor(self._local(rng, incumbent, n_local, 1e-3, 0.3))
        values = score(cands)
        n_refine = n_local // 4
        if n_refine:
            top = values.topk(min(8, values.shape[1]), dim=-1).indices  # (B, k)
            refine = torch.zeros(b, n_refine, dmax, dtype=torch.float64)
            for i, r in enumerate(rows):
                d = self.dims[r].size
                centers = cands[i, top[i], :d].numpy()
                refine[i, :, :d] = torch.as_tensor(self._local(self.rng[r], centers, n_refine, 1e-4, 0.03))
            cands = torch.cat([cands, refine], dim=1)
            values = torch.cat([values, score(refine)], dim=1)
        pick = values.argmax(-1)
        return [cands[i, pick[i], : self.dims[r].size].numpy().copy() for i, r in enumerate(rows)]


class TPE(HPOController):
    """Optuna's Tree-structured Parzen Estimator: one study per row and episode, ``ask`` / ``tell``.

    The row's study asks for ``x0 .. x{d-1}`` with ``suggest_float(-1, 1)`` and is told the
    normalized value the env reports for that trial (minimization). The sampler is
    ``optuna.samplers.TPESampler(seed=<row seed>, n_startup_trials=..., multivariate=...)``
    with Optuna's other defaults; Optuna's logging is set to warnings only.
    """

    name = "tpe"

    def __init__(self, seed: int = 0, n_startup_trials: int = 5, multivariate: bool = False) -> None:
        super().__init__(seed)
        self.n_startup_trials = _check_int("n_startup_trials", n_startup_trials, 0)
        if not isinstance(multivariate, (bool, np.bool_)):
            raise ValueError(f"multivariate must be a bool, got {multivariate!r}")
        self.multivariate = bool(multivariate)
        import optuna  # optional dependency: only this baseline needs it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna

    def hyperparameters(self) -> dict[str, Any]:
        return {"seed": self.seed, "n_startup_trials": self.n_startup_trials, "multivariate": self.multivariate}

    def _allocate(self, n: int, d: int) -> None:
        super()._allocate(n, d)
        self.studies: list[Any] = [None] * n
        self.pending: list[Any] = [None] * n

    def _reset_row(self, row: int) -> None:
        super()._reset_row(row)
        optuna = self._optuna
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=_seed_from(self.rng[row]), n_startup_trials=self.n_startup_trials, multivariate=self.multivariate
            )
        self.studies[row] = optuna.create_study(direction="minimize", sampler=sampler)
        self.pending[row] = None

    def _propose(self, rows: list[int]) -> list[np.ndarray]:
        out = []
        for r in rows:
            study = self.studies[r]
            if self.pending[r] is not None and self.Y[r].size:
                study.tell(self.pending[r], float(self.Y[r][-1]))
            trial = study.ask()
            out.append(np.array([trial.suggest_float(f"x{i}", -1.0, 1.0) for i in range(self.dims[r].size)]))
            self.pending[r] = trial
        return out


HPO_BASELINES: dict[str, type[HPOController]] = {cls.name: cls for cls in (RandomSearch, Sobol, GPEI, TPE)}
"""HPO baselines by name: ``random``, ``sobol``, ``gp_ei``, ``tpe``."""
