"""A bank of simple one-step forecasters, batched over series, with no look-ahead.

:func:`forecast` maps ``values: (n, T)`` to ``(n, K, T)``: ``out[:, k, t]`` is
forecaster ``k``'s prediction of ``values[:, t]`` computed from
``values[:, :t]`` only. At ``t = 0`` every forecaster predicts 0.0; a
forecaster that has too little history yet predicts the last value.

Forecasters are named by patterns:

==================  =========================================================
name                prediction of ``values[:, t]``
==================  =========================================================
``last``            ``values[:, t-1]`` (random walk)
``drift``           last value + mean first difference over the last
                    ``window`` values (last value until two are seen)
``ma{w}``           mean of the last ``w`` values (fewer at the start)
``ses{alpha}``      simple exponential smoothing, ``0 < alpha <= 1``; the
                    level starts at ``values[:, 0]``
``ar{p}``           AR(p) with intercept, fitted by least squares on the last
                    ``window`` values (fewer at the start), then its one-step
                    forecast; last value until ``2 (p + 1)`` (input, target)
                    pairs fit in the window
==================  =========================================================

The AR fits are closed form for all ``(series, t)`` at once: windowed sums of
lagged products come from cumulative sums (float64; once the window slides,
each pair sum is a time shift of one of ``p + 2`` sliding sums), the
regression is centred (the intercept is not penalized) with a small ridge
``1e-3 * trace / p`` on the coefficients, and the ``p x p`` systems are solved
by a Cholesky factorization written as elementwise tensor operations (for such
tiny systems several times faster on the CPU than one batched
``torch.linalg.solve`` over ``n * T`` matrices, which calls LAPACK per matrix).
The windowed forecasters run over blocks of time steps so their float64
temporaries stay in cache. No loop over series; a loop over time steps only for
``ses`` (all smoothing constants together). For ``n = 1024``, ``T = 350`` and
the eight defaults, about 45-55 ms on one CPU thread.

Any non-finite prediction (an overflow on extreme inputs) is replaced by the
last value, so the output is finite for finite input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

DEFAULT_FORECASTERS: tuple[str, ...] = ("last", "drift", "ma4", "ma16", "ses0.2", "ar1", "ar2", "ar4")
"""Eight defaults spanning the usual trade-offs: no smoothing (``last``), trend following
(``drift``), short / medium / long smoothing (``ma4``, ``ses0.2`` with mean age 4 steps,
``ma16``) and model-based AR fits of growing order (``ar1``, ``ar2``, ``ar4``)."""

FORECASTER_PATTERNS: tuple[str, ...] = (
    "last",
    "drift",
    "ma{w} (integer w >= 1, e.g. ma4)",
    "ses{alpha} (0 < alpha <= 1, e.g. ses0.5)",
    "ar{p} (integer p >= 1, e.g. ar2)",
)

RIDGE = 1e-3
"""Ridge on the AR coefficients, relative to the mean variance of the lagged inputs."""

Forecaster = tuple[str, int | float | None]
"""A parsed forecaster name, ``(kind, parameter)``: an int for ``ma`` and ``ar``, a float for ``ses``,
None for ``last`` and ``drift``."""


def parse_forecaster(name: str) -> Forecaster:
    """``name`` -> ``(kind, parameter)``: ``("ma", 4)``, ``("ses", 0.5)``, ``("ar", 2)``, ``("last", None)``."""
    if not isinstance(name, str):
        raise ValueError(f"forecaster names must be strings, got {name!r}")
    if name in ("last", "drift"):
        return name, None
    if match := re.fullmatch(r"ma([1-9][0-9]*)", name):
        return "ma", int(match.group(1))
    if match := re.fullmatch(r"ar([1-9][0-9]*)", name):
        return "ar", int(match.group(1))
    if match := re.fullmatch(r"ses([0-9]*\.?[0-9]+)", name):
        alpha = float(match.group(1))
        if 0.0 < alpha <= 1.0:
            return "ses", alpha
    raise ValueError(f"unknown forecaster {name!r}; allowed patterns: {', '.join(FORECASTER_PATTERNS)}")


def ar_min_pairs(p: int) -> int:
    """Fewest (input, target) pairs an AR(p) fit needs before it replaces the last value."""
    return 2 * (p + 1)


def _int_param(param: int | float | None) -> int:
    """The integer parameter of an ``ma{w}`` or ``ar{p}`` forecaster (:func:`parse_forecaster` gives an int)."""
    assert isinstance(param, int), param
    return param


def _float_param(param: int | float | None) -> float:
    """The smoothing constant of an ``ses{alpha}`` forecaster (:func:`parse_forecaster` gives a float)."""
    assert isinstance(param, float), param
    return param


def check_forecasters(names: Sequence[str], window: int) -> list[Forecaster]:
    """Parse ``names`` and check that ``window`` suits them; raises ``ValueError`` otherwise."""
    if isinstance(names, str):
        raise ValueError(f"names must be a sequence of forecaster names, got the string {names!r}")
    if len(names) == 0:
        raise ValueError("names must name at least one forecaster")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    parsed = [parse_forecaster(name) for name in names]
    for name, (kind, param) in zip(names, parsed):
        if kind != "ar":
            continue
        p = _int_param(param)
        if window < p + ar_min_pairs(p):
            raise ValueError(f"window={window} is too short for {name!r}: AR(p) needs window >= 3p + 2 = {3 * p + 2}")
    return parsed


def forecast(values: torch.Tensor, names: Sequence[str] = DEFAULT_FORECASTERS, window: int = 40) -> torch.Tensor:
    """One-step predictions of every forecaster in ``names``: ``(n, T)`` -> ``(n, K, T)`` float32.

    ``out[:, k, t]`` depends on ``values[:, :t]`` only (see the module docstring
    for each forecaster). ``window`` is the history used by ``drift`` and ``ar{p}``.
    """
    parsed = check_forecasters(names, window)
    if not isinstance(values, torch.Tensor) or values.dim() != 2:
        raise ValueError(f"values must be a tensor of shape (n, T), got {getattr(values, 'shape', values)!r}")
    n, T = values.shape
    out = torch.empty(n, len(parsed), T, dtype=torch.float32, device=values.device)
    if T == 0:
        return out
    if not values.is_floating_point():
        values = values.to(torch.float32)
    last = out.new_zeros(n, T)
    last[:, 1:] = values[:, :-1]

    ses_alphas = sorted({_float_param(param) for kind, param in parsed if kind == "ses"})
    if ses_alphas:
        smoothed = _ses(values, ses_alphas)  # (T, S, n)
        for k, (kind, param) in enumerate(parsed):
            if kind == "ses":
                out[:, k] = smoothed[:, ses_alphas.index(_float_param(param))].t()
    for k, (kind, _) in enumerate(parsed):
        if kind == "last":
            out[:, k] = last
    if any(kind in ("ma", "drift", "ar") for kind, _ in parsed):
        _windowed(values, parsed, window, out)
    # One sum detects any inf or nan (and rarely overflows on finite values: then the full check).
    if not torch.isfinite(out.sum()):
        out = torch.where(torch.isfinite(out), out, last.unsqueeze(1))
    return out


_BLOCK = 64
"""Time steps per block of the windowed forecasters: the float64 temporaries of a block stay
in cache (whole-series ``(n, T)`` float64 temporaries made the AR fits about twice slower)."""


class _Cumulative:
    """Exclusive cumulative sums of a stretch of a series, read at shifted times.

    Built from ``x[:, origin:end]``: ``S(k) = x[:, origin:k].sum(1)`` for absolute
    times ``k``, equal to the sum from 0 up to a constant that cancels in every
    window sum; ``S(k) = 0`` for ``k < 0`` when ``origin = 0``.
    """

    def __init__(self, stretch: torch.Tensor, origin: int, pad: int) -> None:
        n, length = stretch.shape
        self.base = pad - origin  # data[:, base + k] = S(k)
        self.data = stretch.new_empty(n, pad + 1 + length)
        self.data[:, : pad + 1] = 0.0
        torch.cumsum(stretch, 1, out=self.data[:, pad + 1 :])

    def window_sum(self, end_shift: int, start_shift: int, window: int, t0: int, t1: int) -> torch.Tensor:
        """``sum x[u]`` over ``u`` in ``[max(t - window, 0) + start_shift, t + end_shift)``, for ``t`` in
        ``[t0, t1)``: ``(n, t1 - t0)``."""
        base = self.base
        end = self.data[:, base + end_shift + t0 : base + end_shift + t1]
        out = torch.empty(end.shape, dtype=end.dtype, device=end.device)
        split = min(max(window, t0), t1)  # before it the window starts at 0
        if split > t0:
            start = self.data[:, base + start_shift : base + start_shift + 1]
            torch.sub(end[:, : split - t0], start, out=out[:, : split - t0])
        if split < t1:
            low = base + start_shift - window
            torch.sub(end[:, split - t0 :], self.data[:, low + split : low + t1], out=out[:, split - t0 :])
        return out


def _lagged(local: torch.Tensor, start: int, stop: int) -> Callable[[int], torch.Tensor]:
    """``x(shift) = local[:, start - shift : stop - shift]``: a block's series at ``t - shift``."""
    return lambda shift: local[:, start - shift : stop - shift]


def _windowed(values: torch.Tensor, parsed: list[Forecaster], window: int, out: torch.Tensor) -> None:
    """The ``ma``, ``drift`` and ``ar`` forecasters, written into ``out``, block by block in time.

    Each block of steps ``[t0, t1)`` needs the series from ``origin = t0 - lookback``
    on, in float64 and shifted by the value at ``origin`` (known before the block's
    first forecast: the forecasts are shift-equivariant, and a nearby reference keeps
    the sums small, so centring loses few digits).
    """
    n, T = values.shape
    device = values.device
    orders = sorted({_int_param(param) for kind, param in parsed if kind == "ar"})
    pmax = max(orders, default=0)
    pad = pmax + 1
    lookback = max([window] + [_int_param(param) for kind, param in parsed if kind == "ma"])
    for t0 in range(0, T, _BLOCK):
        t1 = min(t0 + _BLOCK, T)
        origin = max(t0 - lookback, 0)
        reference = values[:, origin : origin + 1].to(torch.float64)
        # local[:, pad + u - origin] = x[u] for u in [origin - pad, t1), 0 before the series.
        local = reference.new_empty(n, pad + t1 - origin)
        known = max(origin - pad, 0)
        local[:, : pad + known - origin] = 0.0
        torch.sub(values[:, known:t1], reference, out=local[:, pad + known - origin :])
        x = _lagged(local, pad + t0 - origin, pad + t1 - origin)  # x(shift) = x[t - shift]
        stretch = local[:, pad:]
        cum_x = _Cumulative(stretch, origin, pad)
        t = torch.arange(t0, t1, device=device)
        history = t.clamp(max=window)
        # Lagged products x[u] * x[u - k], k = 0..pmax (0 where u < k).
        cum_prod = [
            _Cumulative(stretch * local[:, pad - k : pad - k + t1 - origin], origin, pad)
            for k in range(pmax + 1 if orders else 0)
        ]
        for k, (kind, param) in enumerate(parsed):
            if kind == "ma":
                w = _int_param(param)
                mean = cum_x.window_sum(0, 0, w, t0, t1).div_(t.clamp(1, w))
            elif kind == "drift":
                start = torch.empty(n, t1 - t0, dtype=torch.float64, device=device)
                split = min(max(window, t0), t1)
                if split > t0:
                    start[:, : split - t0] = local[:, pad - origin : pad - origin + 1]  # x[0] while t < window
                if split < t1:
                    start[:, split - t0 :] = local[:, pad + split - window - origin : pad + t1 - window - origin]
                mean = torch.sub(x(1), start).div_((history - 1).clamp(min=1))
                mean.masked_fill_(history < 2, 0.0).add_(x(1))
            elif kind == "ar":
                mean = _ar_block(_int_param(param), window, t0, t1, x, cum_x, cum_prod)
            else:
                continue
            out[:, k, t0:t1] = mean.add_(reference)
        if t0 == 0:
            for k, (kind, _) in enumerate(parsed):
                if kind in ("ma", "drift", "ar"):
                    out[:, k, 0] = 0.0


def _ar_block(
    p: int,
    window: int,
    t0: int,
    t1: int,
    x: Callable[[int], torch.Tensor],
    cum_x: _Cumulative,
    cum_prod: list[_Cumulative],
) -> torch.Tensor:
    """Ridge AR(p) forecasts (of the shifted series) for the steps ``[t0, t1)``: ``(n, t1 - t0)``.

    For the forecast of ``v[t]`` the window is ``v[a:t]`` with ``a = max(0, t - window)``;
    its (input, target) pairs are ``(v[s-1], ..., v[s-p]) -> v[s]`` for ``s`` in
    ``[a + p, t)``, ``m = t - a - p`` of them. ``x(c)`` is the (shifted) series at ``t - c``.
    Steps with fewer than :func:`ar_min_pairs` pairs get the last value. In place where possible.
    """
    if t0 >= window:
        mean_y, _, mean_x, cov, rhs, raw_trace = _ar_sums_sliding(p, window, t0, t1, cum_x, cum_prod)
    else:
        mean_y, _, mean_x, cov, rhs, raw_trace = _ar_sums_growing(p, window, t0, t1, cum_x, cum_prod)
    trace = cov[0][0].clone()
    for i in range(1, p):
        trace.add_(cov[i][i])
    # Relative ridge, plus a floor far below it that keeps constant windows solvable.
    ridge = trace.mul_(RIDGE / p).add_(raw_trace, alpha=1e-12 / p).add_(1e-300)
    for i in range(p):
        cov[i][i].add_(ridge)
    beta = _cholesky_solve_(cov, rhs)
    pred = mean_y
    for i in range(p):
        pred.addcmul_(beta[i], x(1 + i)).addcmul_(beta[i], mean_x[i], value=-1)
    if t0 < window:
        too_short = torch.arange(t0, t1, device=pred.device).clamp(max=window) - p < ar_min_pairs(p)
        pred = torch.where(too_short, x(1), pred)
    return pred


_Moments = tuple[
    torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]], list[torch.Tensor], torch.Tensor
]
"""``(mean_y, sum_x, mean_x, cov, rhs, raw_trace)`` of the AR fits of one block; ``cov[i]`` holds the
lower triangle's row ``i``, ``cov[i][j]`` for ``j <= i``."""


def _ar_sums_growing(
    p: int, window: int, t0: int, t1: int, cum_x: _Cumulative, cum_prod: list[_Cumulative]
) -> _Moments:
    """Window moments for any block: every sum read from the cumulative sums.

    Returns ``mean_y``, ``sum_x[i]``, ``mean_x[i]``, the centred lower triangle
    ``cov[i][j]``, ``rhs[i]`` (centred cross sums) and the raw trace, each ``(n, t1 - t0)``.
    """
    t = torch.arange(t0, t1, device=cum_x.data.device)
    count = (t.clamp(max=window) - p).clamp(min=1).to(torch.float64)  # m, floored for the division

    def wsum(cum: _Cumulative, end_shift: int, start_shift: int) -> torch.Tensor:
        return cum.window_sum(end_shift, start_shift, window, t0, t1)

    mean_y = wsum(cum_x, 0, p).div_(count)
    sum_x = [wsum(cum_x, -1 - i, p - 1 - i) for i in range(p)]
    mean_x = [s / count for s in sum_x]
    cov: list[list[torch.Tensor]] = []  # the lower triangle, row by row
    raw_trace = torch.zeros_like(mean_y)
    for i in range(p):
        row: list[torch.Tensor] = []
        for j in range(i + 1):
            # sum_s x[s-1-i] x[s-1-j]; with j <= i, u = s - 1 - j runs over [a + p - 1 - j, t - 1 - j).
            entry = wsum(cum_prod[i - j], -1 - j, p - 1 - j)
            if i == j:
                raw_trace.add_(entry)
            row.append(entry.addcmul_(sum_x[i], mean_x[j], value=-1))
        cov.append(row)
    rhs = [wsum(cum_prod[i + 1], 0, p).addcmul_(sum_x[i], mean_y, value=-1) for i in range(p)]
    return mean_y, sum_x, mean_x, cov, rhs, raw_trace


def _ar_sums_sliding(
    p: int, window: int, t0: int, t1: int, cum_x: _Cumulative, cum_prod: list[_Cumulative]
) -> _Moments:
    """The same moments once the window slides (``t0 >= window``), with far fewer window sums.

    Then every pair sum is a time shift of one sliding sum of ``w - p`` terms,
    ``G_k(tau) = sum of x[u] x[u - k]`` over ``u`` in ``[tau - w + p - 1, tau - 1)``
    (and ``H`` for ``x[u]``): ``sum_x[i](t) = H(t - i)``, the target sum is
    ``H(t + 1)``, ``cov[i][j](t) = G_{i-j}(t - j)`` and ``rhs[i](t) = G_{i+1}(t + 1)``.
    So ``p + 2`` window sums over ``tau`` in ``[t0 - p + 1, t1 + 1)`` replace ``(p + 1)(p + 4) / 2``.
    """
    count = float(window - p)
    lo, hi = t0 - p + 1, t1 + 1  # tau range

    def sliding(cum: _Cumulative) -> torch.Tensor:
        # tau >= window - p + 1, so the start tau - w + p - 1 >= 0 is never clamped.
        base, start = cum.base, cum.base + p - 1 - window
        return torch.sub(cum.data[:, base + lo - 1 : base + hi - 1], cum.data[:, start + lo : start + hi])

    def at(series: torch.Tensor, shift: int) -> torch.Tensor:  # series(t + shift) for t in [t0, t1)
        return series[:, shift + p - 1 : shift + p - 1 + t1 - t0]

    h = sliding(cum_x)
    g = [sliding(cum_prod[k]) for k in range(p + 1)]
    mean_y = at(h, 1) / count
    sum_x = [at(h, -i) for i in range(p)]
    mean_x = [s / count for s in sum_x]
    cov: list[list[torch.Tensor]] = []  # the lower triangle, row by row
    raw_trace = at(g[0], 0).clone()
    for i in range(p):
        if i:
            raw_trace.add_(at(g[0], -i))
        cov.append([torch.addcmul(at(g[i - j], -j), sum_x[i], mean_x[j], value=-1) for j in range(i + 1)])
    rhs = [torch.addcmul(at(g[i + 1], 1), sum_x[i], mean_y, value=-1) for i in range(p)]
    return mean_y, sum_x, mean_x, cov, rhs, raw_trace


def _ses(values: torch.Tensor, alphas: list[float]) -> torch.Tensor:
    """Simple exponential smoothing forecasts for several constants at once, ``(T, S, n)`` float32.

    The level starts at ``values[:, 0]`` (the forecast of step 1) and is updated in
    float64; the forecast of step 0 is 0.
    """
    n, T = values.shape
    alpha = torch.tensor(alphas, dtype=torch.float64, device=values.device).unsqueeze(-1)  # (S, 1)
    series = values.to(torch.float64).t().contiguous()  # (T, n): contiguous rows per step
    out = values.new_zeros(T, len(alphas), n)
    level = series[0].expand(len(alphas), n).clone()
    for step in range(1, T):
        out[step] = level  # the forecast of step uses values[:step]
        # (1 - a) * level + a * x: a convex combination cannot overflow.
        level = torch.lerp(level, series[step].expand_as(level), alpha)
    return out


def _cholesky_solve_(matrix: list[list[torch.Tensor]], rhs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Solve ``A x = b`` for many small SPD systems at once, in place, as elementwise tensor operations.

    ``matrix[i][j]`` (``j <= i``, the lower triangle) and ``rhs[i]`` are tensors of one
    shape; both are overwritten (by the Cholesky factor and the solution). Returns ``x``
    as a list of tensors of that shape.
    """
    p = len(rhs)
    low = matrix
    inv_diag = []
    for j in range(p):
        for k in range(j):
            low[j][j].addcmul_(low[j][k], low[j][k], value=-1)
        inv = low[j][j].clamp_min_(1e-300).rsqrt_()
        inv_diag.append(inv)
        for i in range(j + 1, p):
            for k in range(j):
                low[i][j].addcmul_(low[i][k], low[j][k], value=-1)
            low[i][j].mul_(inv)
    y = rhs
    for i in range(p):
        for k in range(i):
            y[i].addcmul_(low[i][k], y[k], value=-1)
        y[i].mul_(inv_diag[i])
    x = y
    for i in reversed(range(p)):
        for k in range(i + 1, p):
            x[i].addcmul_(low[k][i], x[k], value=-1)
        x[i].mul_(inv_diag[i])
    return x
