"""The task-family protocol every environment family shares, with its plain task data and helpers.

A task is plain data: a flat ``dict`` of tensors whose leading dimension is the
number of problems ``n`` (:data:`TaskData`). A :class:`TaskFamily` samples it
from int64 row keys and a split (``"train"`` or ``"test"``); cores take and
put rows of it when some rows reset. Every family of every environment derives
from :class:`TaskFamily`, through its environment's base, which adds the
methods that environment needs:

=============  ================================================  ==============================================
kind           base                                              adds
=============  ================================================  ==============================================
``lr``         ``metaopt_envs.lr.families.LRTaskFamily``         ``init_params``, ``loss``, ``minibatch_loss``,
                                                                 ... (an inner problem per task)
``ensemble``   ``metaopt_envs.ensemble.families.StreamFamily``   ``realise(tasks, episode_keys, length)``: one
                                                                 episode of each task's process
``hpo``        ``metaopt_envs.hpo.families.ObjectiveFamily``     ``evaluate(tasks, x)``: the black-box values
=============  ================================================  ==============================================

What every family provides:

==================================  ==========================================================
member                              meaning
==================================  ==========================================================
``name``                            the name reported in results (``families()``)
``kind``                            ``"lr"``, ``"ensemble"`` or ``"hpo"``: set by the base
``sample(keys, split)``             keys ``(n,)`` int64 -> :data:`TaskData` of ``n`` tasks
``families()``                      names of the families it draws from (itself, or a
                                    mixture's members)
``family_index(tasks)``             ``(n,)`` int64 index into ``families()`` of each task
``to(device)``                      move the tensors the family holds; returns the family
==================================  ==========================================================

Randomness comes only from the keys (:mod:`metaopt_envs.core.rng`): a task is a
function of its key, so row ``i`` of a batch equals sampling that row alone
and no global RNG is touched. :func:`metaopt_envs.check_task_family` checks all
of this for any family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from metaopt_envs.core import checks, rng

TaskData = dict[str, torch.Tensor]
"""Plain task data: every tensor has the number of problems as leading dimension."""

SPLITS = ("train", "test")

SPLIT_IDS = {"train": 0, "test": 1}
"""The integer folded into a row key to draw its tasks from one split."""

KINDS = ("lr", "ensemble", "hpo")
"""The environment families, each with its own task-family base."""

ENV_IDS = {"lr": "MetaOpt-LR-v0", "ensemble": "MetaOpt-Ensemble-v0", "hpo": "MetaOpt-HPO-v0"}
"""The environment id of each kind (for messages)."""


def check_split(split: str) -> str:
    """``split`` must be ``"train"`` or ``"test"``; returns it."""
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_kind(kind: str) -> str:
    """``kind`` must be one of :data:`KINDS`; returns it."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def check_keys(keys: torch.Tensor, label: str = "keys") -> torch.Tensor:
    """``keys`` must be a 1-D int64 tensor (``label`` names the argument in the message); returns it."""
    if not isinstance(keys, torch.Tensor) or keys.dim() != 1 or keys.dtype != torch.int64:
        raise ValueError(
            f"{label} must be a 1-D int64 tensor, got {getattr(keys, 'dtype', type(keys).__name__)} "
            f"of shape {tuple(getattr(keys, 'shape', ()))}"
        )
    return keys


def check_range(
    label: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    low_open: bool = False,
) -> tuple[Any, Any]:
    """A range ``(low, high)`` with ``low <= high`` (a single value when equal), both ends inside the
    bounds: ints (``integer``, ``>= low``; :func:`metaopt_envs.core.checks.integer`) or finite floats in
    ``[low, high]`` (``(low, ...`` if ``low_open``; :func:`metaopt_envs.core.checks.float_pair` with
    ``strict=False``).

    Returns the pair as ints or floats; raises ``ValueError`` naming ``label``, what is allowed
    and the value.
    """
    if not integer:
        return checks.float_pair(label, value, low, high, low_open=low_open, strict=False)
    minimum = int(low) if low is not None else 0
    allowed = f"a (low, high) pair of ints >= {minimum} with low <= high"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{label} must be {allowed}, got {value!r}")
    try:
        lo, hi = (checks.integer(label, v, minimum=minimum) for v in value)
    except ValueError:
        raise ValueError(f"{label} must be {allowed}, got {tuple(value)!r}") from None
    if not lo <= hi:
        raise ValueError(f"{label} must be {allowed}, got {tuple(value)!r}")
    return lo, hi


def num_tasks(tasks: TaskData) -> int:
    """The number of tasks ``n`` (the leading dimension of every field)."""
    return next(iter(tasks.values())).shape[0]


def take(tasks: TaskData, index: torch.Tensor) -> TaskData:
    """Rows ``index`` (a long or bool tensor over the leading dimension) of every field."""
    return {name: value[index] for name, value in tasks.items()}


def put(tasks: TaskData, rows: torch.Tensor, new: TaskData) -> None:
    """Write ``new`` into the rows ``rows`` (bool ``(B,)`` mask or long index) in place."""
    for name, value in new.items():
        tasks[name][rows] = value


def gather_rows(data: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``data: (n, N, ...)``, ``index: (n, m)`` -> ``(n, m, ...)``: rows of each problem's own data.

    One ``index_select`` on the flattened data copies whole rows; much faster on
    the CPU than ``torch.gather`` with an index expanded over the feature axis.
    """
    n, rows = data.shape[0], data.shape[1]
    flat = index + (torch.arange(n, device=index.device) * rows).unsqueeze(-1)
    picked = data.reshape(n * rows, *data.shape[2:]).index_select(0, flat.reshape(-1))
    return picked.view(*index.shape, *data.shape[2:])


class TaskFamily(ABC):
    """A seeded distribution of tasks with train and test splits: the base of every task family.

    Do not subclass this directly for an environment: subclass its base
    (``LRTaskFamily``, ``StreamFamily`` or ``ObjectiveFamily``), which sets
    :attr:`kind` and declares the methods the environment calls.
    """

    name: str = "custom"
    """The family's name, as reported by :meth:`families` and in results."""

    kind: ClassVar[str] = ""
    """The environment family this task family serves: one of :data:`KINDS` (set by the base)."""

    split_salts: ClassVar[Mapping[str, int] | None] = None
    """Integers this kind's families fold into every task key per split (:meth:`task_stream`);
    ``None`` where the environment's core already folds the split into the keys (the LR kind)."""

    _salt: ClassVar[int] = 0
    """The family's own integer in :meth:`task_stream`, so that families draw unrelated tasks."""

    @abstractmethod
    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        """Draw ``n = len(keys)`` tasks from the ``split`` ("train" or "test") distribution,
        fixed by ``keys: (n,)`` int64: every field has leading dimension ``n``."""

    def families(self) -> tuple[str, ...]:
        """Names of the families this sampler draws from (itself, for a single family)."""
        return (self.name,)

    def family_index(self, tasks: TaskData) -> torch.Tensor:
        """``(n,)`` int64 index into :meth:`families` of each task's family (0 for a single family)."""
        value = next(iter(tasks.values()))
        return torch.zeros(value.shape[0], dtype=torch.int64, device=value.device)

    def to(self, device: torch.device | str) -> TaskFamily:
        """Move any tensors the family holds (constants, bundled data) to ``device``; returns the family."""
        return self

    def task_stream(self, keys: torch.Tensor, split: str) -> torch.Tensor:
        """``(n,)`` int64: the key of each task's randomness, from the user's keys, the split (for
        kinds with :attr:`split_salts`) and the family's salt."""
        check_keys(keys)
        salts = () if self.split_salts is None else (self.split_salts[check_split(split)],)
        return rng.fold(keys, *salts, self._salt)


def describe(family: object) -> str:
    """``'name' (ClassName)``: how messages name a family."""
    return f"{getattr(family, 'name', '?')!r} ({type(family).__name__})"
