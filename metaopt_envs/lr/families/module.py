"""Any torch model as an inner problem: B independent copies of an ``nn.Module``, advanced with ``torch.func``.

:class:`ModuleFamily` turns a module (an ``nn.Module`` or a factory that
returns one), the shape of one input sample, a data source and a loss into an
:class:`~metaopt_envs.lr.families.base.LRTaskFamily`. Every task owns one
flat parameter row of ``params: (n, P)``; its forward pass is
``functional_call(module, params_of_the_row, (inputs,))`` and the ``n`` rows
run as one program under ``torch.func.vmap`` (gradients by
``torch.func.grad_and_value``), so there is no Python loop over tasks:

======================  ==============================================================
what                    drawn from
======================  ==============================================================
task data               ``data(keys, split, num_train + num_val)``: a pool of tensors
                        (:class:`TensorPool`: rows without replacement, a separate
                        ``test_data`` pool for the test split) or your own keyed sampler
initialization          the row's init key: every tensor with two or more dimensions
                        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (torch's default for
                        ``nn.Linear`` and ``nn.Conv*``), 1-D tensors whose module value
                        is constant keep it (norm layers' ones and zeros), other 1-D
                        tensors (biases) ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the
                        fan-in of the weight of the same module
minibatches             ``batch_size`` training rows with replacement from each
                        minibatch key (the LR core draws two per inner step)
dropout                 every ``nn.Dropout`` is replaced by :class:`KeyedDropout`, whose
                        masks come from the minibatch key; the full loss runs in eval
                        mode (no dropout)
======================  ==============================================================

So row ``i`` of a batch is the run of a single env seeded ``i``, on the CPU or
a GPU, up to the order of floating-point reductions that ``vmap`` picks for
the batch size (measured in tests/test_module_family.py and stated in the README).

Buffers are shared by every task and must stay constant: a module whose
forward pass changes a buffer (batch norm's running statistics) is refused at
construction, with the fix (``track_running_stats=False``, ``GroupNorm`` or
``LayerNorm``). Other bad input is refused at construction too, each with a
message that names the problem and the fix: a module whose output does not fit
the loss, a loss that returns one value per sample, a data source with fewer
samples than a task needs or a minibatch larger than a task's training set,
parameters that do not require grad, and random operations other than
``nn.Dropout`` (they would not come from the keys).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from metaopt_envs.core import checks, rng
from metaopt_envs.lr.families.base import LRTaskFamily, TaskData, check_split, gather_rows, split_samples

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(outputs, targets) -> ()``: one task's mean loss over its samples (called per task, under ``vmap``)."""


class DataSampler(Protocol):
    """A keyed data source: ``sampler(keys: (n,), split, num_samples) -> (inputs, targets)`` with
    ``inputs: (n, num_samples, *input_shape)`` and ``targets: (n, num_samples, ...)``; randomness only from
    ``keys`` (:mod:`metaopt_envs.core.rng`)."""

    def __call__(self, keys: torch.Tensor, split: str, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``outputs: (m, C)`` against class indices ``targets: (m,)``: ``()``.

    The same value as ``F.cross_entropy``, computed with the classes along the first axis, where
    ``log_softmax`` over a few classes runs about 10x faster on the CPU than along the last.
    """
    if outputs.dim() != targets.dim() + 1 or outputs.shape[:-1] != targets.shape:
        raise ValueError(
            f"cross_entropy needs logits of shape (*targets.shape, classes) = ({', '.join(map(str, targets.shape))}, "
            f"C), got {tuple(outputs.shape)}"
        )
    log_probs = torch.log_softmax(outputs.reshape(-1, outputs.shape[-1]).transpose(0, 1), dim=0)
    return -log_probs.gather(0, targets.reshape(1, -1)).mean()


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``()`` of ``outputs`` against ``targets`` of the same shape."""
    return (outputs - targets).square().mean()


class TensorPool:
    """A data source of tensors: each task draws ``num_samples`` distinct rows of its split's pool.

    ``inputs: (N, *input_shape)``, ``targets: (N, ...)``; the test split draws from ``test_inputs`` /
    ``test_targets`` when given (held-out data), else from the same pool with unrelated keys.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        test_inputs: torch.Tensor | None = None,
        test_targets: torch.Tensor | None = None,
    ) -> None:
        self.pools = {"train": _pool("data", inputs, targets)}
        if (test_inputs is None) != (test_targets is None):
            raise ValueError("test_data must be an (inputs, targets) pair of tensors; got only one of them")
        if test_inputs is not None and test_targets is not None:
            self.pools["test"] = _pool("test_data", test_inputs, test_targets)

    def size(self, split: str) -> int:
        """Rows of the pool ``split`` draws from."""
        return int(self.pools.get(split, self.pools["train"])[1].shape[0])

    def to(self, device: torch.device | str) -> TensorPool:
        self.pools = {split: (x.to(device), y.to(device)) for split, (x, y) in self.pools.items()}
        return self

    def __call__(self, keys: torch.Tensor, split: str, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.pools.get(split, self.pools["train"])
        u = rng.uniform(rng.fold(keys, 1), (targets.shape[0],))
        rows = u.argsort(-1)[:, :num_samples]  # distinct rows, a function of each task's key alone
        return inputs[rows], targets[rows]


def _pool(label: str, inputs: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError(
            f"{label} must be an (inputs, targets) pair of tensors or a keyed sampler, got "
            f"({type(inputs).__name__}, {type(targets).__name__})"
        )
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
        raise ValueError(
            f"{label}: inputs and targets must hold the same positive number of samples along the first axis, got "
            f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if inputs.is_floating_point():
        inputs = inputs.to(torch.float32)
    if targets.is_floating_point():
        targets = targets.to(torch.float32)
    return inputs.detach(), targets.detach()


class KeyedDropout(nn.Module):
    """``nn.Dropout`` whose masks come from a key (set by :class:`ModuleFamily` per task and minibatch; without a
    key, e.g. when the module is called directly, it passes its input through)."""

    def __init__(self, p: float, salt: int) -> None:
        super().__init__()
        self.p, self.salt = float(p), int(salt)
        self.key: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.key is None:
            return x
        keep = rng.uniform(rng.fold(self.key.reshape(1), self.salt), tuple(x.shape))[0] >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


def _keyed_dropouts(module: nn.Module) -> list[KeyedDropout]:
    """Replace every ``nn.Dropout`` inside ``module`` by a :class:`KeyedDropout`; returns them in order."""
    found: list[KeyedDropout] = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                keyed = KeyedDropout(child.p, len(found))
                setattr(parent, name, keyed)
                found.append(keyed)
    return found


class ModuleFamily(LRTaskFamily):
    """A batched LR task family from any ``nn.Module``: B copies trained together with ``torch.func``.

    Arguments:

    - ``module``: an ``nn.Module`` (copied) or a callable that returns one; its parameters are the inner problem's
      (every one must require grad), its buffers constants shared by the tasks;
    - ``input_shape``: the shape of one input sample (the module sees ``(m, *input_shape)``);
    - ``data``: ``(inputs, targets)`` tensors (a :class:`TensorPool`; ``test_data`` adds a held-out pool for the
      test split) or a keyed :class:`DataSampler`;
    - ``loss``: ``loss(outputs, targets) -> ()``, the mean over one task's samples (default :func:`cross_entropy`);
    - ``num_train``, ``num_val``: samples per task for the training objective and the validation loss;
      ``batch_size``: samples per minibatch (with replacement from the training samples);
    - ``name``: the family's name in results.

    Tasks: ``inputs: (n, num_train, *input_shape)``, ``targets``, ``val_inputs``, ``val_targets``.
    ``P = param_dim`` is the module's parameter count.
    """

    has_validation = True

    def __init__(
        self,
        module: nn.Module | Callable[[], nn.Module],
        input_shape: tuple[int, ...],
        data: tuple[torch.Tensor, torch.Tensor] | DataSampler,
        loss: Loss = cross_entropy,
        test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        num_train: int = 128,
        num_val: int = 64,
        batch_size: int = 32,
        name: str = "module",
    ) -> None:
        self.num_train = checks.integer("num_train", num_train)
        self.num_val = checks.integer("num_val", num_val)
        self.batch_size = checks.integer("batch_size", batch_size)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        if isinstance(module, nn.Module):
            module = copy.deepcopy(module)
        elif callable(module):
            module = module()
        if not isinstance(module, nn.Module):
            raise ValueError(f"module must be an nn.Module or a callable returning one, got {module!r}")
        try:
            self.input_shape = tuple(checks.integer("input_shape", int(size)) for size in input_shape)
        except (TypeError, ValueError):
            raise ValueError(
                f"input_shape must be the shape of one input sample, a tuple of ints >= 1, got {input_shape!r}"
            ) from None
        if not callable(loss):
            raise ValueError(f"loss must be a callable loss(outputs, targets) -> scalar, got {loss!r}")
        self.loss_fn = loss
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise ValueError(f"data must be an (inputs, targets) pair of tensors or a keyed sampler, got {data!r}")
            test = tuple(test_data) if test_data is not None else (None, None)
            if len(test) != 2:
                raise ValueError(f"test_data must be an (inputs, targets) pair of tensors, got {test_data!r}")
            self.data: DataSampler = TensorPool(data[0], data[1], *test)
        elif callable(data):
            if test_data is not None:
                raise ValueError("test_data is for tensor data; a keyed sampler draws the test split itself")
            self.data = data
        else:
            raise ValueError(f"data must be an (inputs, targets) pair of tensors or a keyed sampler, got {data!r}")
        needed = self.num_train + self.num_val
        if isinstance(self.data, TensorPool):
            for split in ("train", "test"):
                if self.data.size(split) < needed:
                    raise ValueError(
                        f"data ({split} split) has {self.data.size(split)} samples, but each task needs "
                        f"num_train + num_val = {needed} distinct ones: lower num_train or num_val, or give more data"
                    )
        if self.batch_size > self.num_train:
            raise ValueError(
                f"batch_size ({self.batch_size}) is larger than a task's training set (num_train={self.num_train}): "
                "a minibatch must be a sample of the training set; lower batch_size or raise num_train"
            )
        frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
        if frozen:
            raise ValueError(
                f"module parameters {frozen} do not require grad, but the inner optimizer trains every parameter: "
                "make them trainable (requires_grad_(True)) or, for constants, register them as buffers "
                "(module.register_buffer)"
            )
        named = list(module.named_parameters())
        if not named:
            raise ValueError("module has no parameters: the inner problem needs something to train")
        self.dropouts = _keyed_dropouts(module)
        self.module = module.train()
        self.param_names = [n for n, _ in named]
        self.param_shapes = [tuple(p.shape) for _, p in named]
        self.param_dim = sum(p.numel() for _, p in named)
        self.buffers = {n: b.detach() for n, b in module.named_buffers()}
        self._init_bounds, self._init_values = _init_rule(module, named)
        self._probe()

    # ------------------------------------------------------------------ construction checks
    def _probe(self) -> None:
        """One forward pass of the module and the loss on a few samples: refuse what cannot work, with the fix."""
        keys = rng.keys_from_seeds([0])
        count = min(self.batch_size, self.num_train)
        inputs, targets = self.data(keys, "train", count)
        expected = (1, count, *self.input_shape)
        if not isinstance(inputs, torch.Tensor) or tuple(inputs.shape) != expected:
            raise ValueError(
                f"data gives inputs of shape {tuple(getattr(inputs, 'shape', ()))} for 1 task and {count} samples, "
                f"but input_shape={self.input_shape} needs {expected}: make input_shape the shape of one sample"
            )
        if not isinstance(targets, torch.Tensor) or targets.shape[:2] != (1, count):
            raise ValueError(
                f"data gives targets of shape {tuple(getattr(targets, 'shape', ()))}, expected (1, {count}, ...): "
                "one target per sample"
            )
        before = {n: b.clone() for n, b in self.buffers.items()}
        probe = copy.deepcopy(self.module).train()
        try:
            outputs = probe(inputs[0])
        except Exception as error:
            raise ValueError(
                f"module cannot run on inputs of shape {tuple(inputs[0].shape)} (minibatch, *input_shape): {error}; "
                "check input_shape and the module's first layer"
            ) from None
        changed = [n for n, b in probe.named_buffers() if n in before and not torch.equal(b, before[n])]
        if changed:
            raise ValueError(
                f"module updates its buffers {changed} in the forward pass (batch-norm running statistics): buffers "
                "are shared by every task and must stay constant; use BatchNorm with track_running_stats=False, "
                "GroupNorm or LayerNorm"
            )
        try:
            value = self.loss_fn(outputs, targets[0])
        except Exception as error:
            raise ValueError(
                f"the module's output of shape {tuple(outputs.shape)} does not fit the loss with targets of shape "
                f"{tuple(targets[0].shape)} ({error}); make the module's last layer produce what the loss takes "
                "(e.g. one logit per class for cross_entropy)"
            ) from None
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise ValueError(
                f"loss returned shape {tuple(getattr(value, 'shape', ()))}, a value per sample; it must return "
                "one number, the mean over the samples (e.g. reduction='mean', or .mean())"
            )
        try:
            params = self.init_params({}, keys)
            self.minibatch_loss_and_grad(params, self.sample(keys, "train"), keys)
        except RuntimeError as error:
            if "random" in str(error).lower():
                raise ValueError(
                    f"module draws random numbers outside nn.Dropout ({error}): every random draw must come from "
                    "the task keys; use nn.Dropout modules (replaced by keyed ones) and no other random operations"
                ) from None
            raise ValueError(f"module cannot run under torch.func.vmap: {error}") from None

    # ------------------------------------------------------------------ protocol
    def to(self, device: torch.device | str) -> ModuleFamily:
        self.module = self.module.to(device)
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        self._init_bounds, self._init_values = self._init_bounds.to(device), self._init_values.to(device)
        move = getattr(self.data, "to", None)
        if callable(move):
            self.data = move(device)
        return self

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        check_split(split)
        inputs, targets = self.data(keys, split, self.num_train + self.num_val)
        return split_samples({"inputs": inputs.contiguous(), "targets": targets.contiguous()}, self.num_train)

    def init_params(self, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        u = rng.uniform(keys, (self.param_dim,))
        bounds, values = self._init_bounds.to(keys.device), self._init_values.to(keys.device)
        return torch.where(bounds > 0, (2.0 * u - 1.0) * bounds, values)

    def _views(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter views ``(n, *shape)`` of ``params: (n, P)``."""
        views, offset = {}, 0
        for name, shape in zip(self.param_names, self.param_shapes):
            size = math.prod(shape)
            views[name] = params[:, offset : offset + size].view(params.shape[0], *shape)
            offset += size
        return views

    def _task_loss(
        self, weights: dict[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        """One task's loss ``()`` at ``weights`` on ``inputs: (m, *input_shape)`` (dropout keyed by ``key: ()``)."""
        for dropout in self.dropouts:
            dropout.key = key
        try:
            outputs = functional_call(self.module, (weights, self.buffers), (inputs,))
        finally:
            for dropout in self.dropouts:
                dropout.key = None
        return self.loss_fn(outputs, targets)

    def _losses(self, params: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(n,)`` losses in eval mode (no dropout) of every task on its own ``inputs: (n, m, ...)``."""
        self.module.eval()
        key = torch.zeros(params.shape[0], dtype=torch.int64, device=params.device)
        try:
            return vmap(self._task_loss)(self._views(params), inputs, targets, key)
        finally:
            self.module.train()

    def loss(self, params: torch.Tensor, tasks: TaskData, split: str = "train") -> torch.Tensor:
        prefix = "" if split == "train" else "val_"
        return self._losses(params, tasks[f"{prefix}inputs"], tasks[f"{prefix}targets"])

    def _minibatch(self, tasks: TaskData, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = rng.randint(keys, self.num_train, (self.batch_size,))
        return gather_rows(tasks["inputs"], index), gather_rows(tasks["targets"], index)

    def minibatch_loss(self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        inputs, targets = self._minibatch(tasks, keys)
        return vmap(self._task_loss)(self._views(params), inputs, targets, rng.fold(keys, 7))

    def minibatch_loss_and_grad(
        self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if params.requires_grad and torch.is_grad_enabled():  # a differentiable unroll: autograd keeps the graph
            return super().minibatch_loss_and_grad(params, tasks, keys)
        inputs, targets = self._minibatch(tasks, keys)
        with torch.enable_grad():
            grads, loss = vmap(grad_and_value(self._task_loss))(
                self._views(params.detach()), inputs, targets, rng.fold(keys, 7)
            )
        return loss.detach(), self._flat(grads, (params.shape[0],)).detach()

    def loss_and_paired_grads(
        self, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if params.requires_grad and torch.is_grad_enabled():
            return super().loss_and_paired_grads(params, tasks, keys_a, keys_b)
        n, m = params.shape[0], self.batch_size
        index = torch.cat([rng.randint(keys_a, self.num_train, (m,)), rng.randint(keys_b, self.num_train, (m,))], -1)
        inputs = gather_rows(tasks["inputs"], index).view(n, 2, m, *tasks["inputs"].shape[2:])
        targets = gather_rows(tasks["targets"], index).view(n, 2, m, *tasks["targets"].shape[2:])
        dropout_keys = torch.stack([rng.fold(keys_a, 7), rng.fold(keys_b, 7)], dim=1)
        with torch.no_grad():
            loss = self.loss(params, tasks, "train")
        with torch.enable_grad():
            # The two minibatches of a task share its weights: an inner vmap over the pair.
            pair = vmap(grad_and_value(self._task_loss), in_dims=(None, 0, 0, 0))
            grads, _ = vmap(pair)(self._views(params.detach()), inputs, targets, dropout_keys)
        return loss, self._flat(grads, (n, 2)).detach()

    def _flat(self, grads: dict[str, torch.Tensor], lead: tuple[int, ...]) -> torch.Tensor:
        """``(*lead, P)``: the per-parameter gradients ``(*lead, *shape)`` in the layout of ``params``."""
        return torch.cat([grads[name].reshape(*lead, -1) for name in self.param_names], dim=-1)


def _init_rule(module: nn.Module, named: list[tuple[str, nn.Parameter]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per flat parameter entry: the half-width of its uniform draw (0: keep ``values``) and its fixed value."""
    fan_in: dict[str, int] = {}
    for name, parameter in named:
        if parameter.dim() >= 2:
            fan_in.setdefault(name.rpartition(".")[0], math.prod(parameter.shape[1:]))
    bounds, values = [], []
    for name, parameter in named:
        data = parameter.detach().reshape(-1).to(torch.float32)
        owner = name.rpartition(".")[0]
        if parameter.dim() >= 2:
            bound = 1.0 / math.sqrt(math.prod(parameter.shape[1:]))
        elif data.numel() and bool((data == data[0]).all()):
            bound = 0.0  # a constant vector (a norm layer's scale or shift): keep it
        else:
            bound = 1.0 / math.sqrt(fan_in.get(owner, data.numel()))
        bounds.append(torch.full((data.numel(),), bound))
        values.append(data.cpu())
    return torch.cat(bounds), torch.cat(values)
