"""Statistics over tasks, through SciPy: the interquartile mean and percentile bootstrap CIs.

``iqm`` is ``scipy.stats.trim_mean(x, 0.25)``, the mean of the middle 50% (Agarwal et al., 2021);
``bootstrap_ci`` is ``scipy.stats.bootstrap`` with ``method="percentile"``, vectorized, on a
generator seeded with ``seed``, so the same values give the same interval. SciPy draws its
resamples as ``rng.integers(0, n, (num_resamples, n))`` and takes linear quantiles, the
estimator this project used before (see the evaluation redesign's report for the measured
differences).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
NUM_RESAMPLES = 1000


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean over ``axis``: ``scipy.stats.trim_mean(values, 0.25)``."""
    result = stats.trim_mean(np.asarray(values, dtype=np.float64), 0.25, axis=axis)
    return float(result) if np.ndim(result) == 0 else result


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[..., np.ndarray | float],
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap ``confidence`` interval of ``statistic`` over tasks (``scipy.stats.bootstrap``).

    ``statistic(x, axis=-1)`` must reduce along ``axis`` (``np.mean``, ``np.median``, :func:`iqm`).
    With fewer than two values every resample is the sample itself: the interval is the statistic.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size < 2:
        point = float(statistic(values, axis=-1))
        return point, point
    result = stats.bootstrap(
        (values,),
        statistic,
        n_resamples=num_resamples,
        confidence_level=confidence,
        method=method,
        vectorized=True,
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


__all__ = ["CONFIDENCE", "NUM_RESAMPLES", "bootstrap_ci", "iqm"]
