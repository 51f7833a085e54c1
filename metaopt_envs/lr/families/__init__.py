"""Inner problems and task families of MetaOpt-LR-v0: batched losses in torch with seeded train/test samplers.

The built-in families are registered as kind ``"lr"`` of the one registry
(:mod:`metaopt_envs.core.registry`): ``make_task_family("lr", name, **kwargs)``.
"""

from __future__ import annotations

from typing import Any

from metaopt_envs.core.registry import make_task_family as _make_task_family
from metaopt_envs.core.registry import register_task_family
from metaopt_envs.lr.families.base import SPLITS, LRTaskFamily, TaskData
from metaopt_envs.lr.families.logistic import LogisticRegressionFamily
from metaopt_envs.lr.families.mixture import MixtureFamily
from metaopt_envs.lr.families.mlp import SKLEARN_DATASETS, SinusoidMLPFamily, SklearnMLPFamily
from metaopt_envs.lr.families.module import KeyedDropout, ModuleFamily, TensorPool, cross_entropy, mse
from metaopt_envs.lr.families.quadratic import NoisyQuadraticFamily
from metaopt_envs.lr.families.realistic import REALISTIC_FAMILIES

TaskFamily = LRTaskFamily
"""The name earlier releases gave :class:`LRTaskFamily` (kept so that existing imports work)."""

TASK_FAMILIES: dict[str, type[LRTaskFamily]] = {
    "quadratic": NoisyQuadraticFamily,
    "logistic": LogisticRegressionFamily,
    "sinusoid": SinusoidMLPFamily,
    "sklearn": SklearnMLPFamily,
}
"""The built-in families by name; ``"mixture"`` draws uniformly from all of them."""

for _name, _family in TASK_FAMILIES.items():
    register_task_family("lr", _name, _family, built_in=True)
register_task_family("lr", "mixture", MixtureFamily, built_in=True)
# The realistic suite on ModuleFamily (not in TASK_FAMILIES: the default mixture keeps its four members).
for _name, _module_family in REALISTIC_FAMILIES.items():
    register_task_family("lr", _name, _module_family, built_in=True)


def make_task_family(task_family: str | LRTaskFamily = "mixture", **kwargs: Any) -> LRTaskFamily:
    """``metaopt_envs.core.registry.make_task_family("lr", task_family, **kwargs)``.

    For ``"mixture"``: ``members=`` (names or instances, default the four
    built-ins) and ``weights=`` (one per member).
    """
    return _make_task_family("lr", task_family, **kwargs)  # type: ignore[return-value]


__all__ = [
    "REALISTIC_FAMILIES",
    "SKLEARN_DATASETS",
    "SPLITS",
    "TASK_FAMILIES",
    "KeyedDropout",
    "LRTaskFamily",
    "LogisticRegressionFamily",
    "MixtureFamily",
    "ModuleFamily",
    "NoisyQuadraticFamily",
    "SinusoidMLPFamily",
    "SklearnMLPFamily",
    "TaskData",
    "TaskFamily",
    "TensorPool",
    "cross_entropy",
    "make_task_family",
    "mse",
]
