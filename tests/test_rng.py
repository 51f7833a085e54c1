"""The counter-based RNG: pinned words, the fast paths equal the reference, compiled equals eager.

Promise (:mod:`metaopt_envs.core.rng`): a stream is a pure function of ``(key, counter)``; speed-ups
(ints folded in Python, one hash over a key tensor of any shape, ``torch.compile``'d kernels) draw the
same words bit for bit, so seeded runs and the README's reference results do not move.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import pytest
import torch

from metaopt_envs.core import rng


def _reference_mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finalizer written out as the package first had it (the reference)."""

    def shr(v: torch.Tensor, s: int) -> torch.Tensor:
        return (v >> s) & ((1 << (64 - s)) - 1)

    x = x + rng._GOLDEN
    x = (x ^ shr(x, 30)) * rng._MIX1
    x = (x ^ shr(x, 27)) * rng._MIX2
    return x ^ shr(x, 31)


def _reference_fold(key: torch.Tensor, *data: int | torch.Tensor) -> torch.Tensor:
    for d in data:
        key = _reference_mix(
            key ^ _reference_mix(torch.as_tensor(d, dtype=torch.int64, device=key.device) + 0x632BE5AB)
        )
    return key


def _keys(device: torch.device | str = "cpu") -> torch.Tensor:
    return rng.keys_from_seeds([*range(5), 2**62, 2**63 - 1], device)


def test_integer_words_are_pinned():
    """The integer outputs (keys, folds, words, randint) are exact on every platform; pin their bytes."""
    keys = _keys()
    words = hashlib.sha256()
    for t in (
        keys,
        rng.fold(keys, 0),
        rng.fold(keys, 7, keys, -3),
        rng.bits(keys, (3, 4)),
        rng.randint(keys, 1000, (4,)),
    ):
        words.update(t.numpy().tobytes())
    assert words.hexdigest() == "5d3c5974bb737ba5528a2ce285e75b04a94cd58055f1857aab70620bf840ebfe"


@pytest.mark.parametrize("value", [0, 1, 2, -1, 99, 2**31, -(2**40), 2**63 - 1, -(2**63), 2**63 - 0x632BE5AB])
def test_fold_with_an_int_equals_the_tensor_fold(value, device):
    keys = _keys(device)
    assert torch.equal(rng.fold(keys, value), _reference_fold(keys, value))
    assert torch.equal(rng.fold(keys, value, keys, 3), _reference_fold(keys, value, keys, 3))


def test_fold_each_and_key_shapes_draw_the_same_words(device):
    keys = _keys(device)
    pair = rng.fold_each(keys, (0, 1, 5))
    for column, d in enumerate((0, 1, 5)):
        assert torch.equal(pair[:, column], rng.fold(keys, d))
    # A (B, 3) key tensor draws (B, 3, *shape): the same numbers as three (B,) draws.
    for draw in (
        lambda k: rng.bits(k, (4,)),
        lambda k: rng.uniform(k, (2, 3)),
        lambda k: rng.uniform(k, (4,), torch.float64),
        lambda k: rng.normal(k, (5,)),
        lambda k: rng.randint(k, 17, (6,)),
    ):
        together = draw(pair)
        for column in range(3):
            assert torch.equal(together[:, column], draw(pair[:, column].contiguous()))


def test_draws_match_their_formulas(device):
    keys = _keys(device)
    words = _reference_mix(keys.unsqueeze(-1) + torch.arange(6, device=device) * rng._GOLDEN)
    assert torch.equal(rng.bits(keys, (6,)), words)
    assert torch.equal(rng.uniform(keys, (6,)), ((words >> 40) & 0xFFFFFF).float() / (1 << 24))
    top = (words >> 11) & ((1 << 53) - 1)
    assert torch.equal(rng.uniform(keys, (6,), torch.float64), top.double() / (1 << 53))
    u1 = (((words >> 40) & 0xFFFFFF).float() + 1.0) * (1.0 / (1 << 24))
    u2 = ((words >> 8) & 0xFFFFFF).float() * (1.0 / (1 << 24))
    assert torch.equal(rng.normal(keys, (6,)), torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2))


def _compiler_available() -> bool:
    try:
        torch.compile(lambda x: x + 1)(torch.zeros(2))
    except Exception:  # no C++ compiler, no triton, ...
        return False
    return True


@pytest.mark.slow
def test_compiled_draws_equal_eager(device):
    """The ``torch.compile``'d kernels give the eager words bit for bit, at several shapes (one compile)."""
    if not _compiler_available():
        pytest.skip("torch.compile does not work here")
    keys = _keys(device)
    shapes = [(), (3,), (16,), (2, 33)]
    eager = [
        [rng.bits(keys, s), rng.uniform(keys, s), rng.uniform(keys, s, torch.float64), rng.normal(keys, s)]
        for s in shapes
    ]
    try:
        assert rng.set_compiled(True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiled = [
                [rng.bits(keys, s), rng.uniform(keys, s), rng.uniform(keys, s, torch.float64), rng.normal(keys, s)]
                for s in shapes
            ]
        assert not [w for w in caught if "compiled random kernel" in str(w.message)]
        assert rng.compiled()
    finally:
        rng.set_compiled(False)
    assert not rng.compiled()
    for e_row, c_row in zip(eager, compiled):
        for e, c in zip(e_row, c_row):
            assert torch.equal(e, c)


def test_a_failing_compiled_kernel_falls_back_to_eager(monkeypatch):
    """Where compiling fails (no compiler), a warning names it and the eager words come back."""

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    keys = _keys()
    expected = rng.uniform(keys, (4,))
    try:
        rng.set_compiled(True)
        with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
            got = rng.uniform(keys, (4,))
        assert torch.equal(got, expected)
        assert torch.equal(rng.uniform(keys, (4,)), expected)  # the eager kernel stays
    finally:
        rng.set_compiled(False)


@pytest.fixture
def torch_hash():
    """The torch-op hash for the duration of a test (the NumPy path is the CPU default)."""
    previous = rng.set_numpy_hash(False)
    yield
    rng.set_numpy_hash(previous)


def _draws(keys: torch.Tensor) -> list[torch.Tensor]:
    """Every kind of draw, from 0-d, 1-d, 2-d and non-contiguous keys (a transposed view)."""
    wide = torch.stack([keys, rng.fold(keys, 1)], 1)
    return [
        rng.mix(keys[0]),
        rng.mix(wide.t()),
        rng.fold(keys, 3, keys),
        rng.fold_each(wide.t()[1], (0, 5)),
        rng.bits(wide, (3, 2)),
        rng.uniform(keys, (7,)),
        rng.uniform(wide.t(), (2,), torch.float64),
        *rng._draw("normal", keys, (5,)),
        rng.normal(wide, (4,)),
        rng.randint(keys, torch.arange(1, keys.numel() + 1), (3,)),
        rng.keys_from_seeds([0, 1, -1, 2**63 - 1]),
    ]


def test_the_numpy_hash_gives_the_torch_hash_bits(torch_hash):
    """The CPU's NumPy uint64 path (logical shifts, wrapping products) equals the torch-op path bit for bit."""
    keys = torch.cat([_keys(), torch.tensor([0, -1, -(2**63), 2**63 - 1], dtype=torch.int64)])
    reference = _draws(keys)
    rng.set_numpy_hash(True)
    fast = _draws(keys)
    assert rng.set_numpy_hash(False)  # the switch reports the setting it replaced (NumPy, on)
    for want, got in zip(reference, fast, strict=True):
        assert want.dtype == got.dtype and want.shape == got.shape
        assert torch.equal(want.reshape(-1).view(torch.uint8), got.reshape(-1).view(torch.uint8))
    assert torch.equal(rng.mix(keys), _reference_mix(keys))
