"""``"mixture"``: each objective drawn from one of several member families.

The generic part (members, weights, member draw, task layout) is
:class:`metaopt_envs.core.mixture.TaskMixture`; this module adds ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metaopt_envs.core.mixture import TaskMixture
from metaopt_envs.hpo.families.base import ObjectiveFamily, ObjectiveTasks

DEFAULT_MEMBERS: tuple[str, ...] = ("branin", "hartmann3", "hartmann6", "gp")


class ObjectiveMixture(TaskMixture[ObjectiveFamily], ObjectiveFamily):
    """Draws each objective's family from ``members`` with probabilities ``weights`` (uniform by default).

    ``members`` are names or instances (default ``("branin", "hartmann3",
    "hartmann6", "gp")``); ``family`` indexes :meth:`families` (the members'
    names) and ``max_dim`` is the largest member's. Row ``i`` with member
    ``m`` is exactly ``members[m].sample(keys[i:i+1], split)`` (the member
    is chosen from a separate fold of the key).

    Fields: the common ones (``x_opt`` zero-padded to ``max_dim``) and every
    member's own fields under the prefix ``"{index}/"`` (e.g. ``"3/omega"``),
    zero in the rows of other members, so every sample has the same fields
    and shapes whatever its members. ``evaluate`` loops over the members (not
    the rows): each evaluates its own rows, picked with ``index_select``.
    """

    default_members = DEFAULT_MEMBERS
    shared_fields = {"dim": 0, "f_opt": 0.0, "f_ref": 1.0, "exact_optimum": False, "x_opt": 0.0}
    _salt = 0x3A0

    def __init__(
        self, members: Sequence[str | ObjectiveFamily] | None = None, weights: Sequence[float] | None = None
    ) -> None:
        super().__init__(members, weights)
        self.max_dim = max(m.max_dim for m in self.members)

    def _evaluate(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape[:2], dtype=torch.float32, device=x.device)
        for index, member, rows in self.rows_by_member(tasks["family"]):
            sub = self.member_tasks(tasks, index, rows)
            out[rows] = member._evaluate(sub, x.index_select(0, rows)[..., : member.max_dim])
        return out
