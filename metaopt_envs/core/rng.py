"""Counter-based random numbers for B problems at once.

Every inner problem owns its own random stream, keyed by an int64 ``key`` per
problem. A stream is a pure function of ``(key, counter)``: drawing numbers for
B problems is one set of tensor operations, no ``torch.Generator`` per problem
(which would force a Python loop over problems on the step path) and no global
RNG state. Row ``i`` of a batch and a single environment with the same key
therefore draw exactly the same numbers, on the CPU and on a GPU.

The hash is SplitMix64's finalizer, computed in wrapping int64 arithmetic with
logical shifts emulated by masking.

Speed (the hash is most of the env's time at small B, where every tensor op costs
its dispatch): a fold with an int (a stream id) hashes that int once in Python, so
it costs one tensor hash, not two; a key tensor of any shape draws for all its
entries in one hash (``bits(keys_of_shape_(B, 2), (m,))`` is ``(B, 2, m)``), which
is how the LR core draws both minibatches of a step at once; and
:func:`set_compiled` switches the draws to ``torch.compile``'d kernels (one fused
kernel per draw for the integer work, bit-identical numbers; tests compare them
with this eager reference). Compiling is off by default: it costs seconds once per process
(inductor caches the kernels on disk), and on the CPU it did not pay in the env (measured with
torch 2.13, one thread: LR steps 1.3x slower at B=64, where each compiled call's guards cost
more than the eager ops they replace, and within noise at B=1024). Where ``torch.compile`` is
unavailable or fails the eager path is used.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB
_FOLD_SALT = 0x632BE5AB
_MASK64 = (1 << 64) - 1


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finalizer: a bijective scramble of int64 values."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def _signed(value: int) -> int:
    """The int64 whose bits are ``value`` modulo 2**64."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


@functools.lru_cache(maxsize=4096)
def _mix_int(value: int) -> int:
    """:func:`mix` of one int64 in Python integers: the same bits as the tensor version."""
    x = (value + _GOLDEN) & _MASK64
    x = ((x ^ (x >> 30)) * (_MIX1 & _MASK64)) & _MASK64
    x = ((x ^ (x >> 27)) * (_MIX2 & _MASK64)) & _MASK64
    return _signed(x ^ (x >> 31))


def fold(key: torch.Tensor, *data: int | torch.Tensor) -> torch.Tensor:
    """Derive a new key from ``key`` and integers (a stream id, a step counter).

    ``key``: (B,) int64 (or any shape); each ``data`` is an int or an int64 tensor that
    broadcasts against ``key``. Folding ``d`` is ``mix(key ^ mix(d + salt))``; for an int
    ``d`` the inner hash is a Python constant.
    """
    out = key
    for d in data:
        if isinstance(d, int) and -(1 << 63) <= d < (1 << 63):
            out = mix(out ^ _mix_int(_signed(d + _FOLD_SALT)))
        else:
            out = mix(out ^ mix(torch.as_tensor(d, dtype=torch.int64, device=key.device) + _FOLD_SALT))
    return out


def fold_each(key: torch.Tensor, data: tuple[int, ...]) -> torch.Tensor:
    """``stack([fold(key, d) for d in data], -1)``: (B, len(data)) in one hash."""
    return mix(key.unsqueeze(-1) ^ _salts(tuple(data), key.device))


@functools.lru_cache(maxsize=256)
def _salts(data: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The hashed ints of :func:`fold_each` as a tensor on ``device``, made once (no copy per call)."""
    return torch.tensor([_mix_int(_signed(d + _FOLD_SALT)) for d in data], dtype=torch.int64, device=device)


_counters: dict[tuple[int, torch.device], torch.Tensor] = {}


def _counter(count: int, device: torch.device) -> torch.Tensor:
    """``arange(count) * golden``: the per-word counters, built once per length and device."""
    entry = (count, device)
    counter = _counters.get(entry)
    if counter is None:
        if len(_counters) > 256:
            _counters.clear()
        counter = torch.arange(count, dtype=torch.int64, device=device) * _GOLDEN
        _counters[entry] = counter
    return counter


def _words(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Words ``(K, n)`` of flat keys ``(K, 1)`` and counters ``(n,)``: always rank 2, so that a compiled
    kernel is built once (dynamic sizes), not once per rank."""
    return mix(key + counter)


def _draw(name: str, key: torch.Tensor, shape: tuple[int, ...], *args: Any) -> Any:
    """Kernel ``name`` over every entry of ``key`` (any shape K) and word of ``shape``: ``(*K, *shape)``."""
    out = _kernels[name](key.reshape(-1, 1), _counter(math.prod(shape), key.device), *args)
    full = key.shape + tuple(shape)
    return tuple(o.view(full) for o in out) if isinstance(out, tuple) else out.view(full)


def _uniform_words(key: torch.Tensor, counter: torch.Tensor, double: bool) -> torch.Tensor:
    b = _words(key, counter)
    if double:
        return _shr(b, 11).to(torch.float64) * (1.0 / (1 << 53))
    return _shr(b, 40).to(torch.float32) * (1.0 / (1 << 24))


def _normal_uniforms(key: torch.Tensor, counter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two exact 24-bit uniforms of Box-Muller. Only these integer-to-float steps are compiled:
    a compiled log or cos may round differently from the eager one (by an ulp)."""
    b = _words(key, counter)
    scale = 1.0 / (1 << 24)
    u1 = (_shr(b, 40).to(torch.float32) + 1.0) * scale  # (0, 1]: log stays finite
    u2 = ((b >> 8) & 0xFFFFFF).to(torch.float32) * scale
    return u1, u2


_EAGER: dict[str, Callable[..., Any]] = {
    "words": _words,
    "uniform": _uniform_words,
    "normal": _normal_uniforms,
}
_kernels: dict[str, Callable[..., Any]] = dict(_EAGER)


def set_compiled(enabled: bool = True) -> bool:
    """Draw with ``torch.compile``'d kernels (``enabled``) or the eager reference; True if compiled now.

    The compiled kernels give the same words bit for bit (int64 arithmetic wraps alike; the
    float conversions are exact). Where ``torch.compile`` is missing or a kernel fails to
    build, a warning says so and the eager kernels stay in use.
    """
    _kernels.update(_EAGER)
    if not enabled:
        return False
    if not hasattr(torch, "compile"):
        warnings.warn("torch.compile is unavailable: random draws stay eager", RuntimeWarning, stacklevel=2)
        return False
    for name, fn in _EAGER.items():
        _kernels[name] = _guarded(name, torch.compile(fn, dynamic=True, fullgraph=True))
    return True


def compiled() -> bool:
    """Whether the draws use compiled kernels (see :func:`set_compiled`)."""
    return any(_kernels[name] is not _EAGER[name] for name in _EAGER)


def _guarded(name: str, kernel: Callable[..., Any]) -> Callable[..., Any]:
    """``kernel``, falling back to the eager one for good if it ever raises (no compiler, ...)."""

    def call(*args: Any) -> Any:
        try:
            return kernel(*args)
        except Exception as error:  # any compile failure: the eager kernel is the reference
            warnings.warn(
                f"compiled random kernel {name!r} failed ({type(error).__name__}: {error}); using eager",
                RuntimeWarning,
                stacklevel=3,
            )
            _kernels[name] = _EAGER[name]
            return _EAGER[name](*args)

    return call


def bits(key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Random int64 words: (B, *shape) for ``key`` of shape (B,) (any key shape K gives (*K, *shape)).

    SplitMix64 with the counter as its state increment: word j is
    ``mix(key + j * golden)``, one hash per word.
    """
    return _draw("words", key, shape)


def uniform(key: torch.Tensor, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U[0, 1) numbers, (B, *shape); 24 (float32) or 53 (float64) random bits each."""
    return _draw("uniform", key, shape, dtype == torch.float64)


def normal(key: torch.Tensor, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers, (B, *shape), by Box-Muller on the two halves of one word.

    Each half carries 24 random bits, so the tails are cut at about 5.8 sigma.
    """
    u1, u2 = _draw("normal", key, shape)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z if dtype == torch.float32 else z.to(dtype)


def randint(key: torch.Tensor, high: torch.Tensor | int, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Integers in [0, high), (B, *shape); ``high`` is an int or a (B,) tensor."""
    u = uniform(key, shape, torch.float64)
    if isinstance(high, torch.Tensor):
        high = high.reshape(high.shape + (1,) * len(shape)).to(torch.float64)
    return randint_of(u, high)


def randint_of(u: torch.Tensor, high: torch.Tensor | int) -> torch.Tensor:
    """:func:`randint` of float64 uniforms ``u`` already drawn (``high`` broadcasts against ``u``)."""
    return torch.floor(u * high).to(torch.int64)


def log_uniform(key: torch.Tensor, low: float, high: float, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Numbers with log-uniform density on [low, high], float32, (B, *shape)."""
    return log_uniform_of(uniform(key, shape, torch.float64), low, high)


def log_uniform_of(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """:func:`log_uniform` of float64 uniforms ``u`` already drawn: several draws of one hash, the same numbers."""
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).to(torch.float32)


def keys_from_seeds(seeds: list[int] | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B,) int64 keys from user seeds; distinct seeds give unrelated streams."""
    t = torch.as_tensor(seeds, dtype=torch.int64, device=device)
    return mix(mix(t) ^ 0x5DEECE66D)
