"""The objective-family protocol: seeded samplers of batched black-box objectives on ``[-1, 1]^d``.

An :class:`ObjectiveFamily` (a :class:`metaopt_envs.core.family.TaskFamily` of
kind ``"hpo"``) draws ``n`` objectives (minimization problems) at
once with ``sample(keys, split)`` and returns plain data (:data:`ObjectiveTasks`,
a ``dict`` of tensors whose leading dimension is ``n``); ``evaluate(tasks, x)``
computes the ``n`` values of one configuration per objective, batched, with
tensor operations only (it runs at every environment step). Every family
returns at least these fields:

===================  =========================  ===========================================================
field                shape, dtype               meaning
===================  =========================  ===========================================================
``dim``              ``(n,)`` int64             the objective's dimension ``d <= max_dim``; coordinates
                                                ``>= d`` of ``x`` are ignored by ``evaluate``
``f_opt``            ``(n,)`` float32           the global minimum (exact where ``exact_optimum``, else an
                                                estimate: the best value found by a search, attained at
                                                ``x_opt``; an upper bound of the true minimum)
``f_ref``            ``(n,)`` float32           a typical value: the median of ``f`` at 256 uniform random
                                                points drawn from the task key; always ``> f_opt``
                                                (see :func:`reference_values`)
``exact_optimum``    ``(n,)`` bool              True where ``f_opt`` is exact
``x_opt``            ``(n, max_dim)`` float32   a point where ``f == f_opt`` (zero beyond ``d``)
``family``           ``(n,)`` int64             index into :meth:`ObjectiveFamily.families`
===================  =========================  ===========================================================

Families add the fields that define their objectives (shifts, Fourier
features, table indices...). The shape of every field is fixed by the family,
whatever the keys, so the rows of two samples can be mixed (``put``).

The split (``"train"`` or ``"test"``) is folded into the key
(:meth:`~metaopt_envs.core.family.TaskFamily.task_stream` with
:attr:`ObjectiveFamily.split_salts`), so the two splits draw unrelated
objectives from one seed (the ``sklearn`` family also holds out whole
datasets). All randomness comes from :mod:`metaopt_envs.core.rng`: row ``i``
of a batch equals sampling that row alone, and no global RNG is touched.

Points live in ``[-1, 1]^max_dim``; ``evaluate`` clamps them into the cube.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch

from metaopt_envs.core import rng
from metaopt_envs.core.family import TaskFamily

ObjectiveTasks = dict[str, torch.Tensor]
"""Plain objective data: every tensor has the number of objectives as leading dimension."""

COMMON_FIELDS: tuple[str, ...] = ("dim", "f_opt", "f_ref", "exact_optimum", "x_opt", "family")
"""The fields every family returns (see the module docstring)."""

REFERENCE_POINTS = 256
"""Number of uniform random points whose median value is ``f_ref``."""

_REFERENCE_SALT = 0x4EF


def uniform_points(key: torch.Tensor, num_points: int, dim: int) -> torch.Tensor:
    """``(n, num_points, dim)`` float32 points uniform in ``[-1, 1)``."""
    return 2.0 * rng.uniform(key, (num_points, dim)) - 1.0


def reference_values(
    family: ObjectiveFamily, tasks: ObjectiveTasks, stream: torch.Tensor, num_points: int = REFERENCE_POINTS
) -> torch.Tensor:
    """``f_ref: (n,)``: the median of ``f`` at ``num_points`` uniform points drawn from ``stream``.

    ``tasks`` must already hold every field ``evaluate`` reads and ``f_opt``.
    The median of the even count is the mean of the two middle values
    (``torch.quantile``). Guard: ``f_ref`` is at least ``f_opt`` plus
    ``1e-6 * (1 + |f_opt|)`` and plus 1% of the spread ``max - f_opt`` of the
    same points, so the normalization ``(f - f_opt) / (f_ref - f_opt)`` stays
    finite and sensible even where most of the cube sits at the optimum (a
    flat table). Never active on the built-in synthetic families.
    """
    points = uniform_points(rng.fold(stream, _REFERENCE_SALT), num_points, family.max_dim)
    values = family._evaluate(tasks, points)
    f_opt = tasks["f_opt"]
    median = torch.quantile(values, 0.5, dim=1) if values.shape[0] > 0 else values.sum(1)
    spread = values.amax(1) - f_opt if values.shape[0] > 0 else median
    floor = f_opt + torch.maximum(1e-6 * (1.0 + f_opt.abs()), 0.01 * spread)
    return torch.maximum(median, floor).to(torch.float32)


def dim_mask(dim: torch.Tensor, max_dim: int) -> torch.Tensor:
    """``(n, max_dim)`` bool: True on each objective's active coordinates."""
    return torch.arange(max_dim, device=dim.device) < dim.unsqueeze(-1)


class ObjectiveFamily(TaskFamily):
    """A distribution of batched black-box objectives on ``[-1, 1]^d`` with train and test splits
    (``MetaOpt-HPO-v0``).

    Subclasses set ``name`` and ``max_dim`` (the largest dimension of any of
    their objectives) and implement :meth:`sample` and :meth:`_evaluate`
    (values at ``m`` points per objective).
    """

    kind: ClassVar[str] = "hpo"
    split_salts = {"train": 0x0B1, "test": 0x0B2}
    max_dim: int = 1

    @abstractmethod
    def sample(self, keys: torch.Tensor, split: str) -> ObjectiveTasks:
        """Draw ``n = len(keys)`` objectives of the ``split`` ("train" or "test") distribution,
        fixed by ``keys: (n,)`` int64; see the module docstring for the fields."""

    @abstractmethod
    def _evaluate(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        """Values ``(n, m)`` float32 at points ``x: (n, m, max_dim)`` float32, already in the cube."""

    def evaluate(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``: ``(n,)`` float32 values (to minimize) of each objective at its point
        ``x: (n, max_dim)`` (clamped into ``[-1, 1]``; coordinates ``>= dim`` are ignored)."""
        n = tasks["dim"].shape[0]
        if x.dim() != 2 or tuple(x.shape) != (n, self.max_dim):
            raise ValueError(f"x must have shape (n, max_dim) = ({n}, {self.max_dim}), got {tuple(x.shape)}")
        return self._evaluate(tasks, x.to(torch.float32).clamp(-1.0, 1.0).unsqueeze(1)).squeeze(1)

    def evaluate_points(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        """``(n, m)`` values of each objective at its ``m`` points ``x: (n, m, max_dim)`` (clamped
        into ``[-1, 1]``); ``evaluate`` is the case ``m = 1``."""
        n = tasks["dim"].shape[0]
        if x.dim() != 3 or x.shape[0] != n or x.shape[2] != self.max_dim:
            raise ValueError(f"x must have shape (n, m, max_dim) = ({n}, m, {self.max_dim}), got {tuple(x.shape)}")
        return self._evaluate(tasks, x.to(torch.float32).clamp(-1.0, 1.0))

    def family_index(self, tasks: ObjectiveTasks) -> torch.Tensor:
        """``(n,)`` int64: each objective's index into :meth:`families`."""
        return tasks["family"]
