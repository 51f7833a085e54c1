"""Small MLPs, batched over problems: sinusoid regression and scikit-learn classification.

Every problem has its own weights, held in one flat row of ``params: (n, P)``
and viewed as per-problem layer matrices, so a forward pass over B problems is
one ``baddbmm`` per layer.

:func:`set_compiled` switches the env's measurement (full loss, forward and hand-written backward of
both minibatches, and the gradient statistics, per block of rows) to a ``torch.compile``'d version
(``dynamic=False``: one compile per block shape, cached by inductor on disk). The eager path is the
default and the reference: the compiled one fuses element-wise passes, so its results differ from
eager in the last bits (tests hold it within ``rtol=1e-4, atol=1e-6``). Where ``torch.compile`` is
unavailable or fails, a warning says so and the eager path is used.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metaopt_envs.core import checks, rng
from metaopt_envs.core.family import check_range
from metaopt_envs.lr.families.base import (
    LRTaskFamily,
    TaskData,
    check_split,
    gather_rows,
    paired_statistics,
    split_samples,
)


def _affine(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``h @ weight + bias`` per problem: ``(n, m, in) @ (n, in, out) + (n, out)``.

    Layouts chosen by measurement on the CPU (benchmarks/env_throughput.py): a
    width-one input is an outer product (``addcmul``, ~25x faster than a
    multiply and a separate add); a narrow output is computed transposed,
    ``(weight^T @ h^T)^T`` with a contiguous ``weight^T``, where batched GEMM
    runs 3-4x faster, and returned as a view. Each problem's result is the same
    bits whatever the number of problems (tests/test_lr_batch_equivalence.py).
    """
    if weight.shape[1] == 1:
        out = h * weight if bias is None else torch.addcmul(bias.unsqueeze(1), h, weight)
        return out
    if weight.shape[2] < _NARROW:
        # Contiguous, so that bmm takes one path whatever the number of problems: a strided view
        # of one problem's params is contiguous, of many is not, and the two paths round differently.
        transposed = weight.transpose(1, 2).contiguous()
        if bias is None:
            return torch.bmm(transposed, h.transpose(1, 2)).transpose(1, 2)
        return torch.baddbmm(bias.unsqueeze(-1), transposed, h.transpose(1, 2)).transpose(1, 2)
    if bias is None:
        return torch.bmm(h, weight)
    return torch.baddbmm(bias.unsqueeze(1), h, weight)


def _weight_grad(below: torch.Tensor, delta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Flat ``below^T @ delta`` per row: ``(r, m, in), (r, m, out)`` -> ``(r, in * out)``, written into
    ``out`` (a column slice of the gradient, so that it needs no concatenation) when given."""
    r, fan_in, fan_out = below.shape[0], below.shape[-1], delta.shape[-1]
    if fan_in == 1 or fan_out == 1:
        product = (below * delta).view(r, below.shape[1], fan_in * fan_out)
        return product.sum(1) if out is None else torch.sum(product, 1, out=out)
    product = torch.bmm(below.transpose(1, 2), delta).flatten(1)
    # Copied, not bmm(out=...): into a strided column slice bmm would loop over the batch.
    return product if out is None else out.copy_(product)


_NARROW = 16  # outputs narrower than this are computed transposed


def _concatenated_block(
    family: MLPFamily, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block's loss and paired gradients with no ``out=`` writes (what ``torch.compile`` can trace)."""
    return family._loss_and_paired_grads(params, tasks, keys_a, keys_b, concatenate=True)


def _measured_block(
    family: MLPFamily, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block's loss, mean gradient, its norm and noise ratio: the statistics fused with the backward."""
    loss, grads = _concatenated_block(family, params, tasks, keys_a, keys_b)
    return (loss, *paired_statistics(grads))


_EAGER: dict[str, Callable[..., Any]] = {"block": _concatenated_block, "measured": _measured_block}
_kernels: dict[str, Callable[..., Any]] = {}  # the compiled ones, made on the first set_compiled(True)
_use_compiled = False


def set_compiled(enabled: bool = True) -> bool:
    """Measure the MLP families' blocks with ``torch.compile``'d kernels (``enabled``) or the eager
    reference (the default); True if compiled now.

    Only outside autograd (the envs, under ``torch.no_grad()``): a differentiable unroll stays eager.
    The compiled results are close to eager, not equal (see the module docstring). Where
    ``torch.compile`` is missing or fails, a warning says so and the eager path stays in use.
    """
    global _use_compiled
    _use_compiled = False
    if not enabled:
        return False
    if not hasattr(torch, "compile"):
        warnings.warn("torch.compile is unavailable: the MLP families stay eager", RuntimeWarning, stacklevel=2)
        return False
    if not _kernels:
        _kernels.update({name: torch.compile(fn, dynamic=False, fullgraph=True) for name, fn in _EAGER.items()})
    _use_compiled = True
    return True


def compiled() -> bool:
    """Whether the MLP families measure with the compiled kernels (see :func:`set_compiled`)."""
    return _use_compiled


def _compiles(rows: int) -> bool:
    """Whether a block of ``rows`` problems runs compiled: powers of two from 32 (a full block of
    ``block_rows``, a batch of 64), so that few shapes are ever compiled; the resets of a few rows and
    a last partial block stay eager."""
    return rows >= 32 and rows & (rows - 1) == 0


def _run_compiled(name: str, family: MLPFamily, params: torch.Tensor, *args: Any) -> Any:
    """The compiled kernel ``name`` on one block, or None where the caller runs eager: compiling off, a
    block size that is not compiled, or a kernel that fails (a warning, and eager for good)."""
    global _use_compiled
    if not _use_compiled or not _compiles(params.shape[0]):
        return None
    try:
        return _kernels[name](family, params, *args)
    except Exception as error:  # any compile failure: the eager path is the reference
        warnings.warn(
            f"the compiled MLP kernel {name!r} failed ({type(error).__name__}: {error}); using eager",
            RuntimeWarning,
            stacklevel=3,
        )
        _use_compiled = False
        return None


def _sizes(num_train: int, num_val: int, batch_size: int) -> tuple[int, int, int]:
    """The checked ``num_train``, ``num_val`` and ``batch_size`` (ints >= 1)."""
    return (
        checks.integer("num_train", num_train),
        checks.integer("num_val", num_val),
        checks.integer("batch_size", batch_size),
    )


def _hidden_sizes(hidden_sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The checked ``hidden_sizes``: a (possibly empty) list of ints >= 1."""
    if isinstance(hidden_sizes, (str, bytes)) or not hasattr(hidden_sizes, "__iter__"):
        raise ValueError(f"hidden_sizes must be a list of ints >= 1 (one per hidden layer), got {hidden_sizes!r}")
    values = tuple(hidden_sizes)
    for size in values:
        try:
            checks.integer("hidden_sizes", size)
        except ValueError:
            raise ValueError(
                f"hidden_sizes must be a list of ints >= 1 (one per hidden layer), got {values!r}"
            ) from None
    return tuple(int(size) for size in values)


class MLPFamily(LRTaskFamily):
    """Shared parts of the MLP families: parameter layout, initialization, forward pass."""

    has_validation = True
    block_rows = 256
    """Problems per block of the CPU's forward and backward passes (their activations stay in cache:
    measured 1.2-1.4x faster per step at 1024 problems than one pass; results do not depend on it)."""

    def __init__(self, layer_sizes: tuple[int, ...], num_train: int, num_val: int, batch_size: int) -> None:
        if len(layer_sizes) < 2:
            raise ValueError(f"layer_sizes needs at least two positive sizes, got {layer_sizes}")
        self.layer_sizes = tuple(checks.integer("layer_sizes[i]", size) for size in layer_sizes)
        self.num_train, self.num_val, self.batch_size = _sizes(num_train, num_val, batch_size)
        self.shapes = list(itertools.pairwise(layer_sizes))
        self.param_dim = sum(i * o + o for i, o in self.shapes)

    def init_params(self, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        # torch.nn.Linear's default: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bounds = torch.cat([torch.full((i * o + o,), 1.0 / math.sqrt(i), device=keys.device) for i, o in self.shapes])
        return (2.0 * rng.uniform(keys, (self.param_dim,)) - 1.0) * bounds

    def forward(self, params: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``params: (n, P)``, ``inputs: (n, m, in)`` -> outputs ``(n, m, out)``."""
        return self._forward_activations(params, inputs)[-1]

    def _data(self, tasks: TaskData, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the training samples at positions ``index: (n, m)``."""
        return gather_rows(tasks["inputs"], index), gather_rows(tasks["targets"], index)

    def _criterion(
        self, outputs: torch.Tensor, targets: torch.Tensor, tasks: TaskData, repeat: int = 1
    ) -> torch.Tensor:
        """Per-problem loss ``(n * repeat,)``; rows of ``outputs`` repeat each task ``repeat`` times."""
        raise NotImplementedError

    def loss(self, params: torch.Tensor, tasks: TaskData, split: str = "train") -> torch.Tensor:
        if split == "train":
            inputs, targets = tasks["inputs"], tasks["targets"]
        else:
            inputs, targets = tasks["val_inputs"], tasks["val_targets"]
        return self._criterion(self.forward(params, inputs), targets, tasks)

    def minibatch_loss(self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        index = rng.randint(keys, self.num_train, (self.batch_size,))
        inputs, targets = self._data(tasks, index)
        return self._criterion(self.forward(params, inputs), targets, tasks)

    def paired_minibatch_grads(
        self, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._paired_index(keys_a, keys_b)
        inputs, targets = self._data(tasks, index)
        grads = self._paired_backward(params, self._forward_activations(params, inputs), targets, tasks)
        return grads[:, 0], grads[:, 1]

    def loss_and_paired_grads(
        self, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The minibatches are rows of the training set at the same parameters: one forward
        # pass over the training set gives the full loss, and the minibatch rows of its
        # activations feed the backward pass. The minibatch forward costs nothing extra.
        n = params.shape[0]
        differentiable = torch.is_grad_enabled() and params.requires_grad
        if n <= self.block_rows or differentiable or params.device.type != "cpu":
            return self._block_grads(params, tasks, keys_a, keys_b, None, differentiable)
        # Blocks of rows on the CPU, so that a block's activations stay in cache (rows are independent
        # problems: the same numbers as one pass), each block's gradients written into its rows.
        loss, grads = params.new_empty(n), params.new_empty(n, 2, self.param_dim)
        for start in range(0, n, self.block_rows):
            block = slice(start, start + self.block_rows)
            loss[block], _ = self._block_grads(
                params[block],
                {name: value[block] for name, value in tasks.items()},
                keys_a[block],
                keys_b[block],
                grads[block],
            )
        return loss, grads

    def measure_paired(
        self,
        params: torch.Tensor,
        tasks: TaskData,
        keys_a: torch.Tensor,
        keys_b: torch.Tensor,
        grad_out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if not _use_compiled or (torch.is_grad_enabled() and params.requires_grad):
            return super().measure_paired(params, tasks, keys_a, keys_b, grad_out)
        # Compiled: each block's statistics fused with its backward, written into its rows.
        n = params.shape[0]
        rows = self.block_rows if params.device.type == "cpu" else n
        loss, grad_norm, noise = params.new_empty(n), params.new_empty(n), params.new_empty(n)
        grad = params.new_empty(n, self.param_dim) if grad_out is None else grad_out
        for start in range(0, n, rows):
            block = slice(start, start + rows)
            args = (params[block], {name: value[block] for name, value in tasks.items()}, keys_a[block], keys_b[block])
            result = _run_compiled("measured", self, *args)
            if result is None:
                block_loss, grads = self._loss_and_paired_grads(*args)
                result = (block_loss, *paired_statistics(grads))
            loss[block], grad[block], grad_norm[block], noise[block] = result
        return loss, grad, grad_norm, noise

    def _block_grads(
        self,
        params: torch.Tensor,
        tasks: TaskData,
        keys_a: torch.Tensor,
        keys_b: torch.Tensor,
        out: torch.Tensor | None,
        differentiable: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block's loss and paired gradients (into ``out`` when given): compiled where switched on."""
        result = None if differentiable else _run_compiled("block", self, params, tasks, keys_a, keys_b)
        if result is None:
            return self._loss_and_paired_grads(params, tasks, keys_a, keys_b, out)
        loss, grads = result
        return loss, grads if out is None else out.copy_(grads)

    def _loss_and_paired_grads(
        self,
        params: torch.Tensor,
        tasks: TaskData,
        keys_a: torch.Tensor,
        keys_b: torch.Tensor,
        out: torch.Tensor | None = None,
        concatenate: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = tasks["inputs"], tasks["targets"]
        activations = self._forward_activations(params, inputs)
        loss = self._criterion(activations[-1], targets, tasks)
        index = self._paired_index(keys_a, keys_b)
        picked = [gather_rows(a, index) for a in activations]
        return loss, self._paired_backward(params, picked, gather_rows(targets, index), tasks, out, concatenate)

    def _paired_index(self, keys_a: torch.Tensor, keys_b: torch.Tensor) -> torch.Tensor:
        """``(n, 2m)`` training-row positions: minibatch a, then minibatch b (one draw over ``(n, 2)`` keys)."""
        keys = torch.stack([keys_a, keys_b], dim=1)
        return rng.randint(keys, self.num_train, (self.batch_size,)).view(keys.shape[0], 2 * self.batch_size)

    def _forward_activations(self, params: torch.Tensor, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Inputs, every hidden activation (after ReLU) and the outputs, each ``(n, rows, width)``."""
        layers = self._layers(params)
        activations, h = [inputs], inputs
        for depth, (weight, bias) in enumerate(layers):
            h = _affine(h, weight, bias)
            if depth < len(layers) - 1:
                h = h.relu_()  # a fresh tensor: in place saves a large allocation
            activations.append(h)
        return activations

    def _paired_backward(
        self,
        params: torch.Tensor,
        activations: list[torch.Tensor],
        targets: torch.Tensor,
        tasks: TaskData,
        out: torch.Tensor | None = None,
        concatenate: bool = False,
    ) -> torch.Tensor:
        """Gradients ``(n, 2, P)`` of the two halves of ``2m`` rows, from their activations; written out so that
        the weight gradients of both halves come from one bmm over ``2n`` (a free view). Outside autograd they
        are written into ``out: (n, 2, P)`` (contiguous) when given; with ``concatenate`` (the compiled path:
        no ``out=`` writes) they are concatenated, the same numbers."""
        n, m = params.shape[0], self.batch_size
        layers = self._layers(params)
        delta = self._output_grad(activations[-1], targets, tasks)  # (n, 2m, out): d(per-half loss)/d(output)
        # Outside autograd each block is written in place (no concatenation pass); a differentiable
        # unroll (out= does not record a graph) concatenates the same blocks.
        in_place = not concatenate and not (torch.is_grad_enabled() and (params.requires_grad or delta.requires_grad))
        grads = None
        if in_place:
            grads = params.new_empty(2 * n, self.param_dim) if out is None else out.view(2 * n, self.param_dim)
        blocks: list[torch.Tensor] = []
        end = self.param_dim
        for depth in reversed(range(len(layers))):
            below = activations[depth]
            fan_in, fan_out = below.shape[-1], delta.shape[-1]
            pair_below = below.reshape(2 * n, m, fan_in)
            pair_delta = delta.reshape(2 * n, m, fan_out)
            if grads is None:
                blocks += [pair_delta.sum(1), _weight_grad(pair_below, pair_delta)]
            else:
                torch.sum(pair_delta, 1, out=grads[:, end - fan_out : end])
                _weight_grad(pair_below, pair_delta, grads[:, end - fan_out - fan_in * fan_out : end - fan_out])
            end -= fan_out + fan_in * fan_out
            if depth > 0:
                # ReLU's backward in one fused kernel (a masked fill is ~20x slower here).
                delta = torch.ops.aten.threshold_backward(
                    _affine(delta, layers[depth][0].transpose(1, 2), None), below, 0.0
                )
        if grads is None:
            grads = torch.cat(blocks[::-1], dim=-1)
        return grads.view(n, 2, -1)

    def _layers(self, params: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-problem (weight ``(n, in, out)``, bias ``(n, out)``) views of ``params``."""
        n, offset, layers = params.shape[0], 0, []
        for fan_in, fan_out in self.shapes:
            weight = params[:, offset : offset + fan_in * fan_out].view(n, fan_in, fan_out)
            offset += fan_in * fan_out
            layers.append((weight, params[:, offset : offset + fan_out]))
            offset += fan_out
        return layers

    def _output_grad(self, outputs: torch.Tensor, targets: torch.Tensor, tasks: TaskData) -> torch.Tensor:
        """Gradient of each half's mean loss w.r.t. ``outputs: (n, 2m, out)``."""
        raise NotImplementedError


class SinusoidMLPFamily(MLPFamily):
    """MLP regression of ``y = amplitude * sin(x - phase)``: the MAML sinusoid distribution.

    Amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5] (Finn et al., 2017);
    network 1-40-40-1 with ReLU; mean squared error. Each task has
    ``num_train`` training and ``num_val`` validation points.
    """

    name = "sinusoid"

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] = (40, 40),
        num_train: int = 128,
        num_val: int = 64,
        batch_size: int = 16,
        amplitude_range: tuple[float, float] = (0.1, 5.0),
        phase_range: tuple[float, float] = (0.0, math.pi),
        input_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        super().__init__((1, *_hidden_sizes(hidden_sizes), 1), num_train, num_val, batch_size)
        self.amplitude_range = check_range("amplitude_range", amplitude_range)
        self.phase_range = check_range("phase_range", phase_range)
        self.input_range = check_range("input_range", input_range)

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        check_split(split)
        total = self.num_train + self.num_val

        def scaled(key: torch.Tensor, bounds: tuple[float, float], shape: tuple[int, ...] = ()) -> torch.Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * rng.uniform(key, shape)

        s1, s2, s3 = rng.fold_each(keys, (1, 2, 3)).unbind(1)  # three folds, one hash
        amplitude = scaled(s1, self.amplitude_range)
        phase = scaled(s2, self.phase_range)
        x = scaled(s3, self.input_range, (total,))
        y = amplitude.unsqueeze(-1) * torch.sin(x - phase.unsqueeze(-1))
        tasks = {"inputs": x.unsqueeze(-1), "targets": y.unsqueeze(-1), "amplitude": amplitude, "phase": phase}
        return split_samples(tasks, self.num_train)

    def _criterion(
        self, outputs: torch.Tensor, targets: torch.Tensor, tasks: TaskData, repeat: int = 1
    ) -> torch.Tensor:
        return ((outputs - targets) ** 2).mean(dim=(1, 2))

    def _output_grad(self, outputs: torch.Tensor, targets: torch.Tensor, tasks: TaskData) -> torch.Tensor:
        return (outputs - targets) * (2.0 / (self.batch_size * outputs.shape[-1]))


SKLEARN_DATASETS = ("digits", "breast_cancer", "wine")


@cache
def _load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A dataset bundled inside scikit-learn (no download), features standardized."""
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}
    x, y = loaders[name](return_X_y=True)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    return x.astype(np.float32), y.astype(np.int64)


class SklearnMLPFamily(MLPFamily):
    """MLP classifiers on real data bundled with scikit-learn.

    A task picks a dataset from its split, then ``num_train`` training and
    ``num_val`` validation rows without replacement, and trains a
    ``max_features``-``hidden``-``max_classes`` ReLU MLP with cross-entropy.
    Features are zero-padded to the widest dataset and logits of classes the
    dataset lacks are masked out. By default ``wine`` is held out of training:
    the train split draws digits and breast cancer, the test split wine.
    """

    name = "sklearn"

    def __init__(
        self,
        train_datasets: tuple[str, ...] = ("digits", "breast_cancer"),
        test_datasets: tuple[str, ...] = ("wine",),
        hidden_sizes: tuple[int, ...] = (32,),
        num_train: int = 128,
        num_val: int = 48,
        batch_size: int = 32,
    ) -> None:
        for name in (*train_datasets, *test_datasets):
            if name not in SKLEARN_DATASETS:
                raise ValueError(f"datasets must be among {SKLEARN_DATASETS}, got {name!r}")
        if not train_datasets or not test_datasets:
            raise ValueError("train_datasets and test_datasets must each name at least one dataset")
        self.datasets = tuple(dict.fromkeys((*train_datasets, *test_datasets)))
        loaded = [_load_sklearn(name) for name in self.datasets]
        smallest = min(len(y) for _, y in loaded)
        num_train, num_val, batch_size = _sizes(num_train, num_val, batch_size)
        hidden_sizes = _hidden_sizes(hidden_sizes)
        if num_train + num_val > smallest:
            raise ValueError(
                f"num_train + num_val must be <= {smallest} (the smallest dataset), got {num_train + num_val}"
            )
        self.max_features = max(x.shape[1] for x, _ in loaded)
        self.max_classes = int(max(y.max() + 1 for _, y in loaded))
        super().__init__((self.max_features, *hidden_sizes, self.max_classes), num_train, num_val, batch_size)
        self.split_datasets = {
            "train": torch.tensor([self.datasets.index(n) for n in train_datasets]),
            "test": torch.tensor([self.datasets.index(n) for n in test_datasets]),
        }
        pool_x = np.zeros((sum(len(y) for _, y in loaded), self.max_features), dtype=np.float32)
        pool_y, offsets, start = [], [], 0
        for x, y in loaded:
            pool_x[start : start + len(y), : x.shape[1]] = x
            pool_y.append(y)
            offsets.append(start)
            start += len(y)
        self.pool_inputs = torch.from_numpy(pool_x)
        self.pool_targets = torch.from_numpy(np.concatenate(pool_y))
        self.offsets = torch.tensor(offsets)
        self.sizes = torch.tensor([len(y) for _, y in loaded])
        self.num_classes = torch.tensor([int(y.max() + 1) for _, y in loaded])

    def to(self, device: torch.device | str) -> SklearnMLPFamily:
        for field in ("pool_inputs", "pool_targets", "offsets", "sizes", "num_classes"):
            setattr(self, field, getattr(self, field).to(device))
        self.split_datasets = {k: v.to(device) for k, v in self.split_datasets.items()}
        return self

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        check_split(split)
        choices = self.split_datasets[split]
        s1, s2 = rng.fold_each(keys, (1, 2)).unbind(1)  # two folds, one hash
        dataset = choices[rng.randint(s1, len(choices))]
        largest = int(self.sizes.max())
        u = rng.uniform(s2, (largest,))
        u = torch.where(torch.arange(largest, device=keys.device) < self.sizes[dataset].unsqueeze(-1), u, 2.0)
        rows = self.offsets[dataset].unsqueeze(-1) + u.argsort(-1)[:, : self.num_train + self.num_val]
        # Materialized per task: every step reads the training set once (the full loss),
        # and reading it is cheaper than gathering it from the pool each time.
        tasks = {"inputs": self.pool_inputs[rows], "targets": self.pool_targets[rows], "dataset": dataset}
        return split_samples(tasks, self.num_train)

    def _criterion(
        self, outputs: torch.Tensor, targets: torch.Tensor, tasks: TaskData, repeat: int = 1
    ) -> torch.Tensor:
        num_classes = self.num_classes[tasks["dataset"]].repeat_interleave(repeat)
        present = torch.arange(self.max_classes, device=outputs.device) < num_classes.unsqueeze(-1)
        logits = outputs.masked_fill(~present.unsqueeze(1), -1e9)
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(-1)

    def _output_grad(self, outputs: torch.Tensor, targets: torch.Tensor, tasks: TaskData) -> torch.Tensor:
        present = torch.arange(self.max_classes, device=outputs.device) < self.num_classes[tasks["dataset"]].unsqueeze(
            -1
        )
        probs = torch.softmax(outputs.masked_fill(~present.unsqueeze(1), -1e9), dim=-1)
        probs = probs - F.one_hot(targets, self.max_classes).to(probs.dtype)
        return probs / self.batch_size
