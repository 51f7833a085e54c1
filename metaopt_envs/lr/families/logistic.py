"""Logistic regression on synthetic, ill-conditioned classification data."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaopt_envs.core import checks, rng
from metaopt_envs.core.family import check_range
from metaopt_envs.lr.families.base import LRTaskFamily, TaskData, check_split, gather_rows, split_samples


class LogisticRegressionFamily(LRTaskFamily):
    """Binary logistic regression; each task has its own data set.

    A task draws ``num_features`` feature scales log-uniform in
    ``feature_scale_range`` (ill-conditioning), a true weight vector and bias,
    and labels ``y ~ Bernoulli(sigmoid(x @ w + b))`` (label noise keeps the data
    non-separable, so the loss has a finite minimum). ``num_train`` samples
    are the training objective, ``num_val`` more the validation loss;
    minibatches of ``batch_size`` are drawn with replacement from the training
    samples. Parameters: ``(w, b)``, ``P = num_features + 1``, initialized at 0.
    The gradient is closed form.
    """

    name = "logistic"
    has_validation = True

    def __init__(
        self,
        num_features: int = 16,
        num_train: int = 256,
        num_val: int = 128,
        batch_size: int = 32,
        feature_scale_range: tuple[float, float] = (0.1, 10.0),
        signal_range: tuple[float, float] = (1.0, 10.0),
    ) -> None:
        self.num_features, self.num_train, self.num_val, self.batch_size = (
            checks.integer(label, value)
            for label, value in (
                ("num_features", num_features),
                ("num_train", num_train),
                ("num_val", num_val),
                ("batch_size", batch_size),
            )
        )
        self.feature_scale_range = check_range("feature_scale_range", feature_scale_range, low=0.0, low_open=True)
        self.signal_range = check_range("signal_range", signal_range, low=0.0, low_open=True)
        self.param_dim = self.num_features + 1

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        check_split(split)
        d, total = self.num_features, self.num_train + self.num_val
        s1, s2, s3, s4, s5, s6 = rng.fold_each(keys, (1, 2, 3, 4, 5, 6)).unbind(1)  # six folds, one hash
        scale = rng.log_uniform(s1, *self.feature_scale_range, (d,))
        x = rng.normal(s2, (total, d)) * scale.unsqueeze(1)
        signal = rng.log_uniform(s3, *self.signal_range)
        w = rng.normal(s4, (d,)) / scale
        w = w * (signal / w.norm(dim=-1)).unsqueeze(-1)
        b = rng.normal(s5)
        # A row vector times a transposed matrix, as in _logits: the same bits for one task as for many.
        logits = (w.unsqueeze(1) @ x.transpose(1, 2)).squeeze(1) + b.unsqueeze(-1)
        y = (rng.uniform(s6, (total,)) < torch.sigmoid(logits)).float()
        inputs = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)  # the bias as a constant feature
        return split_samples({"inputs": inputs, "targets": y}, self.num_train)

    def init_params(self, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        return torch.zeros(keys.shape[0], self.param_dim, device=keys.device)

    @staticmethod
    def _logits(params: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``(n, m)`` logits of ``inputs: (n, m, P)``. As a row vector times a transposed matrix: 2x faster
        than ``inputs @ params``, and the same bits for one problem as for many (gemv at n = 1 rounds otherwise)."""
        return (params.unsqueeze(1) @ inputs.transpose(1, 2)).squeeze(1)

    @classmethod
    def _loss(cls, params: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = cls._logits(params, inputs)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)

    def loss(self, params: torch.Tensor, tasks: TaskData, split: str = "train") -> torch.Tensor:
        prefix = "" if split == "train" else "val_"
        return self._loss(params, tasks[f"{prefix}inputs"], tasks[f"{prefix}targets"])

    def _minibatch(self, tasks: TaskData, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = rng.randint(keys, self.num_train, (self.batch_size,))
        return gather_rows(tasks["inputs"], index), gather_rows(tasks["targets"], index)

    def minibatch_loss(self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        return self._loss(params, *self._minibatch(tasks, keys))

    def minibatch_loss_and_grad(
        self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self._minibatch(tasks, keys)
        logits = self._logits(params, inputs)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)
        residual = (torch.sigmoid(logits) - targets) / self.batch_size
        # A multiply and a sum over the samples, not ``residual (n, 1, m) @ inputs (n, m, P)``: that batched
        # matmul rounds differently for one problem than for many on some CPUs (an AMD EPYC, where batched
        # rows then differed from single envs by an ulp); the sum's order does not depend on n anywhere.
        return loss, (residual.unsqueeze(-1) * inputs).sum(1)
