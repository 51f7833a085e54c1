"""Batched inner optimizers: SGD, SGD with momentum and Adam over B problems.

Parameters are one tensor ``params: (B, P)``; every hyperparameter is a
per-problem tensor ``(B,)``, so B problems with B different learning rates are
advanced by one set of tensor operations. With a constant learning rate each
row follows ``torch.optim.SGD`` / ``torch.optim.Adam`` exactly (the update
formulas are written in the same order as torch's single-tensor path; the tests
check the trajectories).

The optimizers are pure: ``step`` takes the state and returns a new one, so an
unrolled inner loop can be differentiated through (used by learned
optimizers), and resetting some rows is a masked write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from metaopt_envs.core import checks

INNER_OPTIMIZERS = ("sgd", "momentum", "adam")


class OptimizerState(NamedTuple):
    """State of B inner optimizers.

    ``step``: (B,) number of updates taken; ``buffer1``: (B, P) momentum or
    Adam's first moment; ``buffer2``: (B, P) Adam's second moment (zeros
    otherwise).
    """

    step: torch.Tensor
    buffer1: torch.Tensor
    buffer2: torch.Tensor


@dataclass(frozen=True)
class InnerOptimizer:
    """A batched optimizer of one kind with fixed (per-batch) hyperparameters.

    ``name``: one of ``INNER_OPTIMIZERS``. ``momentum`` is used by
    ``"momentum"``; ``beta1``, ``beta2``, ``eps`` by ``"adam"``.
    """

    name: str = "adam"
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        checks.choice("inner_optimizer", self.name, INNER_OPTIMIZERS)
        # Stored as checked Python floats (a frozen dataclass: through object.__setattr__).
        for field_name in ("momentum", "beta1", "beta2"):
            value = checks.finite_float(field_name, getattr(self, field_name), low=0.0, high=1.0, high_open=True)
            object.__setattr__(self, field_name, value)
        object.__setattr__(self, "eps", checks.finite_float("eps", self.eps, low=0.0, low_open=True))

    def init(self, params: torch.Tensor) -> OptimizerState:
        """Fresh state for ``params: (B, P)``."""
        zeros = torch.zeros_like(params)
        return OptimizerState(
            torch.zeros(params.shape[0], dtype=torch.int64, device=params.device), zeros, zeros.clone()
        )

    def step(
        self, params: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor, state: OptimizerState
    ) -> tuple[torch.Tensor, OptimizerState]:
        """One update of all B problems.

        ``params``, ``grad``: (B, P); ``lr``: (B,). Returns new params and state.
        """
        lr = lr.to(params.dtype).unsqueeze(-1)
        step = state.step + 1
        if self.name == "sgd":
            return params - lr * grad, OptimizerState(step, state.buffer1, state.buffer2)
        if self.name == "momentum":
            # torch.optim.SGD: buf = momentum * buf + grad (buf = grad on the first step, the same value).
            buf = state.buffer1 * self.momentum + grad
            return params - lr * buf, OptimizerState(step, buf, state.buffer2)
        # Adam, in torch.optim.Adam's single-tensor order of operations.
        m = state.buffer1.lerp(grad, 1.0 - self.beta1)
        v = state.buffer2 * self.beta2 + (1.0 - self.beta2) * grad * grad
        # Bias corrections in float64 as torch.optim.Adam computes them (0.999 is not a float32).
        stepf = step.to(torch.float64).unsqueeze(-1)
        bias_correction1 = 1.0 - self.beta1**stepf
        bias_correction2_sqrt = (1.0 - self.beta2**stepf).sqrt()
        step_size = (lr.to(torch.float64) / bias_correction1).to(params.dtype)
        denom = v.sqrt() / bias_correction2_sqrt.to(params.dtype) + self.eps
        return params - step_size * (m / denom), OptimizerState(step, m, v)

    @staticmethod
    def reset_rows(state: OptimizerState, rows: torch.Tensor) -> OptimizerState:
        """Zero the state of the problems where ``rows: (B,) bool`` is set."""
        # torch.where, not a multiply: a diverged row may hold inf or NaN.
        rows2d = rows.unsqueeze(-1)
        return OptimizerState(
            torch.where(rows, torch.zeros_like(state.step), state.step),
            torch.where(rows2d, torch.zeros_like(state.buffer1), state.buffer1),
            torch.where(rows2d, torch.zeros_like(state.buffer2), state.buffer2),
        )
