"""One mixture of task families for every environment kind: each task draws its member, then its task.

:class:`TaskMixture` holds the part every kind shares: the members (names or
instances, resolved by the registry of the mixture's kind), the ``weights``
(validated), the draw of each task's member, the task data layout and the
dispatch of rows to their member. Each kind's mixture
(``metaopt_envs.lr.families.MixtureFamily``, ``...ensemble.families.StreamMixture``,
``...hpo.families.ObjectiveMixture``) derives from it and from its kind's
base, and adds only the dispatch of that kind's methods.

**Member draw.** Task ``i`` draws ``u ~ U[0, 1)`` (float64) from
``task_stream(keys, split)`` (:meth:`TaskFamily.task_stream`: the key, the
kind's split salt if it has one, the mixture's salt) and takes the first
member whose cumulative weight exceeds ``u``. Row ``i`` with member ``m`` is
exactly ``members[m].sample(keys[i:i+1], split)``: the member samples from the
user's key, not from the draw's.

**Task data** (the one field convention of every mixture):

* ``family: (n,)`` int64, each task's member (an index into :meth:`families`);
* the kind's ``shared_fields`` unprefixed, padded with zeros along trailing
  dimensions to the widest member (e.g. HPO's ``x_opt: (n, max_dim)``) and
  holding the field's fill value in rows no member wrote;
* every other field of member ``m`` as ``"{m}/{name}"`` (see
  :func:`member_field`), zero in the rows of other members.

So every sample has the same fields and shapes whatever members its rows
drew, and rows of two samples can be mixed (``put``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch

from metaopt_envs.core import rng
from metaopt_envs.core.family import TaskData, TaskFamily, check_keys, check_split, describe
from metaopt_envs.core.registry import make_task_family

MemberT = TypeVar("MemberT", bound=TaskFamily)
"""The members' base: the kind's own base (``LRTaskFamily``, ``StreamFamily``, ``ObjectiveFamily``)."""


def member_field(index: int, name: str) -> str:
    """The mixture field that holds member ``index``'s own field ``name``: ``"{index}/{name}"``."""
    return f"{index}/{name}"


def check_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """``count`` finite non-negative numbers with a positive sum (``None``: all 1); returns them as floats."""
    if weights is None:
        return [1.0] * count
    problem = f"weights must be {count} finite non-negative numbers with a positive sum (one per member)"
    if isinstance(weights, (str, bytes)):
        raise ValueError(f"{problem}, got {weights!r}")
    try:
        items = list(weights)
        if any(isinstance(w, (bool, np.bool_)) for w in items):
            raise TypeError("a bool is not a weight")
        values = [float(w) for w in items]
    except (TypeError, ValueError):
        raise ValueError(f"{problem}, got {weights!r}") from None
    if len(values) != count:
        raise ValueError(f"{problem}, got {len(values)} numbers: {weights!r}")
    if not all(math.isfinite(w) for w in values):
        raise ValueError(f"{problem}, got a NaN or infinite weight: {weights!r}")
    if min(values) < 0 or sum(values) <= 0:
        raise ValueError(f"{problem}, got {weights!r}")
    return values


class TaskMixture(TaskFamily, Generic[MemberT]):
    """Draws each task's family from ``members`` with probabilities ``weights`` (uniform by default).

    ``members``: names (of the mixture's kind's registry) or instances of that
    kind, no mixtures; ``None`` takes :attr:`default_members`. A kind's mixture
    sets ``default_members``, ``shared_fields`` and its ``_salt`` (which fixes
    the member draws) and derives from its kind's base as well.
    """

    name = "mixture"
    default_members: ClassVar[tuple[str, ...]] = ()
    """The members of ``make_task_family(kind, "mixture")``."""
    shared_fields: ClassVar[Mapping[str, float]] = {}
    """Fields every member returns that the mixture stores unprefixed, with their fill value."""

    def __init__(self, members: Sequence[str | MemberT] | None = None, weights: Sequence[float] | None = None) -> None:
        if members is None:
            members = self.default_members
        expected = f"members must be a non-empty list of {self.kind} task family names or instances"
        if isinstance(members, (str, TaskFamily)):
            raise ValueError(f"{expected}, got {members!r}")
        try:
            members = list(members)
        except TypeError:
            raise ValueError(f"{expected}, got {members!r}") from None
        if not members:
            raise ValueError(f"{expected}, got {members!r}")
        try:
            self.members: list[MemberT] = [make_task_family(self.kind, member) for member in members]  # type: ignore[misc]
        except ValueError as error:
            raise ValueError(f"{expected}: {error}") from None
        nested = [describe(m) for m in self.members if isinstance(m, TaskMixture)]
        if nested:
            raise ValueError(
                f"members must not contain a mixture (a mixture's rows name its own members), got {nested}"
            )
        self.weights = check_weights(weights, len(self.members))
        self.cumulative = torch.tensor(self.weights, dtype=torch.float64).cumsum(0) / sum(self.weights)
        # Each member's fields (trailing shape, dtype), from one sampled task.
        probe = rng.keys_from_seeds([0])
        self.layouts: list[dict[str, tuple[tuple[int, ...], torch.dtype]]] = []
        for member in self.members:
            sub = member.sample(probe, "train")
            self.layouts.append({name: (tuple(value.shape[1:]), value.dtype) for name, value in sub.items()})
        self._shared: dict[str, tuple[tuple[int, ...], torch.dtype, float]] = {}
        for name, fill in self.shared_fields.items():
            found = [layout[name] for layout in self.layouts if name in layout]
            if len(found) != len(self.layouts):
                raise ValueError(f"every member must return the field {name!r}; members {self.families()}")
            dtypes = {dtype for _, dtype in found}
            if len(dtypes) != 1 or len({len(shape) for shape, _ in found}) != 1:
                raise ValueError(f"members disagree on the dtype or rank of field {name!r}: {found}")
            shape = tuple(max(sizes) for sizes in zip(*(shape for shape, _ in found)))
            self._shared[name] = (shape, dtypes.pop(), fill)

    def families(self) -> tuple[str, ...]:
        return tuple(member.name for member in self.members)

    def family_index(self, tasks: TaskData) -> torch.Tensor:
        return tasks["family"]

    def to(self, device: torch.device | str) -> TaskMixture[MemberT]:
        self.__dict__.pop("_rows_cache", None)
        self.members = [member.to(device) for member in self.members]  # type: ignore[misc]
        self.cumulative = self.cumulative.to(device)
        return self

    def draw_members(self, keys: torch.Tensor, split: str) -> torch.Tensor:
        """``(n,)`` int64: the member of each task (module docstring)."""
        u = rng.uniform(self.task_stream(keys, split), (), torch.float64)
        member = torch.searchsorted(self.cumulative.to(keys.device), u, right=True)
        return member.clamp(max=len(self.members) - 1)

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        check_split(split)
        check_keys(keys)
        n, device = keys.shape[0], keys.device
        family = self.draw_members(keys, split)
        tasks: TaskData = {"family": family}
        for name, (shape, dtype, fill) in self._shared.items():
            tasks[name] = torch.full((n, *shape), fill, dtype=dtype, device=device)
        for index, layout in enumerate(self.layouts):
            for name, (shape, dtype) in layout.items():
                if name != "family" and name not in self._shared:
                    tasks[member_field(index, name)] = torch.zeros((n, *shape), dtype=dtype, device=device)
        for index, member, rows in self.rows_by_member(family):
            for name, value in member.sample(keys[rows], split).items():
                if name in self._shared:
                    region: tuple[Any, ...] = (rows, *(slice(0, size) for size in value.shape[1:]))
                    tasks[name][region] = value
                elif name != "family":
                    tasks[member_field(index, name)][rows] = value
        return tasks

    def rows_by_member(self, family: torch.Tensor) -> Iterator[tuple[int, MemberT, torch.Tensor]]:
        """``(index, member, rows)`` for each member that some task drew: ``rows`` (long) index its tasks.

        A loop over the (few) members, never over tasks. Finding the rows (``nonzero``) reads the
        device (a host sync on a GPU), so the rows of a ``family`` tensor are kept until it changes:
        a core's step path, which sees the same task tensors from one reset to the next, finds them once.
        """
        for index, rows in self._member_rows(family):
            yield index, self.members[index], rows

    def _member_rows(self, family: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """The non-empty ``(member index, rows)`` of ``family``, cached by its memory, view and version."""
        try:
            version = family._version
        except RuntimeError:  # an inference-mode tensor has no version counter: no cache
            return self._find_member_rows(family)
        key = (family.untyped_storage().data_ptr(), family.storage_offset(), *family.shape, *family.stride())
        cache: dict[tuple[int, ...], tuple[torch.Tensor, int, list[tuple[int, torch.Tensor]]]]
        cache = self.__dict__.setdefault("_rows_cache", {})
        hit = cache.get(key)
        # The entry holds the tensor itself, so its memory cannot be freed and reused under the same key.
        if hit is not None and hit[1] == version and hit[0].device == family.device:
            return hit[2]
        found = self._find_member_rows(family)
        if len(cache) >= 32:
            cache.pop(next(iter(cache)))
        cache[key] = (family, version, found)
        return found

    def _find_member_rows(self, family: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        found = []
        for index in range(len(self.members)):
            rows = (family == index).nonzero().squeeze(-1)
            if rows.numel():
                found.append((index, rows))
        return found

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_rows_cache", None)  # tensors of a core's current tasks: not part of the family
        return state

    def member_tasks(self, tasks: TaskData, index: int, rows: torch.Tensor) -> TaskData:
        """Rows ``rows`` of member ``index``'s tasks as that member's own task data (its own fields,
        shared fields cut to its shape, ``family`` zero)."""
        sub: TaskData = {}
        for name, (shape, _) in self.layouts[index].items():
            if name == "family":
                sub[name] = torch.zeros_like(rows)
            elif name in self._shared:
                cut: tuple[Any, ...] = (slice(None), *(slice(0, size) for size in shape))
                sub[name] = tasks[name].index_select(0, rows)[cut]
            else:
                sub[name] = tasks[member_field(index, name)].index_select(0, rows)
        return sub

    def __repr__(self) -> str:
        return f"{type(self).__name__}(members={list(self.families())}, weights={self.weights})"
