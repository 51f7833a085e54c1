"""Inner problems and task families: batched losses in torch with seeded train/test samplers."""

from __future__ import annotations

from typing import Any

from metaopt_envs.lr.families.base import SPLITS, TaskData, TaskFamily
from metaopt_envs.lr.families.logistic import LogisticRegressionFamily
from metaopt_envs.lr.families.mixture import MixtureFamily
from metaopt_envs.lr.families.mlp import SKLEARN_DATASETS, SinusoidMLPFamily, SklearnMLPFamily
from metaopt_envs.lr.families.quadratic import NoisyQuadraticFamily

TASK_FAMILIES: dict[str, type[TaskFamily]] = {
    "quadratic": NoisyQuadraticFamily,
    "logistic": LogisticRegressionFamily,
    "sinusoid": SinusoidMLPFamily,
    "sklearn": SklearnMLPFamily,
}
"""The built-in families by name; ``"mixture"`` draws uniformly from all of them."""


def make_task_family(task_family: str | TaskFamily = "mixture", **kwargs: Any) -> TaskFamily:
    """A task family from its name (``TASK_FAMILIES`` or ``"mixture"``), or a user's instance as is.

    ``kwargs`` go to the family's constructor; for ``"mixture"``, ``weights=``
    sets the probability of each built-in family (in ``TASK_FAMILIES`` order).
    """
    if isinstance(task_family, TaskFamily):
        if kwargs:
            raise ValueError("task_family_kwargs cannot be combined with a TaskFamily instance")
        return task_family
    if task_family == "mixture":
        return MixtureFamily([cls() for cls in TASK_FAMILIES.values()], **kwargs)
    if task_family not in TASK_FAMILIES:
        allowed = (*TASK_FAMILIES, "mixture")
        raise ValueError(f"task_family must be one of {allowed} or a TaskFamily instance, got {task_family!r}")
    return TASK_FAMILIES[task_family](**kwargs)


__all__ = [
    "SKLEARN_DATASETS",
    "SPLITS",
    "TASK_FAMILIES",
    "LogisticRegressionFamily",
    "MixtureFamily",
    "NoisyQuadraticFamily",
    "SinusoidMLPFamily",
    "SklearnMLPFamily",
    "TaskData",
    "TaskFamily",
    "make_task_family",
]
