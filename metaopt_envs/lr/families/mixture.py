"""A mixture of task families: each problem draws its family, then its task.

Parameters are padded to the largest family's ``P``; a family uses the first
``P_f`` entries and the rest keep a zero gradient, so the inner optimizers
leave them at zero. Each loss evaluation gathers the rows of one family,
evaluates them together and scatters back: a loop over the (few) families,
never over problems.
"""

from __future__ import annotations

import torch

from metaopt_envs.core import rng
from metaopt_envs.lr.families.base import TaskData, TaskFamily, check_split


class MixtureFamily(TaskFamily):
    """Draws each task's family with probabilities ``weights`` (uniform by default)."""

    name = "mixture"

    def __init__(self, families: list[TaskFamily], weights: list[float] | None = None) -> None:
        if not families:
            raise ValueError("families must name at least one task family")
        weights = [1.0] * len(families) if weights is None else list(weights)
        if len(weights) != len(families) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be {len(families)} non-negative numbers with a positive sum, got {weights}")
        self.members = families
        self.cumulative = torch.tensor(weights, dtype=torch.float64).cumsum(0) / sum(weights)
        self.param_dim = max(f.param_dim for f in families)
        self.has_validation = all(f.has_validation for f in families)
        # Field layout of each member's tasks, so rows of any family can be written.
        probe = torch.zeros(1, dtype=torch.int64)
        self.templates = [f.sample(probe, "train") for f in families]

    def families(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.members)

    def family_index(self, tasks: TaskData) -> torch.Tensor:
        return tasks["family"]

    def to(self, device: torch.device) -> MixtureFamily:
        self.members = [f.to(device) for f in self.members]
        self.cumulative = self.cumulative.to(device)
        return self

    def _rows(self, tasks: TaskData, member: int) -> torch.Tensor:
        return (tasks["family"] == member).nonzero().squeeze(-1)

    def _sub(self, tasks: TaskData, member: int, rows: torch.Tensor) -> TaskData:
        prefix = f"{member}/"
        return {k[len(prefix) :]: v[rows] for k, v in tasks.items() if k.startswith(prefix)}

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        check_split(split)
        n = keys.shape[0]
        family = torch.searchsorted(self.cumulative, rng.uniform(rng.fold(keys, 99), (), torch.float64), right=True)
        family = family.clamp(max=len(self.members) - 1)
        tasks: TaskData = {"family": family}
        for member, (fam, template) in enumerate(zip(self.members, self.templates)):
            for name, value in template.items():
                tasks[f"{member}/{name}"] = torch.zeros((n, *value.shape[1:]), dtype=value.dtype, device=keys.device)
            rows = (family == member).nonzero().squeeze(-1)
            if rows.numel():
                for name, value in fam.sample(keys[rows], split).items():
                    tasks[f"{member}/{name}"][rows] = value
        return tasks

    def _per_member(self, tasks: TaskData, fn, out_shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        n = tasks["family"].shape[0]
        out = torch.zeros((n, *out_shape), dtype=like.dtype, device=like.device)
        for member, fam in enumerate(self.members):
            rows = self._rows(tasks, member)
            if rows.numel():
                value = fn(fam, rows, self._sub(tasks, member, rows))
                if out.dim() == 2:
                    out = out.index_put((rows,), torch.nn.functional.pad(value, (0, self.param_dim - fam.param_dim)))
                else:
                    out = out.index_put((rows,), value)
        return out

    def init_params(self, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        return self._per_member(
            tasks, lambda fam, rows, sub: fam.init_params(sub, keys[rows]), (self.param_dim,),
            torch.zeros((), device=keys.device),
        )

    def loss(self, params: torch.Tensor, tasks: TaskData, split: str = "train") -> torch.Tensor:
        return self._per_member(
            tasks, lambda fam, rows, sub: fam.loss(params[rows, : fam.param_dim], sub, split), (), params
        )

    def minibatch_loss(self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        return self._per_member(
            tasks, lambda fam, rows, sub: fam.minibatch_loss(params[rows, : fam.param_dim], sub, keys[rows]), (), params
        )

    def loss_and_paired_grads(
        self, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = params.shape[0]
        loss = torch.zeros(n, dtype=params.dtype, device=params.device)
        grads = params.new_zeros(n, 2, self.param_dim)
        for member, fam in enumerate(self.members):
            rows = self._rows(tasks, member)
            if rows.numel():
                sub_loss, sub_grads = fam.loss_and_paired_grads(
                    params[rows, : fam.param_dim], self._sub(tasks, member, rows), keys_a[rows], keys_b[rows]
                )
                loss[rows] = sub_loss
                grads[rows, :, : fam.param_dim] = sub_grads
        return loss, grads
