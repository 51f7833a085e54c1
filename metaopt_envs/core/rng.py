"""Counter-based random numbers for B problems at once.

Every inner problem owns its own random stream, keyed by an int64 ``key`` per
problem. A stream is a pure function of ``(key, counter)``: drawing numbers for
B problems is one set of tensor operations, no ``torch.Generator`` per problem
(which would force a Python loop over problems on the step path) and no global
RNG state. Row ``i`` of a batch and a single environment with the same key
therefore draw exactly the same numbers, on the CPU and on a GPU.

The hash is SplitMix64's finalizer, computed in wrapping int64 arithmetic with
logical shifts emulated by masking.
"""

from __future__ import annotations

import math

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finalizer: a bijective scramble of int64 values."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def fold(key: torch.Tensor, *data: int | torch.Tensor) -> torch.Tensor:
    """Derive a new key from ``key`` and integers (a stream id, a step counter).

    ``key``: (B,) int64; each ``data`` is an int or a (B,) int64 tensor.
    """
    out = key
    for d in data:
        out = mix(out ^ mix(torch.as_tensor(d, dtype=torch.int64, device=key.device) + 0x632BE5AB))
    return out


def bits(key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Random int64 words: (B, *shape) for ``key`` of shape (B,).

    SplitMix64 with the counter as its state increment: word j is
    ``mix(key + j * golden)``, one hash per word.
    """
    n = math.prod(shape)
    counter = torch.arange(n, dtype=torch.int64, device=key.device).reshape(shape) * _GOLDEN
    return mix(key.reshape(key.shape + (1,) * len(shape)) + counter)


def uniform(key: torch.Tensor, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U[0, 1) numbers, (B, *shape); 24 (float32) or 53 (float64) random bits each."""
    b = bits(key, shape)
    if dtype == torch.float64:
        return _shr(b, 11).to(torch.float64) * (1.0 / (1 << 53))
    return _shr(b, 40).to(torch.float32) * (1.0 / (1 << 24))


def normal(key: torch.Tensor, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers, (B, *shape), by Box-Muller on the two halves of one word.

    Each half carries 24 random bits, so the tails are cut at about 5.8 sigma.
    """
    b = bits(key, shape)
    scale = 1.0 / (1 << 24)
    u1 = (_shr(b, 40).to(torch.float32) + 1.0) * scale  # (0, 1]: log stays finite
    u2 = ((b >> 8) & 0xFFFFFF).to(torch.float32) * scale
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.to(dtype)


def randint(key: torch.Tensor, high: torch.Tensor | int, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Integers in [0, high), (B, *shape); ``high`` is an int or a (B,) tensor."""
    u = uniform(key, shape, torch.float64)
    if isinstance(high, torch.Tensor):
        high = high.reshape(high.shape + (1,) * len(shape)).to(torch.float64)
    return torch.floor(u * high).to(torch.int64)


def log_uniform(key: torch.Tensor, low: float, high: float, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Numbers with log-uniform density on [low, high], float32, (B, *shape)."""
    u = uniform(key, shape, torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).to(torch.float32)


def keys_from_seeds(seeds: list[int] | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B,) int64 keys from user seeds; distinct seeds give unrelated streams."""
    t = torch.as_tensor(seeds, dtype=torch.int64, device=device)
    return mix(mix(t) ^ 0x5DEECE66D)
