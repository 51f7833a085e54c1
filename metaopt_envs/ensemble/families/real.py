"""Real time series bundled with statsmodels, spliced into regime-switching episodes.

The series come from ``statsmodels.datasets`` (CSV files shipped inside the
package: nothing is downloaded) and are loaded once per process. The train
and test splits use disjoint pools of series:

* **train** (20 series): the twelve macroeconomic columns of ``macrodata``
  (US quarterly 1959-2009; the eight growing quantities realgdp, realcons,
  realinv, realgovt, realdpi, cpi, m1 and pop as quarterly growth in percent,
  ``100 * diff(log)``; the rates tbilrate, unemp, infl and realint as levels),
  ``co2`` (Mauna Loa, weekly 1958-2001, gaps linearly interpolated, averaged
  over blocks of 4 weeks: 571 values with trend and a yearly cycle),
  ``interest_inflation`` (German quarterly inflation Dp and interest rate R,
  levels) and ``danish_data`` (Danish quarterly money demand: log real money,
  income and prices lrm, lry, lpy as growth in percent, ``100 * diff``; the
  interest rates ibo and ide as levels).
* **test** (4 series): yearly ``sunspots`` activity (1700-2008), the yearly
  ``nile`` flow (1871-1970), ``elnino`` sea surface temperatures (monthly
  1950-2010, the year-by-month table flattened to 732 values) and the
  ``elec_equip`` EU electrical-equipment production index (monthly 1995-2016, 257 values).

A task draws ``R`` distinct series of its split's pool (``R`` in
``num_regimes``), each with a rescaling ``scale`` (log-uniform in
``scale_range``) and shift ``shift ~ N(0, shift_std^2)``: these are its
regimes. An episode cuts ``length`` steps into ``num_crops`` segments (each
at least ``min_crop`` long, cut points uniform), assigns each segment a
regime different from the previous one, and fills it with a random crop of
that regime's series, standardized by the crop's own mean and standard
deviation, then rescaled and shifted by the regime's ``scale`` and
``shift``. A crop longer than its series continues by reflection at the
series' ends (back and forth in time). The extra field ``series: (n, length)``
gives the index (into :attr:`RealSeriesFamily.series_names`) of the series
each step came from.
"""

from __future__ import annotations

import importlib
from functools import cache

import numpy as np
import torch

from metaopt_envs.core import checks, rng
from metaopt_envs.core.family import TaskData, check_range, check_split
from metaopt_envs.ensemble.families.base import (
    StreamData,
    StreamFamily,
    check_episode_keys,
    check_length,
    episode_stream,
    regime_sequence,
    uniform_count,
)

_MACRO_GROWTH = ("realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "pop")
_MACRO_COLUMNS = (
    "realgdp",
    "realcons",
    "realinv",
    "realgovt",
    "realdpi",
    "cpi",
    "m1",
    "tbilrate",
    "unemp",
    "pop",
    "infl",
    "realint",
)

# name -> (statsmodels dataset, column, transform)
SERIES_SPECS: dict[str, tuple[str, str, str]] = {
    **{f"macrodata.{c}": ("macrodata", c, "growth" if c in _MACRO_GROWTH else "level") for c in _MACRO_COLUMNS},
    "co2.co2": ("co2", "co2", "weekly_to_4weekly"),
    "interest_inflation.Dp": ("interest_inflation", "Dp", "level"),
    "interest_inflation.R": ("interest_inflation", "R", "level"),
    "danish_data.lrm": ("danish_data", "lrm", "diff"),
    "danish_data.lry": ("danish_data", "lry", "diff"),
    "danish_data.lpy": ("danish_data", "lpy", "diff"),
    "danish_data.ibo": ("danish_data", "ibo", "level"),
    "danish_data.ide": ("danish_data", "ide", "level"),
    "sunspots.SUNACTIVITY": ("sunspots", "SUNACTIVITY", "level"),
    "nile.volume": ("nile", "volume", "level"),
    "elnino.monthly": ("elnino", "JAN..DEC", "flatten_months"),
    "elec_equip.index": ("elec_equip", "", "level"),
}
"""Every series: where it comes from and how it is transformed."""

TEST_SERIES: tuple[str, ...] = ("sunspots.SUNACTIVITY", "nile.volume", "elnino.monthly", "elec_equip.index")
"""The held-out pool of the "test" split."""
TRAIN_SERIES: tuple[str, ...] = tuple(name for name in SERIES_SPECS if name not in TEST_SERIES)
"""The pool of the "train" split (disjoint from :data:`TEST_SERIES`)."""

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _transform(dataset: str, column: str, transform: str) -> np.ndarray:
    frame = importlib.import_module(f"statsmodels.datasets.{dataset}").load_pandas().data
    if transform == "flatten_months":
        return frame[list(_MONTHS)].to_numpy(dtype=np.float64).reshape(-1)
    series = frame[column] if column else frame.iloc[:, 0]
    x = series.to_numpy(dtype=np.float64)
    if transform == "level":
        return x
    if transform == "growth":
        return 100.0 * np.diff(np.log(x))
    if transform == "diff":
        return 100.0 * np.diff(x)
    if transform == "weekly_to_4weekly":
        x = series.interpolate(limit_direction="both").to_numpy(dtype=np.float64)
        blocks = len(x) // 4
        return x[: 4 * blocks].reshape(blocks, 4).mean(1)
    raise ValueError(f"unknown transform {transform!r}")


@cache
def load_real_series() -> dict[str, np.ndarray]:
    """Every series of :data:`SERIES_SPECS`, transformed, as float64 arrays (cached per process).

    Raises ``ImportError`` with a hint if statsmodels is missing.
    """
    try:
        importlib.import_module("statsmodels.datasets")
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the 'real' stream family needs statsmodels (pip install statsmodels)") from error
    out = {}
    for name, spec in SERIES_SPECS.items():
        x = _transform(*spec)
        if not np.isfinite(x).all() or len(x) < 2:
            raise RuntimeError(f"series {name} has non-finite values or fewer than 2 points")
        x.setflags(write=False)
        out[name] = x
    return out


class RealSeriesFamily(StreamFamily):
    """Episodes spliced from crops of real series; disjoint series pools for train and test.

    Regime parameters (``param_names``): ``series`` (index into
    :attr:`series_names`, as a float), ``scale`` and ``shift``. Task fields
    beyond :data:`~metaopt_envs.ensemble.families.base.TASK_FIELDS`:
    ``stream_key: (n,)`` int64 (the task's key, that episodes fold their key
    into) and ``regime_series: (n, max_regimes)`` int64 (each regime's series).
    """

    name = "real"
    param_names = ("series", "scale", "shift")
    extra_fields = {"series": -1}
    _salt = 0x5A3

    def __init__(
        self,
        num_regimes: tuple[int, int] = (2, 4),
        num_crops: tuple[int, int] = (2, 4),
        min_crop: int = 40,
        scale_range: tuple[float, float] = (0.5, 2.0),
        shift_std: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_regimes = check_range("num_regimes", num_regimes, low=1, integer=True)
        self.num_crops = check_range("num_crops", num_crops, low=1, integer=True)
        self.min_crop = checks.integer("min_crop", min_crop)
        self.scale_range = check_range("scale_range", scale_range, low=0.0, low_open=True)
        self.shift_std = checks.finite_float("shift_std", shift_std, low=0.0)
        smallest = min(len(TRAIN_SERIES), len(TEST_SERIES))
        if self.num_regimes[1] > smallest:
            raise ValueError(
                f"num_regimes allows at most {smallest} regimes (distinct series of the smallest pool), "
                f"got {num_regimes!r}"
            )
        self.max_regimes = self.num_regimes[1]
        series = load_real_series()
        self.series_names: tuple[str, ...] = TRAIN_SERIES + TEST_SERIES
        arrays = [series[name] for name in self.series_names]
        self.max_len = max(len(a) for a in arrays)
        data = np.zeros((len(arrays), self.max_len), dtype=np.float32)
        for i, a in enumerate(arrays):
            data[i, : len(a)] = a
        self.data = torch.from_numpy(data)  # (N, max_len), zero-padded
        self.lengths = torch.tensor([len(a) for a in arrays], dtype=torch.int64)
        self.pools = {
            "train": torch.arange(len(TRAIN_SERIES), dtype=torch.int64),
            "test": torch.arange(len(TRAIN_SERIES), len(self.series_names), dtype=torch.int64),
        }
        self.to(device)

    def pool(self, split: str) -> tuple[str, ...]:
        """Names of the series the ``split`` draws from."""
        return TRAIN_SERIES if check_split(split) == "train" else TEST_SERIES

    def to(self, device: torch.device | str) -> RealSeriesFamily:
        self.data = self.data.to(device)
        self.lengths = self.lengths.to(device)
        self.pools = {k: v.to(device) for k, v in self.pools.items()}
        return self

    def _crop_segments(self, episode: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Segment index ``(n, length)``, segment starts and lengths ``(n, S)`` (S = most crops)."""
        n, device = episode.shape[0], episode.device
        most = self.num_crops[1]
        crops = uniform_count(rng.fold(episode, 1), *self.num_crops).clamp(max=max(length // self.min_crop, 1))
        free = (length - crops * self.min_crop).clamp(min=0)  # steps beyond the minimum lengths
        # k - 1 sorted cut offsets uniform in 0..free; unused ones sort to the end.
        cut = torch.floor(rng.uniform(rng.fold(episode, 2), (most - 1,), torch.float64) * (free + 1).unsqueeze(-1))
        slot = torch.arange(most - 1, device=device)
        cut = torch.where(slot < (crops - 1).unsqueeze(-1), cut.to(torch.int64), 2 * length + 1)
        cut = cut.sort(dim=1).values
        ends = torch.where(cut <= length, cut + (slot + 1) * self.min_crop, length + 1)  # first step of next
        steps = torch.arange(length, device=device).expand(n, length).contiguous()
        segment = torch.searchsorted(ends, steps, right=True)
        starts = torch.cat([torch.zeros(n, 1, dtype=torch.int64, device=device), ends], dim=1)
        stops = torch.cat([ends, torch.full((n, 1), length + 1, dtype=torch.int64, device=device)], dim=1)
        seg_len = stops.clamp(max=length) - starts.clamp(max=length)
        return segment, starts.clamp(max=length), seg_len

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        task = self.task_stream(keys, split)
        n, device = keys.shape[0], keys.device
        pool = self.pools[split]
        # R distinct series of the pool (a random permutation's first R), rescaled.
        count = uniform_count(rng.fold(task, 1), *self.num_regimes)
        order = rng.uniform(rng.fold(task, 2), (pool.shape[0],), torch.float64).argsort(dim=1)
        regime_series = pool[order[:, : self.max_regimes]]  # (n, max_regimes)
        scale = rng.log_uniform(rng.fold(task, 3), *self.scale_range, (self.max_regimes,))
        shift = self.shift_std * rng.normal(rng.fold(task, 4), (self.max_regimes,))
        used = torch.arange(self.max_regimes, device=device) < count.unsqueeze(-1)
        params = torch.stack([regime_series.to(torch.float32), scale, shift], dim=-1) * used.unsqueeze(-1)
        return {
            "family": torch.zeros(n, dtype=torch.int64, device=device),
            "num_regimes": count,
            "regime_params": params,
            "stream_key": task,
            "regime_series": regime_series,
        }

    def realise(self, tasks: TaskData, episode_keys: torch.Tensor, length: int) -> StreamData:
        check_length(length)
        check_episode_keys(tasks, episode_keys)
        count, regime_series = tasks["num_regimes"], tasks["regime_series"]
        n, device = count.shape[0], count.device
        # Regimes below R carry their scale and shift unchanged, and only those are gathered.
        scale, shift = tasks["regime_params"][..., 1], tasks["regime_params"][..., 2]
        episode = episode_stream(tasks["stream_key"], episode_keys)

        # The episode: crops, their regimes and offsets into their series.
        segment, starts, seg_len = self._crop_segments(episode, length)
        most = seg_len.shape[1]
        seg_regime = regime_sequence(rng.fold(episode, 3), count, most)  # (n, S)
        seg_series = regime_series.gather(1, seg_regime)
        series_len = self.lengths[seg_series]
        room = (series_len - seg_len).clamp(min=0)
        offset = torch.floor(rng.uniform(rng.fold(episode, 4), (most,), torch.float64) * (room + 1)).to(torch.int64)
        steps = torch.arange(length, device=device).expand(n, length)
        position = offset.gather(1, segment) + steps - starts.gather(1, segment)
        size = series_len.gather(1, segment)
        period = (2 * (size - 1)).clamp(min=1)
        folded = position % period
        index = torch.where(folded < size, folded, period - folded)  # reflect at the series' ends
        series = seg_series.gather(1, segment)
        raw = self.data.reshape(-1)[series * self.max_len + index]  # (n, length)

        # Standardize each crop by its own mean and standard deviation.
        count_steps = seg_len.clamp(min=1).to(torch.float32)
        mean = torch.zeros(n, most, device=device).scatter_add_(1, segment, raw) / count_steps
        centred = raw - mean.gather(1, segment)
        var = torch.zeros(n, most, device=device).scatter_add_(1, segment, centred * centred) / count_steps
        std = var.sqrt()
        inv = torch.where(std > 1e-6, 1.0 / std.clamp(min=1e-6), torch.zeros_like(std))  # constant crop -> 0
        regime = seg_regime.gather(1, segment)
        values = scale.gather(1, regime) * centred * inv.gather(1, segment) + shift.gather(1, regime)
        return {"values": values, "regime": regime, "series": series}
