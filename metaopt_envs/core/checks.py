"""Argument and action checks shared by every core and adapter.

Each check returns the value in its canonical type or raises ``ValueError``
with one message shape: the argument's name, what is allowed, and the value
that was given (``"horizon must be an int >= 1 (inner steps per episode),
got True"``). Booleans never pass as numbers, and NaN or inf never pass as a
float argument.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch

T = TypeVar("T")

MAX_SEED = 2**63 - 1
"""Row seeds become int64 keys: a seed (and ``seed + i`` for row i) must lie in [0, MAX_SEED]."""


def _note(note: str) -> str:
    return f" ({note})" if note else ""


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def integer(name: str, value: Any, minimum: int = 1, note: str = "") -> int:
    """An int ``>= minimum`` (numpy ints too); bools and floats such as 2.0 are rejected."""
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{_note(note)}, got {value!r}")
    return int(value)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def _inside(x: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (x <= low if low_open else x < low):
        return False
    return high is None or (x < high if high_open else x <= high)


def finite_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    note: str = "",
) -> float:
    """A finite real number (int or float, not bool), optionally inside [low, high] (ends open if asked)."""
    bounds = _interval(low, high, low_open, high_open)
    allowed = f"a finite number{' ' + bounds if bounds else ''}{_note(note)}"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    x = float(value)
    if not math.isfinite(x) or not _inside(x, low, high, low_open, high_open):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return x


def boolean(name: str, value: Any) -> bool:
    """True or False (numpy bools too); 0, 1 and strings are rejected."""
    if not _is_bool(value):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(name: str, value: T, allowed: tuple[T, ...]) -> T:
    """One of ``allowed`` (listed in the message)."""
    try:
        found = any(
            isinstance(value, type(option)) and _is_bool(value) == _is_bool(option) and value == option
            for option in allowed
        )
    except (TypeError, ValueError):  # e.g. an array compared elementwise
        found = False
    if not found:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def float_pair(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    note: str = "",
    strict: bool = True,
) -> tuple[float, float]:
    """A ``(low, high)`` pair of finite numbers with ``low < high`` (``low <= high`` unless ``strict``),
    both inside the given bounds."""
    bounds = _interval(low, high, low_open, high_open)
    order = "low < high" if strict else "low <= high"
    allowed = f"a (low, high) pair of finite numbers{' ' + bounds if bounds else ''} with {order}{_note(note)}"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    first, second = value
    for x in (first, second):
        if (
            _is_bool(x)
            or not isinstance(x, numbers.Real)
            or not math.isfinite(x)
            or not _inside(float(x), low, high, low_open, high_open)
        ):
            raise ValueError(f"{name} must be {allowed}, got {tuple(value)!r}")
    if not (first < second if strict else first <= second):
        raise ValueError(f"{name} must be {allowed}, got {tuple(value)!r}")
    return float(first), float(second)


def device(value: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, or a
    ``torch.device``; an accelerator this machine does not have is rejected here, not at the first tensor."""
    allowed = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"
    if isinstance(value, str) and value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(value, (str, torch.device)):
        raise ValueError(f"device must be {allowed}, got {value!r}")
    try:
        resolved = torch.device(value)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be {allowed}, got {value!r}") from error
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device={value!r} needs CUDA, which this machine's torch does not have; use 'cpu' or 'auto'"
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device={value!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return resolved
    if resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={value!r} needs Apple's MPS, which is not available here; use 'cpu' or 'auto'")
        return resolved
    raise ValueError(f"device must be {allowed}, got {value!r}")


def seed(value: Any, count: int = 1, name: str = "seed") -> int:
    """An int seed of ``count`` rows: row ``i`` is seeded with ``seed + i``, which must fit in [0, MAX_SEED]."""
    top = MAX_SEED - (count - 1)
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or not 0 <= value <= top:
        rows = f" (row i is seeded with {name} + i, for {count} rows)" if count > 1 else ""
        raise ValueError(f"{name} must be None or an int in [0, 2**63 - {count}]{rows}, got {value!r}")
    return int(value)


def seeds(value: Any, count: int) -> list[int]:
    """``reset(seed=...)`` of ``count`` rows: None is handled by the caller; an int seeds rows
    ``seed, seed + 1, ...``; a list or tuple gives each row its own seed."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(value)
        if len(values) != count:
            raise ValueError(
                f"seed must be an int or a list of {count} ints (one per row), got a list of {len(values)}"
            )
        return [seed(s, name="seed[i]") for s in values]
    start = seed(value, count)
    return [start + i for i in range(count)]


def actions(
    value: Any,
    num_envs: int,
    space: gym.spaces.Box,
    device: torch.device,
    batched: bool = True,
) -> torch.Tensor:
    """Checked actions ``(num_envs, *space.shape)`` float32 on ``device``, clipped into ``space``.

    ``value`` is array-like (numpy, a list, a torch tensor on any device) of real numbers:
    ``(num_envs, *space.shape)`` when ``batched``, else ``space.shape`` (one env). A flat ``(num_envs,)``
    is accepted when the space is ``(1,)``. Non-finite numbers and wrong shapes or dtypes raise
    ``ValueError``; finite numbers outside the space are clipped in their own precision first, so a
    float64 ``1e39`` is clipped, not overflowed to inf by a cast. Arrays and CPU tensors are checked
    for finiteness on the host; a tensor already on an accelerator is not read back (no host sync on
    the step path), so a non-finite action there makes its row diverge instead of raising.
    """
    label = "actions" if batched else "action"
    expected = (num_envs, *space.shape) if batched else tuple(space.shape)
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise ValueError(
                f"{label} must not require grad (the environment is not differentiable); pass {label}.detach()"
            )
        tensor = value
        kind = (
            "f"
            if tensor.is_floating_point()
            else ("b" if tensor.dtype == torch.bool else ("c" if tensor.is_complex() else "i"))
        )
        dtype_name = str(tensor.dtype)
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:  # ragged lists
            raise ValueError(f"{label} must be an array of real numbers of shape {expected}, got {value!r}") from error
        kind, dtype_name = array.dtype.kind, str(array.dtype)
        tensor = None
    if kind not in "iuf":
        raise ValueError(
            f"{label} must be real numbers (a float or int array) of shape {expected}, got dtype {dtype_name}"
        )
    shape = tuple(value.shape if tensor is not None else array.shape)
    flat = batched and space.shape == (1,) and shape == (num_envs,)
    if shape != expected and not flat:
        also = f" or ({num_envs},)" if batched and space.shape == (1,) else ""
        raise ValueError(f"{label} must have shape {expected}{also}, got {shape}")
    finite: np.ndarray | torch.Tensor | None = None
    if tensor is None:  # float64 (or int64) input is checked and clipped in float64, before any cast
        precision = np.float32 if kind == "f" and array.dtype.itemsize <= 4 else np.float64
        array = np.ascontiguousarray(array, dtype=precision)
        finite = np.isfinite(array)  # on the host, where the numbers are: no device is involved
        tensor = torch.from_numpy(array)
    else:
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float64)
        if tensor.device.type == "cpu":
            finite = torch.isfinite(tensor)
        # A tensor on an accelerator is not read back (that would sync the device every step): a NaN
        # or inf action there reaches the dynamics, and the row diverges (terminated, with the penalty).
    if finite is not None and not finite.all():
        where = np.flatnonzero(np.asarray(~finite).reshape(shape[0] if batched else 1, -1).any(-1)).tolist()
        rows = f" in rows {where}" if batched else ""
        raise ValueError(f"{label} must be finite numbers (out-of-range ones are clipped); got NaN or inf{rows}")
    low, high = _bounds(space, tensor.dtype, tensor.device)
    clipped = torch.minimum(torch.maximum(tensor.reshape(expected), low), high)
    out = clipped.to(device=device, dtype=torch.float32)
    return out if batched else out.unsqueeze(0)


_BOUNDS: dict[tuple[bytes, bytes, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _bounds(space: gym.spaces.Box, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``space``'s low and high as tensors on ``device``, made once (a copy to a GPU on every step would wait on it)."""
    entry = (space.low.tobytes(), space.high.tobytes(), dtype, device)
    if entry not in _BOUNDS:
        if len(_BOUNDS) > 64:
            _BOUNDS.clear()
        _BOUNDS[entry] = (
            torch.as_tensor(space.low, dtype=dtype, device=device),
            torch.as_tensor(space.high, dtype=dtype, device=device),
        )
    return _BOUNDS[entry]


__all__ = [
    "MAX_SEED",
    "actions",
    "boolean",
    "choice",
    "device",
    "finite_float",
    "float_pair",
    "integer",
    "seed",
    "seeds",
]
