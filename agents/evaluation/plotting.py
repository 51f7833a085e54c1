"""Plots that stay readable with many agents: distinct styles past ten, axes a diverging curve cannot flatten.

:func:`line_styles` gives every agent its own (colour, line style): ``tab20``'s colours, cycling
line styles once they run out. :func:`plot_lines` draws one curve per agent on an Axes and, where
some curves leave the range of the others by far (a diverging ``random`` baseline), sets the y
limits from the others' finite values and marks the clipped curves ``(clipped)`` in the legend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LINESTYLES = ("-", "--", "-.", ":")
OUTLIER_SPANS = 3.0
"""A curve is clipped when it leaves the others' typical range by more than this many typical spans."""
CLIPPED = " (clipped)"


def line_styles(count: int) -> list[tuple[Any, str]]:
    """``count`` distinct (colour, line style) pairs: ``tab10`` up to ten, then ``tab20`` with cycling styles."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"].colors  # type: ignore[attr-defined]
    return [(palette[i % len(palette)], LINESTYLES[(i // len(palette)) % len(LINESTYLES)]) for i in range(count)]


def outliers(curves: Mapping[str, np.ndarray]) -> set[str]:
    """The curves that leave the bulk's range: infinite values, or a finite extreme more than
    :data:`OUTLIER_SPANS` typical spans (the median curve's range) beyond the median curve's extreme."""
    finite = {name: np.asarray(c, dtype=float)[np.isfinite(c)] for name, c in curves.items()}
    finite = {name: c for name, c in finite.items() if c.size}
    if len(finite) < 3:
        return set()
    lows = np.array([c.min() for c in finite.values()])
    highs = np.array([c.max() for c in finite.values()])
    low, high = float(np.median(lows)), float(np.median(highs))
    span = max(high - low, float(np.median(highs - lows)), 1e-12)
    found = {name for name, c in curves.items() if np.isinf(np.asarray(c, dtype=float)).any()}
    for name, c in finite.items():
        if c.max() > high + OUTLIER_SPANS * span or c.min() < low - OUTLIER_SPANS * span:
            found.add(name)
    return found if len(found) < len(finite) else set()


def robust_limits(curves: Mapping[str, np.ndarray], clipped: set[str]) -> tuple[float, float] | None:
    """The y limits of the curves not in ``clipped`` (their finite values, padded 5%), or ``None``."""
    kept = [np.asarray(c, dtype=float) for name, c in curves.items() if name not in clipped]
    values = np.concatenate([c[np.isfinite(c)] for c in kept]) if kept else np.array([])
    if not values.size:
        return None
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low) if high > low else max(abs(high), 1.0) * 0.05
    return low - pad, high + pad


def plot_lines(
    axis: Any,
    curves: Mapping[str, np.ndarray],
    x: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    clip: bool = True,
) -> set[str]:
    """One styled line per curve on ``axis`` (against ``x[name]``, or the index); with ``clip``, y limits
    set from the non-outlier curves (:func:`outliers`), whose legend labels say ``(clipped)``. Returns the
    clipped names."""
    clipped = outliers(curves) if clip else set()
    for (name, curve), (colour, style) in zip(curves.items(), line_styles(len(curves)), strict=True):
        label = name + (CLIPPED if name in clipped else "")
        if x is None:
            axis.plot(curve, label=label, color=colour, linestyle=style)
        else:
            axis.plot(x[name], curve, label=label, color=colour, linestyle=style)
    if clipped and (limits := robust_limits(curves, clipped)) is not None:
        axis.set_ylim(*limits)
    return clipped


def legend(axis: Any, count: int) -> None:
    """The legend of ``count`` agents: small, in two columns past ten."""
    axis.legend(fontsize=6 if count > 10 else 7, ncols=2 if count > 10 else 1)


__all__ = ["CLIPPED", "legend", "line_styles", "outliers", "plot_lines", "robust_limits"]
