"""The LR task-family protocol: batched inner problems as behaviour over plain data.

An :class:`LRTaskFamily` (a :class:`metaopt_envs.core.family.TaskFamily` of
kind ``"lr"``) is a seeded sampler of inner problems. Its tasks are
plain data (:data:`TaskData`, a flat ``dict`` of tensors whose leading
dimension is the number of problems ``n``), and its methods are pure functions
of that data, batched over ``n`` problems:

========================================  ====================================
method                                    shapes
========================================  ====================================
``sample(keys, split)``                   keys ``(n,)`` int64 -> TaskData
``init_params(tasks, keys)``              -> params ``(n, P)``
``loss(params, tasks, split)``            full-data objective -> ``(n,)``
``minibatch_loss(params, tasks, keys)``   one minibatch per problem -> ``(n,)``
``minibatch_loss_and_grad(...)``          -> ``(n,)``, ``(n, P)``; autograd by
                                          default (differentiable when params
                                          are), closed form where cheaper
``paired_minibatch_grads(...)``           two minibatch gradients ``(n, P)``;
                                          two calls by default, one pass where
                                          a family can batch them
``loss_and_paired_grads(...)``            full loss ``(n,)`` and both
                                          gradients ``(n, 2, P)``: one LR-core
                                          inner step
``measure_paired(...)``                   that loss, the mean gradient
                                          ``(n, P)``, its norm and the noise
                                          ratio ``(n,)`` (what the core keeps)
========================================  ====================================

Randomness comes only from the int64 ``keys`` (see :mod:`metaopt_envs.core.rng`),
so a problem's data, initialization and minibatches are a function of its key:
batched and single runs agree, and no global RNG state is touched.

To bring your own inner problem, subclass :class:`LRTaskFamily` and implement
``sample``, ``init_params``, ``loss`` and ``minibatch_loss`` with tensor
operations over the leading dimension; check it with
:func:`metaopt_envs.check_task_family` and pass the instance as
``task_family=`` to any LR environment.

The LR core folds the split into the row keys it passes to ``sample``, so an
LR family gets unrelated keys for "train" and "test" and needs the split only
where the two distributions differ (held-out datasets).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch

from metaopt_envs.core.family import SPLITS, TaskData, TaskFamily, check_split, gather_rows, put, take  # noqa: F401  (re-exported)


def split_samples(tasks: TaskData, num_train: int, fields: tuple[str, ...] = ("inputs", "targets")) -> TaskData:
    """Store the first ``num_train`` samples of ``fields`` as training data and the rest as
    ``val_*``, each contiguous: a strided slice would be copied by every matmul that reads it."""
    for name in fields:
        data = tasks[name]
        tasks[name], tasks[f"val_{name}"] = data[:, :num_train].contiguous(), data[:, num_train:].contiguous()
    return tasks


TINY = 1e-30
"""Added to denominators and inside logs so that zero norms and losses stay finite."""


def paired_statistics(
    grads: torch.Tensor, grad_out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``grads: (n, 2, P)`` -> their mean ``(n, P)`` (written into ``grad_out`` when given), its norm and
    the noise ratio ``norm(g_a - g_b)^2 / norm(g_a + g_b)^2`` ``(n,)``."""
    grad = grads.mean(1) if grad_out is None else torch.mean(grads, 1, out=grad_out)
    grad_norm = torch.linalg.vector_norm(grad, dim=-1)
    # With g_a + g_b = 2 g.
    noise = torch.linalg.vector_norm(grads[:, 0] - grads[:, 1], dim=-1).square() / (4.0 * grad_norm.square() + TINY)
    return grad, grad_norm, noise


class LRTaskFamily(TaskFamily):
    """A distribution of batched inner problems with train and test splits (``MetaOpt-LR-v0``).

    Subclasses set ``name`` and ``param_dim`` (``P``, the length of the flat
    parameter vector, padded to the family's largest problem), and may set
    ``has_validation`` when ``loss(..., split="val")`` measures held-out data;
    they implement :meth:`sample` (from :class:`~metaopt_envs.core.family.TaskFamily`),
    :meth:`init_params`, :meth:`loss` and :meth:`minibatch_loss`.
    """

    kind: ClassVar[str] = "lr"
    param_dim: int
    has_validation: bool = False

    @abstractmethod
    def init_params(self, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        """Initial parameters ``(n, P)`` of each task, drawn with ``keys: (n,)``."""

    @abstractmethod
    def loss(self, params: torch.Tensor, tasks: TaskData, split: str = "train") -> torch.Tensor:
        """Full-data loss ``(n,)`` on the training data ("train") or validation data ("val")."""

    @abstractmethod
    def minibatch_loss(self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        """Loss ``(n,)`` on one minibatch per problem, drawn with ``keys: (n,)``."""

    def minibatch_loss_and_grad(
        self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatch loss ``(n,)`` and its gradient ``(n, P)``, by autograd through :meth:`minibatch_loss`.

        Rows are independent problems, so the gradient of the summed loss is
        every problem's own gradient. When ``params`` is part of a graph (it
        requires grad and grad mode is on: a differentiable unroll such as the
        learned optimizers' through :func:`metaopt_envs.lr.dynamics.step`), the
        gradient keeps its graph (``create_graph``), so a meta-gradient through
        it is second order, as through the built-in closed forms. Otherwise
        (the environments, under ``torch.no_grad()``) both are detached.
        """
        if params.requires_grad and torch.is_grad_enabled():
            loss = self.minibatch_loss(params, tasks, keys)
            (grad,) = torch.autograd.grad(loss.sum(), params, create_graph=True)
            return loss, grad
        with torch.enable_grad():
            leaf = params.detach().requires_grad_(True)
            loss = self.minibatch_loss(leaf, tasks, keys)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        return loss.detach(), grad

    def paired_minibatch_grads(
        self, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients ``(n, P)`` on two independent minibatches (keys ``(n,)`` each).

        The LR core needs both at every step (their mean to update, their
        difference to measure noise); families may evaluate them in one pass.
        """
        return (
            self.minibatch_loss_and_grad(params, tasks, keys_a)[1],
            self.minibatch_loss_and_grad(params, tasks, keys_b)[1],
        )

    def loss_and_paired_grads(
        self, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full training loss ``(n,)`` and two minibatch gradients ``(n, 2, P)``: one LR-core inner step.

        Families whose minibatches are rows of their training set can share one
        forward pass between the two (the MLP families do).
        """
        grad_a, grad_b = self.paired_minibatch_grads(params, tasks, keys_a, keys_b)
        return self.loss(params, tasks, "train"), torch.stack([grad_a, grad_b], dim=1)

    def measure_paired(
        self,
        params: torch.Tensor,
        tasks: TaskData,
        keys_a: torch.Tensor,
        keys_b: torch.Tensor,
        grad_out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full training loss, mean minibatch gradient ``(n, P)`` (into ``grad_out`` when given), its norm and
        the noise ratio: :meth:`loss_and_paired_grads` and :func:`paired_statistics` (a family may fuse them)."""
        loss, grads = self.loss_and_paired_grads(params, tasks, keys_a, keys_b)
        return (loss, *paired_statistics(grads, grad_out))

    def normalize(self, loss: torch.Tensor, initial_loss: torch.Tensor) -> torch.Tensor:
        """Put losses of different tasks on one scale: the fraction of the initial loss left."""
        return loss / initial_loss.clamp_min(torch.finfo(loss.dtype).tiny)
