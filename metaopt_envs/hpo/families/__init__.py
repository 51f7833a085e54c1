"""Black-box objectives for sequential hyperparameter search (``MetaOpt-HPO-v0``).

* :mod:`~metaopt_envs.hpo.families.base`: the :class:`ObjectiveFamily` protocol
  (``sample(keys, split)``, ``evaluate(tasks, x)`` on ``[-1, 1]^max_dim``,
  minimization) and the common task fields (``dim``, ``f_opt``, ``f_ref``,
  ``exact_optimum``, ``x_opt``, ``family``);
* :mod:`~metaopt_envs.hpo.families.synthetic`: ``"branin"`` (d = 2),
  ``"hartmann3"`` (d = 3), ``"hartmann6"`` (d = 6), randomly shifted and
  scaled, exact optima; ``"gp"``, Matérn-5/2 Gaussian-process samples by
  random Fourier features, d in 2..6, estimated optima;
* :mod:`~metaopt_envs.hpo.families.tables`: ``"sklearn"``, tuning problems of
  small scikit-learn models (d = 2 or 3) interpolated from a precomputed
  table, held-out datasets in the test split
  (:mod:`~metaopt_envs.hpo.families.sklearn_problems` defines and rebuilds it);
* :mod:`~metaopt_envs.hpo.families.mixture`: ``"mixture"``, each objective
  from one of several families.
"""

from __future__ import annotations

from typing import Any

from metaopt_envs.core.registry import make_task_family, register_task_family
from metaopt_envs.hpo.families.base import COMMON_FIELDS, REFERENCE_POINTS, ObjectiveFamily, ObjectiveTasks
from metaopt_envs.hpo.families.mixture import DEFAULT_MEMBERS, ObjectiveMixture
from metaopt_envs.hpo.families.synthetic import BraninFamily, GPFamily, Hartmann3Family, Hartmann6Family
from metaopt_envs.hpo.families.tables import TEST_DATASETS, TRAIN_DATASETS, SklearnTableFamily

OBJECTIVE_FAMILIES: dict[str, type[ObjectiveFamily]] = {
    "branin": BraninFamily,
    "hartmann3": Hartmann3Family,
    "hartmann6": Hartmann6Family,
    "gp": GPFamily,
    "sklearn": SklearnTableFamily,
}
"""The built-in objective families by name; ``"mixture"`` draws each objective's family from several of
them (by default ``branin``, ``hartmann3``, ``hartmann6`` and ``gp``)."""

for _name, _family in OBJECTIVE_FAMILIES.items():
    register_task_family("hpo", _name, _family, built_in=True)
register_task_family("hpo", "mixture", ObjectiveMixture, built_in=True)


def make_objective_family(task_family: str | ObjectiveFamily = "mixture", **kwargs: Any) -> ObjectiveFamily:
    """``metaopt_envs.core.registry.make_task_family("hpo", task_family, **kwargs)``.

    For ``"mixture"``: ``members=`` (names or instances, default
    :data:`DEFAULT_MEMBERS`) and ``weights=``.
    """
    return make_task_family("hpo", task_family, **kwargs)  # type: ignore[return-value]


__all__ = [
    "COMMON_FIELDS",
    "DEFAULT_MEMBERS",
    "OBJECTIVE_FAMILIES",
    "REFERENCE_POINTS",
    "TEST_DATASETS",
    "TRAIN_DATASETS",
    "BraninFamily",
    "GPFamily",
    "Hartmann3Family",
    "Hartmann6Family",
    "ObjectiveFamily",
    "ObjectiveMixture",
    "ObjectiveTasks",
    "SklearnTableFamily",
    "make_objective_family",
]
