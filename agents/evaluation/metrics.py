"""The numbers every family's evaluation shares, written once: seeds, win rate, divergence, gap closed."""

from __future__ import annotations

import numpy as np

TEST_SEED_OFFSET = 10_000
SEED_STRIDE = 2**20
"""Evaluation seed ``s`` resets the test tasks with ``TEST_SEED_OFFSET + s * SEED_STRIDE`` (row ``i``: ``+ i``),
so the tasks of different seeds are disjoint for any ``num_tasks`` below 2**20. (Until 2026-12-02 it was
``TEST_SEED_OFFSET + s``: seed 1's tasks were seed 0's shifted by one row.)"""

TUNE_SEED = 12345
"""The seed of the training-split tasks that baselines are tuned on."""


def evaluation_seed(seed: int) -> int:
    """The reset seed of evaluation seed ``seed`` (seed 0 is ``TEST_SEED_OFFSET``; each next one ``SEED_STRIDE`` on)."""
    return TEST_SEED_OFFSET + int(seed) * SEED_STRIDE


def win_rate(values: np.ndarray, reference: np.ndarray) -> float:
    """Share of tasks where ``values`` is lower than ``reference`` (lower is better); a tie counts half."""
    values, reference = np.asarray(values), np.asarray(reference)
    return float(np.mean(values < reference) + 0.5 * np.mean(values == reference))


def diverged_percent(diverged: np.ndarray) -> float:
    """Percentage of runs that diverged."""
    return 100.0 * float(np.mean(diverged))


def gap_closed(values: np.ndarray, reference: np.ndarray, oracle: np.ndarray) -> float | None:
    """``(mean_ref - mean) / (mean_ref - mean_oracle)``, on means; None when the gap is empty."""
    span = np.mean(reference) - np.mean(oracle)
    return float((np.mean(reference) - np.mean(values)) / span) if abs(span) > 1e-12 else None


def per_family(
    values: np.ndarray, family: np.ndarray, families: tuple[str, ...], statistic=np.mean
) -> dict[str, float]:
    """``statistic`` of ``values`` per family name (families with no task are left out)."""
    return {name: float(statistic(values[family == i])) for i, name in enumerate(families) if (family == i).any()}


__all__ = [
    "SEED_STRIDE",
    "TEST_SEED_OFFSET",
    "TUNE_SEED",
    "diverged_percent",
    "evaluation_seed",
    "gap_closed",
    "per_family",
    "win_rate",
]
