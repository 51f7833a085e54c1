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

On the CPU the eager hash runs in NumPy's ``uint64`` (a zero-copy view of the int64 tensor): NumPy
has the logical right shift that torch's int64 lacks (no masking) and costs less per call, so a hash
is 3.5x faster on a (3,) key and 2-4x on (1024, 2, 64) words (measured with torch 2.13, one thread;
``benchmarks/rng_hash.py``). The words are the same bits as the torch path's (wrapping arithmetic
modulo 2**64 either way; tests compare the two), which stays in use on other devices and inside
``torch.compile``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB
_FOLD_SALT = 0x632BE5AB
_MASK64 = (1 << 64) - 1


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix_torch(x: torch.Tensor) -> torch.Tensor:
    """:func:`mix` in torch int64 ops (any device; what ``torch.compile`` traces)."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


_U_GOLDEN, _U_MIX1, _U_MIX2 = (np.uint64(c & ((1 << 64) - 1)) for c in (_GOLDEN, _MIX1, _MIX2))
_U30, _U27, _U31, _U40, _U11, _U8 = (np.uint64(s) for s in (30, 27, 31, 40, 11, 8))
_U24_MASK = np.uint64(0xFFFFFF)


def _mix_uint64(u: np.ndarray) -> np.ndarray:
    """:func:`mix` of a 1-d or larger ``uint64`` array (arrays wrap silently; 0-d ones would warn)."""
    u = u + _U_GOLDEN
    u = (u ^ (u >> _U30)) * _U_MIX1
    u = (u ^ (u >> _U27)) * _U_MIX2
    return u ^ (u >> _U31)


_numpy_hash = [True]  # see set_numpy_hash


def set_numpy_hash(enabled: bool = True) -> bool:
    """Hash CPU tensors in NumPy (``enabled``, the default) or in torch ops; returns the previous setting.

    Both give the same bits; the switch exists to compare their speed side by side
    (``benchmarks/rng_hash.py``) and to test that they agree.
    """
    previous = _numpy_hash[0]
    _numpy_hash[0] = bool(enabled)
    return previous


def _cpu_bits(x: torch.Tensor) -> np.ndarray | None:
    """The bits of int64 ``x`` as a ``uint64`` array (at least 1-d, no copy) where the NumPy path applies:
    a CPU tensor with storage (not one wrapped by ``torch.func``'s vmap or grad), outside ``torch.compile``,
    with NumPy hashing on; otherwise None (the torch-op path)."""
    if not _numpy_hash[0] or x.device.type != "cpu" or x.dtype != torch.int64 or torch.compiler.is_compiling():
        return None
    try:
        array = x.reshape(-1).numpy() if x.dim() == 0 else x.numpy()
    except RuntimeError:  # a functorch-wrapped tensor has no storage to view
        return None
    return array.view(np.uint64)


def mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finalizer: a bijective scramble of int64 values (the same bits on every path)."""
    bits = _cpu_bits(x)
    if bits is None:
        return _mix_torch(x)
    return torch.from_numpy(_mix_uint64(bits).view(np.int64)).reshape(x.shape)


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
    bits = _words_uint64(key, counter)
    return _mix_torch(key + counter) if bits is None else torch.from_numpy(bits.view(np.int64))


def _words_uint64(key: torch.Tensor, counter: torch.Tensor) -> np.ndarray | None:
    """:func:`_words` as a ``uint64`` array ``(K, n)`` where the NumPy path applies (else None)."""
    bits = _cpu_bits(key)
    return None if bits is None else _mix_uint64(bits + counter.numpy().view(np.uint64))


def _draw(name: str, key: torch.Tensor, shape: tuple[int, ...], *args: Any) -> Any:
    """Kernel ``name`` over every entry of ``key`` (any shape K) and word of ``shape``: ``(*K, *shape)``."""
    out = _kernels[name](key.reshape(-1, 1), _counter(math.prod(shape), key.device), *args)
    full = key.shape + tuple(shape)
    return tuple(o.view(full) for o in out) if isinstance(out, tuple) else out.view(full)


def _uniform_words(key: torch.Tensor, counter: torch.Tensor, double: bool) -> torch.Tensor:
    u = _words_uint64(key, counter)
    if u is not None:  # the same conversions in NumPy (exact: at most 53 bits times a power of two)
        if double:
            return torch.from_numpy((u >> _U11).astype(np.float64) * (1.0 / (1 << 53)))
        return torch.from_numpy((u >> _U40).astype(np.float32) * np.float32(1.0 / (1 << 24)))
    b = _words(key, counter)
    if double:
        return _shr(b, 11).to(torch.float64) * (1.0 / (1 << 53))
    return _shr(b, 40).to(torch.float32) * (1.0 / (1 << 24))


def _normal_uniforms(key: torch.Tensor, counter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two exact 24-bit uniforms of Box-Muller. Only these integer-to-float steps are compiled:
    a compiled log or cos may round differently from the eager one (by an ulp)."""
    u = _words_uint64(key, counter)
    if u is not None:
        unit = np.float32(1.0 / (1 << 24))
        high = ((u >> _U40).astype(np.float32) + np.float32(1.0)) * unit
        low = ((u >> _U8) & _U24_MASK).astype(np.float32) * unit
        return torch.from_numpy(high), torch.from_numpy(low)
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
