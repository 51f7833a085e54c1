"""Gradient-based meta-learners over the functional MLP, batched over tasks with ``torch.func.vmap``.

Each learner holds its meta-parameters ``self.meta``, a nested dict of leaf
tensors (``{"net": {...}}``, plus ``"alpha"`` for Meta-SGD), and defines three
per-task pure functions that the shared machinery vmaps over tasks:

* ``_init_fast(meta)``: the adapted state before any step (the network for
  MAML-like learners, a zero context vector for CAVIA);
* ``_loss(meta, fast, x, y)``: mean squared error of one task's points;
* ``_update(meta, fast, grad, lr)``: one inner SGD step.

The inner loop is ``torch.func.grad`` of ``_loss`` w.r.t. ``fast``; called on
tensors that carry the outer autograd graph, its result is itself
differentiable (create-graph semantics), which gives second-order MAML.
First-order variants detach the inner gradients.

Common API (all learners)::

    learner = MAML(hidden=(40, 40), seed=0)
    log = learner.meta_train(num_iterations, meta_batch_size, shots, inner_steps, inner_lr, outer_lr, seed)
    mse = learner.adapt_and_evaluate(tasks, shots, steps)   # (n_tasks, steps + 1) query MSE

``tasks`` is the sinusoid family's task data (see :mod:`agents.meta.tasks`):
the first ``shots`` training points are the support set, ``val_*`` the query set.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.func import grad, vmap
from torch.utils import _pytree as pytree

from agents.meta.functional import flatten_params, init_mlp, mlp_forward, mse
from agents.meta.tasks import SinusoidTasks, support_query
from metaopt_envs.lr.families.base import TaskData

Tree = Any


def _leaves(tree: Tree) -> list[torch.Tensor]:
    return pytree.tree_leaves(tree)


def _detach(tree: Tree) -> Tree:
    return pytree.tree_map(lambda t: t.detach(), tree)


class MetaLearner:
    """Shared machinery: functional inner loop, vmapped meta-training with Adam, batched evaluation."""

    name = "base"
    first_order = False  # detach inner gradients while meta-training
    input_dim = 1

    def __init__(
        self,
        hidden: tuple[int, ...] = (40, 40),
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        inner_lr: float = 0.01,
    ) -> None:
        self.hidden, self.seed, self.dtype, self.inner_lr = tuple(hidden), seed, dtype, inner_lr
        self.sizes = (self.input_dim, *self.hidden, 1)
        self.meta: Tree = self._init_meta()
        for leaf in _leaves(self.meta):
            leaf.requires_grad_(True)
        self.sampler = SinusoidTasks()
        self.iterations_trained = 0

    def initialization(self) -> torch.Tensor:
        """The meta-learned network as one flat float32 vector in the LR env's sinusoid layout.

        ``MetaOpt-LR-v0`` with ``task_family="sinusoid"`` and ``initial_params=learner.initialization()``
        starts every inner problem from it, so meta-learned initialization and learned control
        (RL², the baselines) can be measured together. Both lay out each layer as its
        ``(fan_in, fan_out)`` weight, row-major, then its bias.
        """
        if self.input_dim != 1 or self.hidden != (40, 40):
            raise ValueError(
                "initialization() needs the 1-40-40-1 network of the LR env's sinusoid family "
                f"(input_dim 1, hidden (40, 40)); this learner has {self.input_dim}, {self.hidden}"
            )
        return flatten_params({k: v.detach() for k, v in self.meta["net"].items()}).to(torch.float32)

    # ---- per-task pieces (overridden by the learners) -------------------------------------
    def _init_meta(self) -> Tree:
        return {"net": init_mlp(self.sizes, self.seed, self.dtype)}

    def _init_fast(self, meta: Tree) -> Tree:
        return meta["net"]

    def _loss(self, meta: Tree, fast: Tree, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mse(mlp_forward(fast, x), y)

    def _update(self, meta: Tree, fast: Tree, g: Tree, lr: float) -> Tree:
        return pytree.tree_map(lambda p, d: p - lr * d, fast, g)

    # ---- inner loop -------------------------------------------------------------------------
    def inner_step(
        self, meta: Tree, fast: Tree, x: torch.Tensor, y: torch.Tensor, lr: float, first_order: bool
    ) -> Tree:
        """One SGD step on one task's ``(x, y)``; ``first_order`` stops gradients through the step's gradient."""
        g = grad(self._loss, argnums=1)(meta, fast, x, y)
        if first_order:
            g = _detach(g)
        return self._update(meta, fast, g, lr)

    def adapt(self, meta: Tree, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, first_order: bool) -> Tree:
        fast = self._init_fast(meta)
        for _ in range(steps):
            fast = self.inner_step(meta, fast, x, y, lr, first_order)
        return fast

    def _task_objective(self, meta, xs, ys, xq, yq, steps: int, lr: float) -> torch.Tensor:
        """Query loss after ``steps`` inner steps on the support set (one task)."""
        fast = self.adapt(meta, xs, ys, steps, lr, self.first_order)
        return self._loss(meta, fast, xq, yq)

    # ---- meta-objective and gradients -------------------------------------------------------
    def _batch(self, tasks: TaskData, shots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(support x, support y, query x, query y) in the learner's dtype."""
        xs, ys, xq, yq = (t.to(self.dtype) for t in support_query(tasks, shots))
        return xs, ys, xq, yq

    def meta_loss(
        self, tasks: TaskData, shots: int, inner_steps: int, inner_lr: float, meta: Tree | None = None
    ) -> torch.Tensor:
        """Mean over tasks of the query loss after adaptation (differentiable w.r.t. ``meta``)."""
        meta = self.meta if meta is None else meta
        xs, ys, xq, yq = self._batch(tasks, shots)
        per_task = vmap(self._task_objective, in_dims=(None, 0, 0, 0, 0, None, None))
        return per_task(meta, xs, ys, xq, yq, inner_steps, inner_lr).mean()

    def meta_gradient(
        self, tasks: TaskData, shots: int, inner_steps: int, inner_lr: float
    ) -> tuple[torch.Tensor, Tree]:
        """(meta-loss, meta-gradient tree shaped like ``self.meta``) on one batch of tasks."""
        leaves, spec = pytree.tree_flatten(self.meta)
        loss = self.meta_loss(tasks, shots, inner_steps, inner_lr)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        dense = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]  # unused leaves: zero
        return loss.detach(), pytree.tree_unflatten(dense, spec)

    def _on_train_start(self, inner_lr: float) -> None:
        self.inner_lr = inner_lr

    def meta_train(
        self,
        num_iterations: int,
        meta_batch_size: int = 25,
        shots: int = 10,
        inner_steps: int = 1,
        inner_lr: float = 0.01,
        outer_lr: float = 1e-3,
        seed: int = 0,
        num_query: int | None = None,
        log_every: int = 0,
    ) -> dict[str, Any]:
        """Meta-train with Adam(``outer_lr``) on ``meta_batch_size`` fresh train-split tasks per iteration.

        ``seed`` picks the stream of training tasks (the initialisation is the
        constructor's ``seed``); each task has ``shots`` support and
        ``num_query`` (default ``shots``, as in Finn et al.) query points.
        Returns ``{"losses": [...], "wall_s": ...}``.
        """
        self._on_train_start(inner_lr)
        num_query = shots if num_query is None else num_query
        leaves = pytree.tree_leaves(self.meta)
        opt = torch.optim.Adam(leaves, lr=outer_lr)
        losses, start = [], time.perf_counter()
        for it in range(num_iterations):
            tasks = self.sampler.sample(
                meta_batch_size, shots, num_query, "train", seed, start=(self.iterations_trained + it) * meta_batch_size
            )
            loss, g = self.meta_gradient(tasks, shots, inner_steps, inner_lr)
            for p, gp in zip(leaves, pytree.tree_leaves(g)):
                p.grad = gp
            opt.step()
            losses.append(float(loss))
            if log_every and (it + 1) % log_every == 0:
                print(
                    f"[{self.name}] iter {it + 1}/{num_iterations} "
                    f"meta-loss {sum(losses[-log_every:]) / log_every:.4f}",
                    flush=True,
                )
        self.iterations_trained += num_iterations
        for p in leaves:
            p.grad = None
        return {"losses": losses, "wall_s": time.perf_counter() - start}

    # ---- evaluation -------------------------------------------------------------------------
    def adapt_and_evaluate(self, tasks: TaskData, shots: int, steps: int, lr: float | None = None) -> torch.Tensor:
        """Query MSE ``(n_tasks, steps + 1)`` after 0..``steps`` SGD steps (lr: the training inner lr)
        on each task's first ``shots`` support points; vmapped over tasks."""
        lr = self.inner_lr if lr is None else lr
        meta = _detach(self.meta)

        def per_task(xs, ys, xq, yq):
            fast = self._init_fast(meta)
            out = [self._loss(meta, fast, xq, yq)]
            for _ in range(steps):
                fast = self.inner_step(meta, fast, xs, ys, lr, first_order=True)
                out.append(self._loss(meta, fast, xq, yq))
            return torch.stack(out)

        return vmap(per_task)(*self._batch(tasks, shots)).detach()


class MAML(MetaLearner):
    """Model-agnostic meta-learning (Finn et al., 2017), second order: the meta-gradient
    differentiates through the inner gradient steps."""

    name = "maml"


class FOMAML(MetaLearner):
    """First-order MAML: the meta-gradient is the query gradient at the adapted parameters."""

    name = "fomaml"
    first_order = True


class MetaSGD(MetaLearner):
    """Meta-SGD (Li et al., 2017): MAML with a learned learning rate per parameter (``meta["alpha"]``),
    initialised to ``inner_lr`` at the start of meta-training. Second order."""

    name = "metasgd"

    def _init_meta(self) -> Tree:
        net = init_mlp(self.sizes, self.seed, self.dtype)
        return {"net": net, "alpha": {k: torch.full_like(v, self.inner_lr) for k, v in net.items()}}

    def _on_train_start(self, inner_lr: float) -> None:
        super()._on_train_start(inner_lr)
        if self.iterations_trained == 0:
            with torch.no_grad():
                for a in _leaves(self.meta["alpha"]):
                    a.fill_(inner_lr)

    def _update(self, meta: Tree, fast: Tree, g: Tree, lr: float) -> Tree:
        return {k: fast[k] - meta["alpha"][k] * g[k] for k in fast}


class CAVIA(MetaLearner):
    """CAVIA (Zintgraf et al., 2019): ``num_context`` context parameters, zero at the start of every
    task and fed to the network as extra inputs, are the only parameters adapted in the inner loop;
    the network is meta-learned (second order)."""

    name = "cavia"

    def __init__(
        self,
        hidden: tuple[int, ...] = (40, 40),
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        inner_lr: float = 1.0,
        num_context: int = 5,
    ) -> None:
        self.num_context = num_context
        self.input_dim = 1 + num_context
        super().__init__(hidden, seed, dtype, inner_lr)

    def _init_fast(self, meta: Tree) -> torch.Tensor:
        return torch.zeros(self.num_context, dtype=self.dtype)

    def _loss(self, meta: Tree, fast: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        context = fast.expand(*x.shape[:-1], self.num_context)
        return mse(mlp_forward(meta["net"], torch.cat([x, context], -1)), y)

    def _update(self, meta: Tree, fast: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
        return fast - lr * g


class Reptile(MetaLearner):
    """Reptile (Nichol et al., 2018): ``inner_steps`` SGD steps on each task's support set, then the
    meta-gradient ``theta - mean(phi_task)`` is fed to Adam. The reported loss is the query loss
    after adaptation."""

    name = "reptile"
    first_order = True

    def meta_gradient(
        self, tasks: TaskData, shots: int, inner_steps: int, inner_lr: float
    ) -> tuple[torch.Tensor, Tree]:
        meta = _detach(self.meta)
        xs, ys, xq, yq = self._batch(tasks, shots)

        def per_task(xs, ys, xq, yq):
            fast = self.adapt(meta, xs, ys, inner_steps, inner_lr, first_order=True)
            return fast, self._loss(meta, fast, xq, yq)

        fast, loss = vmap(per_task)(xs, ys, xq, yq)
        net_grad = {k: meta["net"][k] - fast[k].mean(0) for k in fast}
        return loss.mean().detach(), {"net": net_grad}


class Pretrained(MetaLearner):
    """Joint-training baseline: one network fit to the support and query points of all training
    tasks without adaptation (``inner_steps`` ignored while training); fine-tuned at test time
    with the same SGD steps as the others."""

    name = "pretrained"

    def _task_objective(self, meta, xs, ys, xq, yq, steps: int, lr: float) -> torch.Tensor:
        return self._loss(meta, meta["net"], torch.cat([xs, xq]), torch.cat([ys, yq]))


LEARNERS: dict[str, type[MetaLearner]] = {cls.name: cls for cls in (MAML, FOMAML, Reptile, MetaSGD, CAVIA, Pretrained)}
