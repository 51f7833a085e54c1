"""Hand-designed acquisition functions for MetaOpt-Acquisition-v0 (the learned-acquisition variant of HPO).

Every controller reads the per-candidate GP posterior of the observation (reshaped to
``(n, num_candidates, 4 + D)``: mean, std, incumbent, budget used, coordinates) and emits a
one-hot score vector in ``[-1, 1]`` (1 on the chosen candidate, -1 elsewhere), so the env
evaluates exactly the candidate the rule picks:

- ``acq_ei``: Expected Improvement (for minimization, :func:`metaopt_envs.hpo.gp.log_expected_improvement`),
  i.e. GP-EI restricted to the env's candidates and GP fit;
- ``acq_ucb``: the lower confidence bound ``mean - beta * std`` (lowest is chosen);
- ``acq_random``: a uniformly random candidate (random search over the candidate sets).

The number of candidates is read from the env's core when the evaluator binds the controller
(``bind_core``), or given as ``num_candidates``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.controllers.base import Controller, check_positive, core_of
from metaopt_envs.hpo.acquisition import CANDIDATE_FEATURES
from metaopt_envs.hpo.gp import log_expected_improvement

__all__ = ["ACQUISITION_BASELINES", "AcquisitionController", "ExpectedImprovementScores", "LowerConfidenceBound"]

_MEAN, _STD, _INCUMBENT = (CANDIDATE_FEATURES.index(name) for name in ("mean", "std", "incumbent"))


class AcquisitionController(Controller):
    """Base: splits the observation into candidates and turns per-candidate values into a one-hot choice."""

    name = "acquisition"
    observation_width = "num_candidates * (4 + D)"

    def __init__(self, num_candidates: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if num_candidates is not None and (isinstance(num_candidates, bool) or int(num_candidates) < 2):
            raise ValueError(f"num_candidates must be an int >= 2 or None (read from the env), got {num_candidates!r}")
        self.num_candidates = None if num_candidates is None else int(num_candidates)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def hyperparameters(self) -> dict[str, Any]:
        return {"num_candidates": self.num_candidates, "seed": self.seed}

    def bind_core(self, core: Any) -> None:
        """Read ``num_candidates`` from the env (the evaluator calls this before running)."""
        self.num_candidates = int(core_of(core).num_candidates)
        self.rng = np.random.default_rng(self.seed)

    def candidates(self, observation: Any) -> np.ndarray:
        """The observation as ``(n, num_candidates, 4 + D)`` float64."""
        obs = np.asarray(observation, dtype=np.float64)
        obs = obs[None, :] if obs.ndim == 1 else obs
        count = self.num_candidates or 64
        if obs.ndim != 2 or obs.shape[1] % count or obs.shape[1] // count <= len(CANDIDATE_FEATURES):
            raise ValueError(
                f"observation must have shape (n, {self.observation_width}) with num_candidates={count}, got "
                f"{np.shape(observation)}; pass num_candidates= or let the evaluator bind the env (bind_core)"
            )
        if not np.isfinite(obs).all():
            raise ValueError("observation contains NaN or inf")
        return obs.reshape(obs.shape[0], count, -1)

    def values(self, candidates: np.ndarray) -> np.ndarray:
        """Per-candidate values ``(n, num_candidates)``; the highest is chosen."""
        raise NotImplementedError

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        values = self.values(self.candidates(observation))
        scores = -np.ones(values.shape, dtype=np.float32)
        scores[np.arange(values.shape[0]), values.argmax(-1)] = 1.0
        return scores, state


class ExpectedImprovementScores(AcquisitionController):
    """Expected Improvement over the incumbent (minimization) at each candidate."""

    name = "acq_ei"

    def values(self, candidates: np.ndarray) -> np.ndarray:
        c = torch.as_tensor(candidates)
        std = c[..., _STD].clamp_min(1e-12)
        return log_expected_improvement(c[..., _MEAN], std, c[..., _INCUMBENT]).numpy()


class LowerConfidenceBound(AcquisitionController):
    """The candidate with the lowest ``mean - beta * std``."""

    name = "acq_ucb"

    def __init__(self, beta: float = 2.0, num_candidates: int | None = None, seed: int = 0) -> None:
        super().__init__(num_candidates, seed)
        self.beta = check_positive("beta", beta)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "beta": self.beta}

    def values(self, candidates: np.ndarray) -> np.ndarray:
        return -(candidates[..., _MEAN] - self.beta * candidates[..., _STD])


class RandomCandidate(AcquisitionController):
    """A uniformly random candidate each decision."""

    name = "acq_random"

    def values(self, candidates: np.ndarray) -> np.ndarray:
        return self.rng.random(candidates.shape[:2])


ACQUISITION_BASELINES: dict[str, type[AcquisitionController]] = {
    cls.name: cls for cls in (ExpectedImprovementScores, LowerConfidenceBound, RandomCandidate)
}
"""MetaOpt-Acquisition-v0 baselines by name: ``acq_ei``, ``acq_ucb``, ``acq_random``."""
