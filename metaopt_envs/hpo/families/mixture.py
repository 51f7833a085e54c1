"""``"mixture"``: each objective drawn from one of several member families."""

from __future__ import annotations

import torch

from metaopt_envs.core import rng
from metaopt_envs.hpo.families.base import COMMON_FIELDS, ObjectiveFamily, ObjectiveTasks, check_keys, task_stream

DEFAULT_MEMBERS: tuple[str, ...] = ("branin", "hartmann3", "hartmann6", "gp")


class ObjectiveMixture(ObjectiveFamily):
    """Draws each objective's family from ``members`` with probabilities ``weights`` (uniform by default).

    ``members`` are names or instances (default ``("branin", "hartmann3",
    "hartmann6", "gp")``); ``family`` indexes :meth:`families` (the members'
    names) and ``max_dim`` is the largest member's. Row ``i`` with member
    ``m`` is exactly ``members[m].sample(keys[i:i+1], split)`` (the member
    is chosen from a separate fold of the key).

    Fields: the common ones (``x_opt`` zero-padded to ``max_dim``) and every
    member's own fields under the prefix ``"m{index}."`` (e.g. ``"m3.omega"``),
    zero in the rows of other members, so every sample has the same fields
    and shapes whatever its members. ``evaluate`` loops over the members (not
    the rows): each evaluates its own rows, picked with ``index_select``.
    """

    name = "mixture"
    _salt = 0x3A0

    def __init__(self, members=DEFAULT_MEMBERS, weights: list[float] | None = None) -> None:
        from metaopt_envs.hpo.families import make_objective_family  # the registry imports this module

        if members is None:
            members = DEFAULT_MEMBERS
        if isinstance(members, (str, ObjectiveFamily)) or len(members) == 0:
            raise ValueError(
                f"members must be a non-empty list of objective family names or instances, got {members!r}"
            )
        try:
            self.members = [make_objective_family(m) for m in members]
        except ValueError as error:
            raise ValueError(f"members must be objective family names or instances: {error}") from None
        if any(isinstance(m, ObjectiveMixture) for m in self.members):
            raise ValueError("members must not contain a mixture")
        weights = [1.0] * len(self.members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"weights must be {len(self.members)} non-negative numbers with a positive sum, got {weights}"
            )
        self.cumulative = torch.tensor(weights, dtype=torch.float64).cumsum(0) / sum(weights)
        self.max_dim = max(m.max_dim for m in self.members)
        # Each member's own fields: trailing shape and dtype, from one sampled objective.
        probe = rng.keys_from_seeds([0])
        self._fields = []
        for member in self.members:
            sub = member.sample(probe, "train")
            self._fields.append(
                {name: (tuple(v.shape[1:]), v.dtype) for name, v in sub.items() if name not in COMMON_FIELDS}
            )

    def families(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def to(self, device: torch.device | str) -> ObjectiveMixture:
        self.members = [m.to(device) for m in self.members]
        return self

    def sample(self, keys: torch.Tensor, split: str) -> ObjectiveTasks:
        stream = task_stream(check_keys(keys), split, self._salt)
        n, device = keys.shape[0], keys.device
        u = rng.uniform(stream, (), torch.float64)
        family = torch.searchsorted(self.cumulative.to(device), u.unsqueeze(-1), right=True).squeeze(-1)
        family = family.clamp(max=len(self.members) - 1)
        out: ObjectiveTasks = {
            "dim": torch.zeros(n, dtype=torch.int64, device=device),
            "f_opt": torch.zeros(n, dtype=torch.float32, device=device),
            "f_ref": torch.ones(n, dtype=torch.float32, device=device),
            "exact_optimum": torch.zeros(n, dtype=torch.bool, device=device),
            "x_opt": torch.zeros(n, self.max_dim, dtype=torch.float32, device=device),
            "family": family,
        }
        for index, fields in enumerate(self._fields):
            for name, (shape, dtype) in fields.items():
                out[f"m{index}.{name}"] = torch.zeros((n, *shape), dtype=dtype, device=device)
        for index, member in enumerate(self.members):
            rows = (family == index).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            sub = member.sample(keys[rows], split)
            for name in ("dim", "f_opt", "f_ref", "exact_optimum"):
                out[name][rows] = sub[name]
            out["x_opt"][rows, : member.max_dim] = sub["x_opt"]
            for name in self._fields[index]:
                out[f"m{index}.{name}"][rows] = sub[name]
        return out

    def member_tasks(self, tasks: ObjectiveTasks, index: int, rows: torch.Tensor) -> ObjectiveTasks:
        """Rows ``rows`` of member ``index``'s objectives, as that member's own task data."""
        sub = {name: tasks[name].index_select(0, rows) for name in ("dim", "f_opt", "f_ref", "exact_optimum")}
        sub["x_opt"] = tasks["x_opt"].index_select(0, rows)[:, : self.members[index].max_dim]
        sub["family"] = torch.zeros_like(sub["dim"])
        for name in self._fields[index]:
            sub[name] = tasks[f"m{index}.{name}"].index_select(0, rows)
        return sub

    def _evaluate(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        family = tasks["family"]
        out = torch.empty(x.shape[:2], dtype=torch.float32, device=x.device)
        for index, member in enumerate(self.members):
            rows = (family == index).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            sub = self.member_tasks(tasks, index, rows)
            out[rows] = member._evaluate(sub, x.index_select(0, rows)[..., : member.max_dim])
        return out
