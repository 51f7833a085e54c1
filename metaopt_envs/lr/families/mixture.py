"""A mixture of LR task families: each problem draws its family, then its task.

The generic part (members, weights, member draw, task layout) is
:class:`metaopt_envs.core.mixture.TaskMixture`; this module adds the LR
methods. Parameters are padded to the largest family's ``P``; a family uses
the first ``P_f`` entries and the rest keep a zero gradient, so the inner
optimizers leave them at zero. Each loss evaluation gathers the rows of one
family, evaluates them together and scatters back: a loop over the (few)
families, never over problems.

``loss_scale_range=(low, high)`` multiplies each task's objective (losses and gradients) by its own
factor, log-uniform in the range and drawn from the task's key: the same problem with a step size
``s`` times larger, so the stable and the best rates of a task move by ``1 / s``. A policy trained on
scaled tasks cannot know them from the family alone and has to read them from the run (an
augmentation for learning to back off; tasks without it are unscaled, bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from metaopt_envs.core import rng
from metaopt_envs.core.family import check_range
from metaopt_envs.core.mixture import TaskMixture
from metaopt_envs.lr.families.base import LRTaskFamily, TaskData

LOSS_SCALE_FIELD = "loss_scale"
"""The task field of a scaled mixture's factor ``(n,)`` float32."""
_SCALE_STREAM = 0x5CA1E


class MixtureFamily(TaskMixture[LRTaskFamily], LRTaskFamily):
    """Draws each task's family from ``members`` with probabilities ``weights`` (uniform by default).

    ``members``: LR family names or instances (default: the four built-ins,
    ``quadratic``, ``logistic``, ``sinusoid``, ``sklearn``). Task fields:
    ``family`` and member ``m``'s fields as ``"{m}/{name}"``; with ``loss_scale_range`` (module
    docstring) also ``loss_scale``.
    """

    default_members = ("quadratic", "logistic", "sinusoid", "sklearn")
    _salt = 99

    def __init__(
        self,
        members: Sequence[str | LRTaskFamily] | None = None,
        weights: Sequence[float] | None = None,
        loss_scale_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(members, weights)
        self.param_dim = max(member.param_dim for member in self.members)
        self.has_validation = all(member.has_validation for member in self.members)
        self.loss_scale_range = (
            None
            if loss_scale_range is None
            else check_range("loss_scale_range", loss_scale_range, low=0.0, low_open=True)
        )

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        tasks = super().sample(keys, split)
        if self.loss_scale_range is not None:
            u = rng.uniform(rng.fold(keys, _SCALE_STREAM), (), torch.float64)
            tasks[LOSS_SCALE_FIELD] = rng.log_uniform_of(u, *self.loss_scale_range)
        return tasks

    def _scaled(self, value: torch.Tensor, tasks: TaskData) -> torch.Tensor:
        """``value (n, ...)`` times each task's factor (as it is without ``loss_scale_range``)."""
        if self.loss_scale_range is None:
            return value
        scale = tasks[LOSS_SCALE_FIELD].to(value.dtype)
        return value * scale.view(-1, *([1] * (value.dim() - 1)))

    def _per_member(
        self,
        tasks: TaskData,
        fn: Callable[[LRTaskFamily, torch.Tensor, TaskData], torch.Tensor],
        out_shape: tuple[int, ...],
        like: torch.Tensor,
    ) -> torch.Tensor:
        """``fn(member, rows, member_tasks)`` for each member's rows, scattered into ``(n, *out_shape)``
        (``(n, P)`` outputs padded with zeros to the mixture's ``P``)."""
        n = tasks["family"].shape[0]
        out = torch.zeros((n, *out_shape), dtype=like.dtype, device=like.device)
        for index, member, rows in self.rows_by_member(tasks["family"]):
            value = fn(member, rows, self.member_tasks(tasks, index, rows))
            if out.dim() == 2:
                value = torch.nn.functional.pad(value, (0, self.param_dim - member.param_dim))
            out = out.index_put((rows,), value)
        return out

    def init_params(self, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        return self._per_member(
            tasks,
            lambda member, rows, sub: member.init_params(sub, keys[rows]),
            (self.param_dim,),
            torch.zeros((), device=keys.device),
        )

    def loss(self, params: torch.Tensor, tasks: TaskData, split: str = "train") -> torch.Tensor:
        loss = self._per_member(
            tasks, lambda member, rows, sub: member.loss(params[rows, : member.param_dim], sub, split), (), params
        )
        return self._scaled(loss, tasks)

    def minibatch_loss(self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        loss = self._per_member(
            tasks,
            lambda member, rows, sub: member.minibatch_loss(params[rows, : member.param_dim], sub, keys[rows]),
            (),
            params,
        )
        return self._scaled(loss, tasks)

    def loss_and_paired_grads(
        self, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = params.shape[0]
        loss = torch.zeros(n, dtype=params.dtype, device=params.device)
        grads = params.new_zeros(n, 2, self.param_dim)
        for index, member, rows in self.rows_by_member(tasks["family"]):
            sub_loss, sub_grads = member.loss_and_paired_grads(
                params[rows, : member.param_dim], self.member_tasks(tasks, index, rows), keys_a[rows], keys_b[rows]
            )
            loss[rows] = sub_loss
            grads[rows, :, : member.param_dim] = sub_grads
        return self._scaled(loss, tasks), self._scaled(grads, tasks)
