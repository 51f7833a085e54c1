"""``check_task_family``: a smoke test every task family passes, with messages that name the problem.

In the spirit of learned_optimization's task smoke tests: the checker calls
every method of a family on batches of two sizes (1 and 3 by default) and
both splits, and raises :class:`TaskFamilyError` (a ``ValueError``) at the
first problem, with a message that names the family, the method and what is
wrong, e.g.::

    task family 'least_squares' (LeastSquares), minibatch_loss (n=3, split='train'): returned
    shape (), expected (n,) = (3,): one loss per problem; reduce over each problem's data
    (e.g. .mean(-1)), never over the problems

What it checks, for every kind:

* ``sample(keys, split)`` returns plain task data: a non-empty dict of tensors
  with leading dimension ``n``, on the keys' device; the fields each
  environment needs, with their shapes and dtypes (HPO: ``dim``, ``f_opt``,
  ``f_ref``, ``exact_optimum``, ``x_opt``, ``family``; Ensemble: ``family``,
  ``num_regimes``, ``regime_params``);
* ``families()``, ``family_index(tasks)`` and ``to(device)``; a mixture's
  members are checked first, each on its own;
* determinism (the same keys give the same tasks) and batch equivalence (row
  ``i`` of a batch equals sampling, or evaluating, that row alone, within a
  small tolerance);
* the int64 keys are used whole: keys that differ only in their lowest bit,
  or only above bit 32, give different draws (a cast to float or int32 merges them);

and per kind:

* LR: ``init_params`` is ``(n, P)`` float32, finite, one row per problem (not a
  broadcast ``(P,)`` vector or a stride-0 view); ``loss`` is ``(n,)``, finite
  and positive at the initial parameters; ``minibatch_loss`` is ``(n,)``
  (not a scalar) and differentiable in ``params``; ``minibatch_loss_and_grad``
  and ``loss_and_paired_grads`` have the right shapes, finite values, and
  agree with the losses (and, in the full check, with autograd);
* Ensemble: ``realise(tasks, episode_keys, length)`` returns ``values``
  ``(n, length)`` float32 finite, ``regime`` ``(n, length)`` int64 within each
  task's regimes and the declared ``extra_fields``; ``sample_stream`` agrees;
* HPO: ``evaluate`` and ``evaluate_points`` return finite float32 values of
  the right shape in the whole cube, ``f(x_opt) = f_opt``, ``f_ref > f_opt``,
  and (full check) no value below an exact ``f_opt``.

The environments run the cheap part (``quick=True``: no key-width check, no
comparison with autograd, no search below ``f_opt``) when a user passes a
family instance.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import torch

from metaopt_envs.core import rng
from metaopt_envs.core.family import (
    ENV_IDS,
    KINDS,
    SPLITS,
    TaskData,
    TaskFamily,
    check_kind,
    check_split,
    describe,
    take,
)
from metaopt_envs.core.mixture import TaskMixture

_BASES = {
    "lr": "metaopt_envs.lr.families.LRTaskFamily",
    "ensemble": "metaopt_envs.ensemble.families.StreamFamily",
    "hpo": "metaopt_envs.hpo.families.ObjectiveFamily",
}
_WIDE_BATCH = 16  # tasks per draw of the key-width check
_LOW_BIT, _HIGH_BIT = 1, 1 << 40


class TaskFamilyError(ValueError):
    """A task family broke the protocol; ``method`` and ``problem`` say where and what."""

    def __init__(self, family: object, method: str, problem: str) -> None:
        self.family_name = str(getattr(family, "name", "?"))
        self.method = method
        self.problem = problem
        super().__init__(f"task family {describe(family)}, {method}: {problem}")


def check_task_family(
    family: TaskFamily,
    kind: str | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 3),
    splits: Sequence[str] = SPLITS,
    length: int = 100,
    device: torch.device | str = "cpu",
    quick: bool = False,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> None:
    """Check that ``family`` keeps the task-family protocol of its environment kind; raise if not.

    ``kind``: ``"lr"``, ``"ensemble"`` or ``"hpo"`` (default: ``family.kind``,
    set by the base it subclasses). Every method is called on each batch size
    of ``batch_sizes`` (int64 keys ``(n,)`` on ``device``) and each split of
    ``splits``; Ensemble episodes have ``length`` steps. ``quick`` skips the
    costlier checks (see the module docstring). Row ``i`` of a batch must match
    that row alone within ``rtol`` and ``atol``.

    Raises :class:`TaskFamilyError` (a ``ValueError``) naming the family, the
    method and the problem; returns ``None`` when the family passes.
    """
    if not isinstance(family, TaskFamily):
        raise ValueError(
            f"family must be a task family instance (a subclass of one of {tuple(_BASES.values())}), got {family!r}"
        )
    family_kind = getattr(family, "kind", "")
    if family_kind not in KINDS:
        raise TaskFamilyError(
            family,
            "kind",
            f"is {family_kind!r}; subclass your environment's base ({', '.join(_BASES.values())}), "
            "not metaopt_envs.core.family.TaskFamily directly",
        )
    if kind is not None and check_kind(kind) != family_kind:
        raise TaskFamilyError(
            family,
            "kind",
            f"is {family_kind!r}, but kind={kind!r} ({ENV_IDS[kind]}) needs a subclass of {_BASES[kind]}",
        )
    sizes = [int(n) for n in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes!r}")
    split_names = [check_split(s) for s in splits]
    if isinstance(family, TaskMixture):  # the mixture's padding can hide a member's bug (a broadcast init)
        for member in family.members:
            check_task_family(
                member,
                family_kind,
                batch_sizes=sizes,
                splits=split_names,
                length=length,
                device=device,
                quick=quick,
                rtol=rtol,
                atol=atol,
            )
    checker = {"lr": _LRChecker, "ensemble": _StreamChecker, "hpo": _ObjectiveChecker}[family_kind]
    checker(family, sizes, split_names, length, torch.device(device), quick, rtol, atol).run()


# ---------------------------------------------------------------------------------------------- helpers
def _rows(mask: torch.Tensor) -> str:
    """The first few row indices where ``mask: (n,)`` is set, for a message."""
    index = mask.nonzero().flatten().tolist()
    return str(index[:5])[:-1] + (", ...]" if len(index) > 5 else "]")


def _same(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
    return bool(torch.equal(a, b))


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().nan_to_num(nan=float("inf")).max()) if a.numel() else 0.0


def _row_equal(a: TaskData | torch.Tensor, b: TaskData | torch.Tensor) -> torch.Tensor:
    """``(n,)`` bool: rows where every field of ``a`` and ``b`` is exactly equal."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = (
        [(a, b)]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        else [(a[k], b[k]) for k in a]
        if isinstance(a, dict) and isinstance(b, dict)
        else []
    )
    equal: torch.Tensor | None = None
    for x, y in pairs:
        same = torch.eq(x, y) | (torch.isnan(x) & torch.isnan(y)) if x.is_floating_point() else torch.eq(x, y)
        same = same.reshape(x.shape[0], -1).all(1)
        equal = same if equal is None else equal & same
    assert equal is not None
    return equal


class _Checker:
    """Checks of every kind; a subclass per kind adds its methods."""

    kind = ""

    def __init__(
        self,
        family: TaskFamily,
        sizes: list[int],
        splits: list[str],
        length: int,
        device: torch.device,
        quick: bool,
        rtol: float,
        atol: float,
    ) -> None:
        self.family: Any = family  # the kind's methods are called as the protocol declares them
        self.sizes, self.splits, self.length = sizes, splits, length
        self.device, self.quick, self.rtol, self.atol = device, quick, rtol, atol

    # ------------------------------------------------------------------ reporting
    def fail(self, method: str, problem: str) -> NoReturn:
        raise TaskFamilyError(self.family, method, problem)

    def call(self, method: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, with any exception it raises reported as the family's problem."""
        try:
            return fn(*args)
        except TaskFamilyError:
            raise
        except Exception as error:  # any error: reported with the method that raised it
            raise TaskFamilyError(self.family, method, f"raised {type(error).__name__}: {error}") from error

    def keys(self, n: int, stream: int) -> torch.Tensor:
        """``(n,)`` int64 keys spread over the whole int64 range (like the environments' row keys)."""
        return rng.keys_from_seeds([1000 * stream + i for i in range(n)], self.device)

    def expect(
        self,
        method: str,
        value: Any,
        shape: tuple[int, ...],
        dtype: torch.dtype | None,
        what: str = "returned",
        hint: str = "",
    ) -> torch.Tensor:
        """``value`` must be a tensor of ``shape`` and ``dtype`` on the checker's device."""
        if not isinstance(value, torch.Tensor):
            self.fail(method, f"{what} {type(value).__name__}, expected a tensor of shape {shape}")
        if tuple(value.shape) != shape:
            self.fail(method, f"{what} shape {tuple(value.shape)}, expected {shape}{hint}")
        if dtype is not None and value.dtype != dtype:
            self.fail(method, f"{what} dtype {value.dtype}, expected {dtype}")
        if value.device != self.device and not (value.device.type == self.device.type == "cuda"):
            self.fail(
                method,
                f"{what} a tensor on {value.device}, the keys are on {self.device}: "
                "create tensors on the keys' device and move held data in to(device)",
            )
        return value

    def expect_finite(self, method: str, value: torch.Tensor, what: str = "returned") -> None:
        bad = ~torch.isfinite(value).reshape(value.shape[0], -1).all(1) if value.dim() else ~torch.isfinite(value)
        if bad.any():
            rows = _rows(bad) if value.dim() else ""
            self.fail(method, f"{what} non-finite values (NaN or inf) in rows {rows}")

    def expect_same(self, method: str, batch: torch.Tensor, single: torch.Tensor, row: int, n: int, what: str) -> None:
        if not _same(batch, single, self.rtol, self.atol):
            self.fail(
                method,
                f"row {row} of a batch of {n} differs from the same row alone ({what}, largest difference "
                f"{_max_difference(batch, single):.3g}): rows must be independent problems, with randomness "
                "drawn only from each row's key (metaopt_envs.core.rng), never from the batch or a global RNG",
            )

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        self.check_to()
        names = self.call("families", self.family.families)
        if not isinstance(names, (tuple, list)) or not names or not all(isinstance(v, str) and v for v in names):
            self.fail("families", f"returned {names!r}, expected a non-empty tuple of family names")
        self.names = tuple(names)
        self.check_attributes()
        for split in self.splits:
            for n in self.sizes:
                where = f"(n={n}, split={split!r})"
                keys = self.keys(n, 1)
                tasks = self.sample(keys, split, where)
                again = self.call(f"sample {where}", self.family.sample, keys, split)
                for name, value in tasks.items():
                    if name not in again or not _same(value, again[name], 0.0, 0.0):
                        self.fail(
                            f"sample {where}",
                            f"two calls with the same keys gave different tasks (field {name!r}): draw randomness "
                            "only from the keys (metaopt_envs.core.rng), never from torch's global RNG",
                        )
                index = self.call(f"family_index {where}", self.family.family_index, tasks)
                index = self.expect(f"family_index {where}", index, (n,), torch.int64)
                if ((index < 0) | (index >= len(self.names))).any():
                    self.fail(
                        f"family_index {where}",
                        f"returned {index.tolist()}, expected indices into families() = {self.names}",
                    )
                self.check_methods(tasks, keys, split, n, where)
                if n == max(self.sizes) and n > 1:
                    for row in range(n):
                        alone = self.sample(keys[row : row + 1], split, f"(n=1, split={split!r})")
                        for name, value in tasks.items():
                            if name in alone:
                                self.expect_same(
                                    f"sample {where}", value[row : row + 1], alone[name], row, n, f"field {name!r}"
                                )
                        self.check_row(tasks, keys, split, n, row, where)
        if not self.quick:
            self.check_key_width(self.splits[0])

    def check_to(self) -> None:
        moved = self.call("to", self.family.to, self.device)
        if moved is None:
            self.fail("to", "returned None; to(device) must return the family (end it with 'return self')")
        if not isinstance(moved, TaskFamily) or moved.kind != self.family.kind:
            self.fail("to", f"returned {moved!r}, expected the family itself ('return self')")
        self.family = moved

    def sample(self, keys: torch.Tensor, split: str, where: str) -> TaskData:
        method = f"sample {where}"
        tasks = self.call(method, self.family.sample, keys, split)
        self.expect_task_data(method, tasks, keys.shape[0], "task data")
        self.check_required(method, tasks, keys.shape[0])
        return tasks

    def expect_task_data(self, method: str, tasks: Any, n: int, what: str) -> None:
        if not isinstance(tasks, dict) or not tasks:
            self.fail(
                method,
                f"returned {type(tasks).__name__} {tasks!r:.80}, expected {what}: a non-empty dict "
                "of tensors whose leading dimension is the number of keys",
            )
        for name, value in tasks.items():
            if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                self.fail(
                    method,
                    f"field {name!r} is a {type(value).__name__}, expected a tensor ({what} is a flat dict of tensors)",
                )
            if value.dim() == 0 or value.shape[0] != n:
                self.fail(
                    method,
                    f"field {name!r} has shape {tuple(value.shape)}; every field needs the number of "
                    f"keys, n = {n}, as its leading dimension",
                )
            self.expect(method, value, tuple(value.shape), None, what=f"field {name!r} is")

    def require(self, method: str, tasks: TaskData, fields: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
        """``tasks`` must hold every field of ``fields`` (name -> shape, dtype)."""
        missing = [name for name in fields if name not in tasks]
        if missing:
            self.fail(
                method,
                f"is missing the required field(s) {missing}: every {ENV_IDS[self.kind]} task carries {tuple(fields)}",
            )
        for name, (shape, dtype) in fields.items():
            self.expect(method, tasks[name], shape, dtype, what=f"field {name!r} has")

    def check_key_width(self, split: str) -> None:
        """The keys must be used as whole int64 values (not cast to float or int32)."""
        base, other = self.keys(_WIDE_BATCH, 7), self.keys(_WIDE_BATCH, 8)
        for method, draw in self.keyed_draws(split):
            reference = draw(base)
            differs = ~_row_equal(reference, draw(other))
            if int(differs.sum()) < 4:  # the draw does not depend on the keys (a fixed task): nothing to check
                continue
            for bit, meaning in ((_LOW_BIT, "only in their lowest bit"), (_HIGH_BIT, "only in bit 40")):
                if _row_equal(reference, draw(base ^ bit))[differs].all():
                    self.fail(
                        method,
                        f"keys that differ {meaning} gave identical draws, while other keys give different ones: "
                        "the int64 keys seem to be cast to a narrower type (float or int32); use them whole, "
                        "through metaopt_envs.core.rng (rng.fold, rng.uniform, rng.normal, ...)",
                    )

    # ------------------------------------------------------------------ per kind
    def check_attributes(self) -> None:
        pass

    def check_required(self, method: str, tasks: TaskData, n: int) -> None:
        pass

    def check_methods(self, tasks: TaskData, keys: torch.Tensor, split: str, n: int, where: str) -> None:
        pass

    def check_row(self, tasks: TaskData, keys: torch.Tensor, split: str, n: int, row: int, where: str) -> None:
        pass

    def keyed_draws(self, split: str) -> list[tuple[str, Callable[[torch.Tensor], TaskData | torch.Tensor]]]:
        """(method, keys -> draw) for every method that takes keys."""
        return [("sample", lambda keys: self.call("sample", self.family.sample, keys, split))]


def _positive_int_attribute(checker: _Checker, name: str, meaning: str) -> int:
    value = getattr(checker.family, name, None)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise TaskFamilyError(checker.family, name, f"is {value!r}; set it to a positive int: {meaning}")
    return int(value)


class _LRChecker(_Checker):
    kind = "lr"

    def check_attributes(self) -> None:
        self.param_dim = _positive_int_attribute(self, "param_dim", "the length P of the flat parameter vector")
        if not isinstance(getattr(self.family, "has_validation", False), bool):
            self.fail("has_validation", "must be a bool")

    def init(self, tasks: TaskData, keys: torch.Tensor, n: int, where: str) -> torch.Tensor:
        method, p = f"init_params {where}", self.param_dim
        params = self.call(method, self.family.init_params, tasks, keys)
        if isinstance(params, torch.Tensor) and (
            tuple(params.shape) == (p,) or (n > 1 and tuple(params.shape) == (1, p))
        ):
            self.fail(
                method,
                f"returned shape {tuple(params.shape)}, expected (n, P) = {(n, p)}: one parameter "
                f"row per problem; a shared {tuple(params.shape)} vector would be broadcast to every row",
            )
        self.expect(method, params, (n, p), torch.float32, hint=" (n problems, P = param_dim)")
        if n > 1 and params.stride(0) == 0:
            self.fail(
                method,
                "returned a broadcast view (stride 0 along the rows, e.g. from expand()): every "
                "problem must own its parameter row; return a new tensor (e.g. .clone() or .repeat())",
            )
        if params.requires_grad:
            self.fail(
                method,
                "returned a tensor attached to an autograd graph (requires_grad=True); return plain data (detach() it)",
            )
        self.expect_finite(method, params)
        return params

    def losses(
        self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor, n: int, where: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scalar_hint = (
            ": one loss per problem; reduce over each problem's data (e.g. .mean(-1)), never over the problems"
        )
        method = f"loss {where}"
        loss = self.call(method, self.family.loss, params, tasks, "train")
        self.expect(method, loss, (n,), torch.float32, hint=scalar_hint)
        self.expect_finite(method, loss, "returned, at the initial parameters,")
        if (loss <= 0).any():
            self.fail(
                method,
                f"is {loss.tolist()} at the initial parameters: zero or negative in rows {_rows(loss <= 0)}; "
                "the LR environment measures progress relative to the initial loss (log L / L_0), "
                "so it must be positive (start away from the optimum, or add a constant)",
            )
        if self.family.has_validation:
            val = self.call(f"loss(split='val') {where}", self.family.loss, params, tasks, "val")
            self.expect(f"loss(split='val') {where}", val, (n,), torch.float32, hint=scalar_hint)
            self.expect_finite(f"loss(split='val') {where}", val)
        method = f"minibatch_loss {where}"
        minibatch = self.call(method, self.family.minibatch_loss, params, tasks, keys)
        self.expect(method, minibatch, (n,), torch.float32, hint=scalar_hint)
        self.expect_finite(method, minibatch)
        return loss, minibatch

    def check_methods(self, tasks: TaskData, keys: torch.Tensor, split: str, n: int, where: str) -> None:
        p = self.param_dim
        init_keys, batch_keys, other_keys = rng.fold(keys, 11), rng.fold(keys, 12), rng.fold(keys, 13)
        params = self.init(tasks, init_keys, n, where)
        loss, minibatch = self.losses(params, tasks, batch_keys, n, where)

        method = f"minibatch_loss {where}"
        leaf = params.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            graph = self.call(method, self.family.minibatch_loss, leaf, tasks, batch_keys)
            if not isinstance(graph, torch.Tensor) or graph.grad_fn is None:
                self.fail(
                    method,
                    "is detached from params (its result has no grad_fn, so no gradient reaches the "
                    "parameters): compute it from params with differentiable torch operations; no "
                    ".detach(), .item(), .numpy() or torch.no_grad() on the way",
                )
            (autograd,) = torch.autograd.grad(graph.sum(), leaf, allow_unused=True)
        if autograd is None:
            self.fail(method, "does not depend on params (autograd finds no path from the loss to the parameters)")
        self.expect_finite(method, autograd, "has a gradient with")

        method = f"minibatch_loss_and_grad {where}"
        value, grad = self.call(method, self.family.minibatch_loss_and_grad, params, tasks, batch_keys)
        self.expect(method, value, (n,), torch.float32, what="returned a loss of")
        self.expect(method, grad, (n, p), torch.float32, what="returned a gradient of")
        self.expect_finite(method, grad, "returned a gradient with")
        if not _same(value, minibatch, self.rtol, self.atol):
            self.fail(
                method,
                f"returned the loss {value.tolist()}, but minibatch_loss gives {minibatch.tolist()} with the same keys",
            )
        if not self.quick:
            scale = autograd.norm(dim=-1, keepdim=True) + 1e-6
            if ((grad - autograd).norm(dim=-1, keepdim=True) > 1e-3 * scale).any():
                self.fail(
                    method,
                    f"returned a gradient that differs from autograd's gradient of minibatch_loss (largest "
                    f"difference {_max_difference(grad, autograd):.3g}): a closed-form gradient must be "
                    "the gradient of minibatch_loss",
                )

        method = f"loss_and_paired_grads {where}"
        full, grads = self.call(method, self.family.loss_and_paired_grads, params, tasks, batch_keys, other_keys)
        self.expect(method, full, (n,), torch.float32, what="returned a loss of")
        self.expect(
            method, grads, (n, 2, p), torch.float32, what="returned gradients of", hint=" (n, the two minibatches, P)"
        )
        self.expect_finite(method, grads, "returned gradients with")
        if not _same(full, loss, self.rtol, self.atol):
            self.fail(
                method, f"returned the loss {full.tolist()}, but loss(params, tasks, 'train') gives {loss.tolist()}"
            )
        if not _same(grads[:, 0], grad, self.rtol, self.atol):
            self.fail(
                method,
                "returned a first gradient that differs from minibatch_loss_and_grad with the same keys "
                f"(largest difference {_max_difference(grads[:, 0], grad):.3g})",
            )
        self._params, self._loss, self._minibatch = params, loss, minibatch

    def check_row(self, tasks: TaskData, keys: torch.Tensor, split: str, n: int, row: int, where: str) -> None:
        one = slice(row, row + 1)
        sub = take(tasks, torch.arange(row, row + 1, device=self.device))
        single = f"(n=1, split={split!r})"
        params = self.init(sub, rng.fold(keys, 11)[one], 1, single)
        self.expect_same(f"init_params {where}", self._params[one], params, row, n, "initial parameters")
        loss, minibatch = self.losses(params, sub, rng.fold(keys, 12)[one], 1, single)
        self.expect_same(f"loss {where}", self._loss[one], loss, row, n, "full loss")
        self.expect_same(f"minibatch_loss {where}", self._minibatch[one], minibatch, row, n, "minibatch loss")

    def keyed_draws(self, split: str) -> list[tuple[str, Callable[[torch.Tensor], TaskData | torch.Tensor]]]:
        fixed = self.keys(_WIDE_BATCH, 9)
        tasks = self.call("sample", self.family.sample, fixed, split)
        params = self.call("init_params", self.family.init_params, tasks, fixed).detach()
        return [
            *super().keyed_draws(split),
            ("init_params", lambda keys: self.call("init_params", self.family.init_params, tasks, keys).detach()),
            (
                "minibatch_loss",
                lambda keys: self.call("minibatch_loss", self.family.minibatch_loss, params, tasks, keys),
            ),
        ]


class _StreamChecker(_Checker):
    kind = "ensemble"

    def check_attributes(self) -> None:
        self.max_regimes = _positive_int_attribute(self, "max_regimes", "the most regimes a task has")
        names = getattr(self.family, "param_names", None)
        if not isinstance(names, tuple) or not all(isinstance(v, str) for v in names):
            raise TaskFamilyError(
                self.family, "param_names", f"is {names!r}; set it to a tuple of names, the columns of regime_params"
            )
        extra = getattr(self.family, "extra_fields", None)
        if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in extra.items()):
            raise TaskFamilyError(
                self.family, "extra_fields", f"is {extra!r}; set it to a dict: episode field name -> int fill value"
            )
        self.param_names: tuple[str, ...] = names
        self.extra_fields: dict[str, int] = extra

    def check_required(self, method: str, tasks: TaskData, n: int) -> None:
        self.require(
            method,
            tasks,
            {
                "family": ((n,), torch.int64),
                "num_regimes": ((n,), torch.int64),
                "regime_params": ((n, self.max_regimes, len(self.param_names)), torch.float32),
            },
        )
        count = tasks["num_regimes"]
        if ((count < 1) | (count > self.max_regimes)).any():
            self.fail(
                method,
                f"field 'num_regimes' is {count.tolist()}, expected values in 1..max_regimes = 1..{self.max_regimes}",
            )
        self.expect_finite(method, tasks["regime_params"], "field 'regime_params' has")

    def episode(self, tasks: TaskData, keys: torch.Tensor, n: int, where: str) -> TaskData:
        method, length = f"realise {where}", self.length
        out = self.call(method, self.family.realise, tasks, keys, length)
        self.expect_task_data(method, out, n, "episode data")
        fields = {"values": ((n, length), torch.float32), "regime": ((n, length), torch.int64)}
        fields.update(dict.fromkeys(self.extra_fields, ((n, length), torch.int64)))
        missing = [name for name in fields if name not in out]
        if missing:
            self.fail(
                method,
                f"is missing the required field(s) {missing}: every {ENV_IDS[self.kind]} episode "
                f"carries {tuple(fields)} (the last ones from extra_fields)",
            )
        for name, (shape, dtype) in fields.items():
            self.expect(method, out[name], shape, dtype, what=f"field {name!r} has")
        self.expect_finite(method, out["values"], "field 'values' has")
        regime, count = out["regime"], tasks["num_regimes"].unsqueeze(-1)
        outside = ((regime < 0) | (regime >= count)).any(1)
        if outside.any():
            self.fail(method, f"field 'regime' leaves 0..num_regimes-1 in rows {_rows(outside)}")
        return out

    def check_methods(self, tasks: TaskData, keys: torch.Tensor, split: str, n: int, where: str) -> None:
        episode_keys = rng.fold(keys, 21)
        self._episode = self.episode(tasks, episode_keys, n, where)
        again = self.call(f"realise {where}", self.family.realise, tasks, episode_keys, self.length)
        for name, value in self._episode.items():
            if not _same(value, again.get(name, value[:0]), 0.0, 0.0):
                self.fail(
                    f"realise {where}",
                    f"two calls with the same tasks and episode keys gave different "
                    f"episodes (field {name!r}): draw randomness only from the keys",
                )
        method = f"sample_stream {where}"
        stream = self.call(method, self.family.sample_stream, keys, episode_keys, self.length, split)
        for name, value in {
            **{k: tasks[k] for k in ("family", "num_regimes", "regime_params")},
            **self._episode,
        }.items():
            if name not in stream or not _same(stream[name], value, self.rtol, self.atol):
                self.fail(method, f"field {name!r} differs from sample followed by realise")

    def check_row(self, tasks: TaskData, keys: torch.Tensor, split: str, n: int, row: int, where: str) -> None:
        sub = take(tasks, torch.arange(row, row + 1, device=self.device))
        alone = self.episode(sub, rng.fold(keys, 21)[row : row + 1], 1, f"(n=1, split={split!r})")
        for name, value in self._episode.items():
            self.expect_same(f"realise {where}", value[row : row + 1], alone[name], row, n, f"field {name!r}")

    def keyed_draws(self, split: str) -> list[tuple[str, Callable[[torch.Tensor], TaskData | torch.Tensor]]]:
        tasks = self.call("sample", self.family.sample, self.keys(_WIDE_BATCH, 9), split)
        return [
            *super().keyed_draws(split),
            ("realise", lambda keys: self.call("realise", self.family.realise, tasks, keys, self.length)),
        ]


class _ObjectiveChecker(_Checker):
    kind = "hpo"

    def check_attributes(self) -> None:
        self.max_dim = _positive_int_attribute(self, "max_dim", "the largest dimension of the family's objectives")

    def check_required(self, method: str, tasks: TaskData, n: int) -> None:
        d = self.max_dim
        self.require(
            method,
            tasks,
            {
                "dim": ((n,), torch.int64),
                "f_opt": ((n,), torch.float32),
                "f_ref": ((n,), torch.float32),
                "exact_optimum": ((n,), torch.bool),
                "x_opt": ((n, d), torch.float32),
                "family": ((n,), torch.int64),
            },
        )
        dim = tasks["dim"]
        if ((dim < 1) | (dim > d)).any():
            self.fail(method, f"field 'dim' is {dim.tolist()}, expected values in 1..max_dim = 1..{d}")
        for name in ("f_opt", "f_ref", "x_opt"):
            self.expect_finite(method, tasks[name], f"field {name!r} has")
        if (tasks["f_ref"] <= tasks["f_opt"]).any():
            self.fail(
                method,
                f"field 'f_ref' must exceed 'f_opt' (regrets are normalized by f_ref - f_opt), "
                f"but not in rows {_rows(tasks['f_ref'] <= tasks['f_opt'])}",
            )
        if (tasks["x_opt"].abs() > 1).any():
            self.fail(method, "field 'x_opt' leaves the cube [-1, 1]^max_dim")

    def points(self, keys: torch.Tensor) -> torch.Tensor:
        """``(n, 8, max_dim)``: the corners -1 and +1, and six uniform points of the cube."""
        n, d = keys.shape[0], self.max_dim
        uniform = 2.0 * rng.uniform(rng.fold(keys, 31), (6, d)) - 1.0
        corners = torch.stack([-torch.ones(n, d, device=keys.device), torch.ones(n, d, device=keys.device)], 1)
        return torch.cat([corners, uniform], dim=1)

    def values(self, tasks: TaskData, keys: torch.Tensor, n: int, where: str) -> torch.Tensor:
        method, points = f"evaluate {where}", self.points(keys)
        per_point = []
        for j in range(points.shape[1]):
            value = self.call(method, self.family.evaluate, tasks, points[:, j])
            self.expect(method, value, (n,), torch.float32, hint=": one value per objective")
            if not torch.isfinite(value).all():
                row = int((~torch.isfinite(value)).nonzero()[0])
                self.fail(
                    method,
                    f"returned non-finite values (NaN or inf), e.g. {value[row].item()} at "
                    f"x = {points[row, j].tolist()} (row {row})",
                )
            per_point.append(value)
        return torch.stack(per_point, dim=1)

    def check_methods(self, tasks: TaskData, keys: torch.Tensor, split: str, n: int, where: str) -> None:
        self._values = self.values(tasks, keys, n, where)
        method = f"evaluate_points {where}"
        many = self.call(method, self.family.evaluate_points, tasks, self.points(keys))
        self.expect(method, many, (n, self._values.shape[1]), torch.float32)
        self.expect_finite(method, many)
        method = f"evaluate {where}"
        at_optimum = self.call(method, self.family.evaluate, tasks, tasks["x_opt"])
        self.expect(method, at_optimum, (n,), torch.float32)
        f_opt, f_ref = tasks["f_opt"], tasks["f_ref"]
        tolerance = 1e-3 * (f_ref - f_opt) + 1e-5 * (1.0 + f_opt.abs())
        off = (at_optimum - f_opt).abs() > tolerance
        if off.any():
            row = int(off.nonzero()[0])
            self.fail(
                method,
                f"evaluate(x_opt) = {at_optimum[row].item():.6g} but f_opt = {f_opt[row].item():.6g} "
                f"(row {row}): x_opt must be a point where the objective takes the value f_opt",
            )
        if not self.quick:
            below = (self._values < (f_opt - tolerance).unsqueeze(-1)).any(1) & tasks["exact_optimum"]
            if below.any():
                self.fail(
                    method,
                    f"returned values below f_opt in rows {_rows(below)}, whose exact_optimum is True: "
                    "f_opt must be the global minimum (or set exact_optimum to False)",
                )

    def check_row(self, tasks: TaskData, keys: torch.Tensor, split: str, n: int, row: int, where: str) -> None:
        sub = take(tasks, torch.arange(row, row + 1, device=self.device))
        alone = self.values(sub, keys[row : row + 1], 1, f"(n=1, split={split!r})")
        self.expect_same(f"evaluate {where}", self._values[row : row + 1], alone, row, n, "values")
