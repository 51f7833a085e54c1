"""A functional MLP over a dict (or flat vector) of parameters, for one task at a time.

Parameters are ``{"w0": (in, h1), "b0": (h1,), "w1": ..., ...}``; the forward
pass is ``x @ w + b`` with ReLU between layers. Batching over tasks is left to
``torch.func.vmap`` (parameters with a leading task axis, or shared with
``in_dims=None``).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch

Params = dict[str, torch.Tensor]


def init_mlp(sizes: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> Params:
    """``torch.nn.Linear``'s default init: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    gen = torch.Generator().manual_seed(seed)
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        bound = 1.0 / math.sqrt(fan_in)
        params[f"w{i}"] = (torch.rand(fan_in, fan_out, generator=gen, dtype=torch.float64) * 2 - 1).mul(bound).to(dtype)
        params[f"b{i}"] = (torch.rand(fan_out, generator=gen, dtype=torch.float64) * 2 - 1).mul(bound).to(dtype)
    return params


def mlp_forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """``x: (..., m, in)`` -> ``(..., m, out)``; ReLU on every hidden layer."""
    depth = len(params) // 2
    h = x
    for i in range(depth):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < depth - 1:
            h = torch.relu(h)
    return h


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).mean()


def flatten_params(params: Params) -> torch.Tensor:
    """Concatenate a parameter dict into one vector (in the dict's order)."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten_params(flat: torch.Tensor, like: Params) -> Params:
    """Views of ``flat`` shaped like ``like``; inverse of :func:`flatten_params`."""
    out, offset = {}, 0
    for name, p in like.items():
        out[name] = flat[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
    return out
