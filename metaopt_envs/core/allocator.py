"""Keep freed CPU memory in the process: no page faults on the tensors a core makes every step.

A core's step makes and frees the same tensors every decision. glibc's ``malloc`` serves an
allocation above its mmap threshold (128 KiB at start, raised adaptively) with a fresh ``mmap`` and
returns the heap's top to the kernel once more than the trim threshold is free, so a step that makes
a few tensors of a few hundred KiB to some MiB (a batch of MLP parameters, the mixture's padded
parameter rows, a minibatch's activations) takes a first-touch page fault on every 4 KiB page of
them, every step. Measured (``python benchmarks/malloc_retain.py``): 3,300-5,700 minor faults per
decision of the LR mixture's core at B = 1024 and 1.05-1.13x slower decisions of the mixture and MLP
cores at B = 1024 than with the memory kept (at B = 64 it depends on the process's allocation
history: 1,461 faults and 1.31x slower in one sklearn process, almost none in others).

:func:`retain_freed_memory` raises both thresholds with ``mallopt`` (glibc only; elsewhere it does
nothing), so freed blocks stay in the heap and the next step reuses them. It changes no result (the
same arithmetic on memory from another place), only where ``malloc`` finds memory, for the whole
process; the cost is that up to ``trim_threshold`` bytes of freed heap stay resident. Every core
calls :func:`apply_default` when it is built: it applies the default once per process unless the
environment variable ``METAOPT_RETAIN_FREED_MEMORY=0`` is set (or ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_``, glibc's own settings, are: the user's choice is kept).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from typing import Any

ENV_VAR = "METAOPT_RETAIN_FREED_MEMORY"
DEFAULT_MMAP_THRESHOLD = 32 * 2**20  # glibc's own ceiling for its adaptive threshold
DEFAULT_TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3

_applied: dict[str, int] | None = None
_checked_default = False


def _mallopt() -> Any:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        function = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def retain_freed_memory(
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD
) -> bool:
    """Serve allocations below ``mmap_threshold`` bytes from the heap and keep up to
    ``trim_threshold`` bytes of freed heap; True where applied (glibc), False where not available.
    """
    global _applied
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
            raise ValueError(f"{name} must be an int in (0, 2**31) bytes, got {value!r}")
    mallopt = _mallopt()
    if mallopt is None:
        return False
    # mallopt returns 1 on success, 0 on error.
    if not (mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)):
        return False
    _applied = {"mmap_threshold": mmap_threshold, "trim_threshold": trim_threshold}
    return True


def applied() -> dict[str, int] | None:
    """The thresholds this process set through :func:`retain_freed_memory`, or None."""
    return None if _applied is None else dict(_applied)


def apply_default() -> bool:
    """The default, once per process (every core calls it): True where it is in effect."""
    global _checked_default
    if not _checked_default:
        _checked_default = True
        opted_out = os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off")
        users_own = any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
        if not opted_out and not users_own:
            retain_freed_memory()
    return _applied is not None
