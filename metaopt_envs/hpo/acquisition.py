"""The batched core of MetaOpt-Acquisition-v0: the search of MetaOpt-HPO-v0 with a learned acquisition function.

In the style of MetaBO (Volpp et al., 2020): every step, each row fits a Gaussian process to the
configurations it evaluated so far (the batched GP of :mod:`metaopt_envs.hpo.gp`, the one the
GP-EI baseline uses), proposes ``num_candidates`` points (a randomly shifted Sobol set plus
perturbations of the incumbent, or with ``candidate_pool`` the best-EI points of a larger pool)
and shows, per candidate, the posterior mean and standard deviation, the incumbent, the budget
used and the point's coordinates. The action scores the candidates; the best-scored one is
evaluated next. The objectives, their normalization, the rewards and the episode are those of
:class:`metaopt_envs.hpo.core.HPOCore`, which this core drives (same task keys, so the same seeds
give the same objectives in both ids). See :class:`metaopt_envs.hpo.env.MetaOptAcquisitionEnv`
for the documentation.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import BatchedCore, StepResult, checks, rng
from metaopt_envs.hpo import gp
from metaopt_envs.hpo.core import HPOCore
from metaopt_envs.hpo.families import ObjectiveFamily

CANDIDATE_FEATURES = ("mean", "std", "incumbent", "budget_used")
"""The per-candidate features before the coordinates."""
POSTERIOR_CLIP = 10.0
"""Means and the incumbent are clipped to [-10, 10] and std to [0, 10] (standardized target units)."""
LOCAL_SCALES = (1e-3, 0.3)
"""Log-uniform range of the perturbation scales of the incumbent's neighbours."""
REFINE_SCALES = (1e-4, 0.03)
"""Log-uniform range of the perturbation scales of the pool's refinement round (around its best-EI points)."""
REFINE_CENTRES = 8
"""The pool's refinement round perturbs its ``REFINE_CENTRES`` best-EI points (GP-EI's round)."""
_STREAM = 0x5EA4C8  # the key stream of the candidates, apart from every task stream
_DESIGN_STREAM = 0x5EA4C9  # the key stream of the initial design's shift


def candidate_feature_names(max_dim: int) -> tuple[str, ...]:
    """Names of one candidate's features (``4 + D``)."""
    return (*CANDIDATE_FEATURES, *(f"x[{i}]" for i in range(max_dim)))


class AcquisitionCore(BatchedCore):
    """A learned acquisition function over the searches of ``num_envs`` objectives; see ``MetaOptAcquisitionEnv``."""

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
        num_candidates: int = 64,
        num_local: int = 16,
        fit_steps: int = 30,
        fit_lr: float = 0.1,
        y_transform: str = "log",
        candidate_pool: int = 0,
        num_initial: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.search = HPOCore(
            num_envs, task_family, task_family_kwargs, split, budget, reward_mode, regret_floor, max_dim, device
        )
        self.num_candidates = checks.integer("num_candidates", num_candidates, minimum=2, note="points per decision")
        self.num_local = checks.integer(
            "num_local", num_local, minimum=0, note="perturbations of the incumbent, < num_candidates"
        )
        if self.num_local >= self.num_candidates:
            raise ValueError(
                f"num_local must be smaller than num_candidates={self.num_candidates} (the rest is the "
                f"Sobol set), got {self.num_local}"
            )
        self.fit_steps = checks.integer("fit_steps", fit_steps, minimum=0, note="Adam steps of the GP fit per decision")
        self.fit_lr = checks.finite_float("fit_lr", fit_lr, low=0.0, low_open=True)
        checks.choice("y_transform", y_transform, ("log", "none"))
        self.y_transform = y_transform
        self.candidate_pool = checks.integer(
            "candidate_pool", candidate_pool, minimum=0, note="0: no pool, else >= num_candidates"
        )
        if 0 < self.candidate_pool < max(self.num_candidates, 4 * self.num_local):
            raise ValueError(
                f"candidate_pool must be 0 (no pool) or >= num_candidates={self.num_candidates} and >= 4 * "
                f"num_local={4 * self.num_local} (the shown candidates are the best-EI points of its Sobol "
                f"and local parts), got {self.candidate_pool}"
            )
        s = self.search
        self.num_initial = checks.integer(
            "num_initial", num_initial, minimum=0, note="initial-design evaluations per search, < budget"
        )
        if self.num_initial >= s.budget:
            raise ValueError(
                f"num_initial must be smaller than budget={s.budget} (the rest are the policy's choices), "
                f"got {self.num_initial}"
            )
        self.num_envs, self.device, self.family, self.split = s.num_envs, s.device, s.family, s.split
        self.budget = self.num_decisions = s.budget
        self.max_dim = d = s.max_dim
        n, f = self.num_candidates, len(CANDIDATE_FEATURES) + d
        self.num_features = f
        self.observation_names = tuple(
            f"{name}@{c}" for c in range(n) for name in candidate_feature_names(d)
        )  # candidate-major: reshape to (num_candidates, 4 + D)
        clip = POSTERIOR_CLIP
        low = np.tile(np.concatenate([[-clip, 0.0, -clip, 0.0], -np.ones(d)]), n).astype(np.float32)
        high = np.tile(np.concatenate([[clip, clip, clip, 1.0], np.ones(d)]), n).astype(np.float32)
        self.single_observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        # One scrambled Sobol set on [0, 1)^D; each row and decision shifts it at random (modulo 1).
        engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=0)
        sobol_size = self.candidate_pool or n - self.num_local
        self.sobol = engine.draw(sobol_size, dtype=torch.float64).to(self.device)
        # The initial design: the first num_initial points of another scrambled Sobol set, shifted per row.
        design_engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=1)
        self.design = design_engine.draw(max(self.num_initial, 1), dtype=torch.float64).to(self.device)
        b, dev, t = self.num_envs, self.device, self.budget
        self.X = torch.zeros(b, t, d, dtype=torch.float64, device=dev)
        self.Y = torch.zeros(b, t, dtype=torch.float64, device=dev)
        self.log_params = [
            torch.zeros(b, d, dtype=torch.float64, device=dev),
            torch.zeros(b, dtype=torch.float64, device=dev),
            torch.zeros(b, dtype=torch.float64, device=dev),
        ]
        self.candidates = torch.zeros(b, n, d, dtype=torch.float64, device=dev)
        self.features = torch.zeros(b, n, f, dtype=torch.float32, device=dev)
        self._start(torch.arange(b, device=dev))

    # The search's per-row key counters are this core's (a wrapper reads them through).
    row_key = property(lambda self: self.search.row_key)
    episode_index = property(lambda self: self.search.episode_index)
    inner_episode = property(lambda self: self.search.inner_episode)
    task_key = property(lambda self: self.search.task_key)

    def __getattr__(self, name: str):
        # The search's attributes (regret_floor, tasks, t, mask, ...) read through this core.
        if name == "search":
            raise AttributeError(name)
        return getattr(self.search, name)

    def reset_rows(self, rows: torch.Tensor, keys: torch.Tensor | None = None, same_task: bool = False) -> None:
        self.search.reset_rows(rows, keys, same_task)
        index = rows.nonzero().squeeze(-1)
        if index.numel():
            self._start(index)

    def _start(self, index: torch.Tensor) -> None:
        """Rows ``index`` at the start of a search: no data, the GP's prior, fresh candidates."""
        self.X[index] = 0.0
        self.Y[index] = 0.0
        prior = gp.default_hyperparameters(self.search.mask[index] > 0)
        for stored, value in zip(self.log_params, prior):
            stored[index] = value.log()
        self._refresh(index)

    def observe(self) -> torch.Tensor:
        return self.features.reshape(self.num_envs, -1).clone()

    # ------------------------------------------------------------------ the model
    def targets(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardized GP targets ``z (k, T)`` of rows ``index`` (0 on padding) and the point mask ``(k, T)``.

        As the GP-EI baseline: with ``y_transform="log"`` ``z = log(y - min y + (median y - min y))``
        over the row's values, then mean 0 and std 1 per row (a constant row is only centred).
        """
        t = self.search.t[index]
        y = self.Y[index]
        valid = torch.arange(self.budget, device=self.device) < t.unsqueeze(-1)
        count = t.clamp_min(1).to(torch.float64)
        if self.y_transform == "log":
            ordered = torch.where(valid, y, torch.full_like(y, math.inf)).sort(-1).values
            low = ordered[:, :1]
            middle = 0.5 * (
                ordered.gather(-1, ((t - 1).clamp_min(0) // 2).unsqueeze(-1))
                + ordered.gather(-1, (t // 2).clamp(max=self.budget - 1).unsqueeze(-1))
            )
            low = torch.where(t.unsqueeze(-1) > 0, low, torch.zeros_like(low))
            middle = torch.where(t.unsqueeze(-1) > 0, middle, torch.zeros_like(middle))
            z = torch.log((y - low + (middle - low)).clamp_min(0.0) + 1e-12)
        else:
            z = y
        z = torch.where(valid, z, torch.zeros_like(z))
        mean = z.sum(-1, keepdim=True) / count.unsqueeze(-1)
        centred = torch.where(valid, z - mean, torch.zeros_like(z))
        std = (centred.pow(2).sum(-1, keepdim=True) / count.unsqueeze(-1)).sqrt()
        z = centred / torch.where(std > 1e-12, std, torch.ones_like(std))
        return z, valid

    def _refresh(self, index: torch.Tensor) -> None:
        """Fit rows ``index``'s GPs, draw their candidates and compute their features."""
        s = self.search
        t = s.t[index]
        dim_mask = s.mask[index] > 0
        maskd = dim_mask.to(torch.float64)
        x = self.X[index]
        z, valid = self.targets(index)
        params = [p[index] for p in self.log_params]
        if self.fit_steps:
            gp.fit_log_hyperparameters(x, z, dim_mask, params, self.fit_steps, self.fit_lr, point_mask=valid)
        for stored, value in zip(self.log_params, params):
            stored[index] = value
        ls, s2, noise = (p.exp() for p in params)
        # Candidates: the Sobol set shifted by a uniform vector, then neighbours of the incumbent
        # (with a pool: the pool, of which the best-EI points are shown).
        key = rng.fold(s.task_key[index], _STREAM, s.inner_episode[index], t)
        shift = rng.uniform(rng.fold(key, 0), (self.max_dim,), torch.float64)
        globals_ = torch.remainder(self.sobol.unsqueeze(0) + shift.unsqueeze(1), 1.0) * 2.0 - 1.0
        k = index.numel()
        m = self.candidate_pool // 4 if self.candidate_pool else self.num_local
        has_data = (t > 0).unsqueeze(-1).unsqueeze(-1)
        z_min, best_pos = torch.where(valid, z, torch.full_like(z, math.inf)).min(-1)
        incumbent_x = x.gather(1, best_pos.view(k, 1, 1).expand(k, 1, self.max_dim))
        scales = torch.exp(
            math.log(LOCAL_SCALES[0])
            + rng.uniform(rng.fold(key, 1), (m, 1), torch.float64) * math.log(LOCAL_SCALES[1] / LOCAL_SCALES[0])
        )
        local = (incumbent_x + scales * rng.normal(rng.fold(key, 2), (m, self.max_dim), torch.float64)).clamp(-1, 1)
        uniform = rng.uniform(rng.fold(key, 3), (m, self.max_dim), torch.float64) * 2.0 - 1.0
        local = torch.where(has_data, local, uniform)
        candidates = torch.cat([globals_, local], dim=1) * maskd.unsqueeze(1)
        incumbent = torch.where(t > 0, z_min, torch.zeros_like(z_min))
        if self.candidate_pool:
            candidates = self._best_of_pool(key, candidates, maskd, x, z, valid, incumbent, (ls, s2, noise))
        if self.num_initial:
            # The first num_initial evaluations are the design: every candidate is the design's next point
            # (so any action evaluates it, and an equivariant policy's choice there carries no gradient).
            design_key = rng.fold(s.task_key[index], _DESIGN_STREAM, s.inner_episode[index])
            shift = rng.uniform(design_key, (self.max_dim,), torch.float64)
            point = torch.remainder(self.design[t.clamp(max=self.num_initial - 1)] + shift, 1.0) * 2.0 - 1.0
            early = (t < self.num_initial).view(k, 1, 1)
            candidates = torch.where(early, (point * maskd).unsqueeze(1).expand_as(candidates), candidates)
        with torch.no_grad():
            mean, std = gp.gp_posterior(x, z, candidates, ls, s2, noise, point_mask=valid)
        clip = POSTERIOR_CLIP
        budget_used = (t.to(torch.float64) / self.budget).unsqueeze(-1).expand(k, self.num_candidates)
        features = torch.cat(
            [
                mean.clamp(-clip, clip).unsqueeze(-1),
                std.clamp(0.0, clip).unsqueeze(-1),
                incumbent.clamp(-clip, clip).view(k, 1, 1).expand(k, self.num_candidates, 1),
                budget_used.unsqueeze(-1),
                candidates,
            ],
            dim=-1,
        )
        self.candidates[index] = candidates
        self.features[index] = torch.nan_to_num(features, nan=0.0).to(torch.float32)

    def _best_of_pool(
        self,
        key: torch.Tensor,
        pool: torch.Tensor,
        maskd: torch.Tensor,
        x: torch.Tensor,
        z: torch.Tensor,
        valid: torch.Tensor,
        incumbent: torch.Tensor,
        hyperparameters: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """The shown candidates ``(k, num_candidates, D)``: the best-EI points of a row's pool.

        ``pool (k, P + P // 4, D)``: the shifted Sobol set and the incumbent's neighbours. As GP-EI's
        refinement round, ``P // 16`` perturbations (scales log-uniform in ``REFINE_SCALES``) of the
        pool's ``REFINE_CENTRES`` best-EI points join it. Shown: the ``num_candidates - num_local``
        best-EI Sobol points, then the ``num_local`` best-EI local points (neighbours and refinement),
        each best first; ties (a row without data, where EI is flat) keep the pool's order (stable sort).
        """
        ls, s2, noise = hyperparameters
        best = incumbent.unsqueeze(-1)

        def log_ei(points: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                mean, std = gp.gp_posterior(x, z, points, ls, s2, noise, point_mask=valid)
            return gp.log_expected_improvement(mean, std, best)

        values = log_ei(pool)
        count = self.candidate_pool // 16
        if count:
            k, centres = pool.shape[0], min(REFINE_CENTRES, pool.shape[1])
            top = values.sort(dim=-1, descending=True, stable=True).indices[:, :centres]
            centre_x = pool.gather(1, top.unsqueeze(-1).expand(k, centres, self.max_dim))
            base = centre_x[:, torch.arange(count, device=self.device) % centres]  # round robin
            low, high = REFINE_SCALES
            scales = torch.exp(
                math.log(low) + rng.uniform(rng.fold(key, 4), (count, 1), torch.float64) * math.log(high / low)
            )
            refine = (base + scales * rng.normal(rng.fold(key, 5), (count, self.max_dim), torch.float64)).clamp(-1, 1)
            refine = refine * maskd.unsqueeze(1)
            pool = torch.cat([pool, refine], dim=1)
            values = torch.cat([values, log_ei(refine)], dim=1)
        # The best of the Sobol part and, apart, the best of the local part (neighbours and refinement):
        # the pool's best-EI point is shown either way, and the Sobol part keeps the set spread out (the
        # overall best-EI points are one tight cluster around the best point).
        sobol, local = self.candidate_pool, self.num_local
        best_global = (
            values[:, :sobol].sort(dim=-1, descending=True, stable=True).indices[:, : self.num_candidates - local]
        )
        best_local = sobol + values[:, sobol:].sort(dim=-1, descending=True, stable=True).indices[:, :local]
        order = torch.cat([best_global, best_local], dim=1)
        return pool.gather(1, order.unsqueeze(-1).expand(-1, -1, self.max_dim))

    # ------------------------------------------------------------------ a decision
    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """Evaluate each row's best-scored candidate (``actions: (B, num_candidates)``; ties: the first)."""
        scores = checks.actions(actions, self.num_envs, self.single_action_space, self.device)
        choice = scores.argmax(-1)
        rows = torch.arange(self.num_envs, device=self.device)
        chosen = self.candidates[rows, choice]
        position = self.search.t.clone()
        result = self.search.step(chosen.to(torch.float32))
        self.X[rows, position] = self.search.x.to(torch.float64)
        self.Y[rows, position] = result.info["regret"].to(torch.float64)
        self._refresh(rows)
        info = dict(result.info, candidate=choice)
        return StepResult(self.observe(), result.reward, result.terminated, result.truncated, info)


__all__ = ["CANDIDATE_FEATURES", "AcquisitionCore", "candidate_feature_names"]
