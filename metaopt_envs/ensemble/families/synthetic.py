"""Synthetic regime-switching streams: switching AR(2) processes and richer structural regimes.

Both families share the switching mechanism. A task has ``R`` regimes (``R``
uniform in ``num_regimes``, default 2..4) with parameters drawn from the task
key. An episode cuts the series into segments of at least ``min_segment``
steps (``min_segment`` plus a geometric number of steps, ``mean_segment`` on
average), puts each segment in a regime different from the previous one, and
runs the regimes' dynamics; the AR state carries over across switches. A
burn-in of ``burn_in`` steps in the first segment's regime starts the series
near stationarity.
"""

from __future__ import annotations

import math

import torch

from metaopt_envs.core import checks, rng
from metaopt_envs.core.family import TaskData, check_range, gather_rows
from metaopt_envs.ensemble.families.base import (
    StreamData,
    StreamFamily,
    ar2_recursion,
    check_episode_keys,
    check_length,
    episode_stream,
    geometric_segments,
    regime_sequence,
    stable_ar2,
    uniform_count,
)


def _periods(periods: tuple[int, ...]) -> tuple[int, ...]:
    """The checked ``periods``: a non-empty list of ints >= 2."""
    allowed = f"periods must be a non-empty list of ints >= 2 (seasonal periods in steps), got {periods!r}"
    if isinstance(periods, (str, bytes)) or not hasattr(periods, "__len__") or len(periods) == 0:
        raise ValueError(allowed)
    try:
        return tuple(checks.integer("periods", period, minimum=2) for period in periods)
    except ValueError:
        raise ValueError(
            f"periods must be a non-empty list of ints >= 2 (seasonal periods in steps), got {tuple(periods)!r}"
        ) from None


class _SwitchingFamily(StreamFamily):
    """Shared parameters, the task draws and the segment/regime draws of the synthetic families.

    Task fields: :data:`~metaopt_envs.ensemble.families.base.TASK_FIELDS` and
    ``stream_key: (n,)`` int64, the task's key that episodes fold their key into.
    """

    _salt = 0

    def __init__(
        self,
        num_regimes: tuple[int, int] = (2, 4),
        mean_segment: float = 80.0,
        min_segment: int = 25,
        max_modulus: float = 0.95,
        burn_in: int = 50,
    ) -> None:
        self.num_regimes = check_range("num_regimes", num_regimes, low=1, integer=True)
        self.min_segment = checks.integer("min_segment", min_segment)
        self.mean_segment = checks.finite_float(
            "mean_segment", mean_segment, low=self.min_segment, note="steps: at least min_segment"
        )
        self.max_modulus = checks.finite_float(
            "max_modulus", max_modulus, low=0.0, high=1.0, low_open=True, high_open=True, note="for stationary regimes"
        )
        self.burn_in = checks.integer("burn_in", burn_in, minimum=0)
        self.max_regimes = self.num_regimes[1]

    def regime_parameters(self, task: torch.Tensor) -> torch.Tensor:
        """``(n, max_regimes, len(param_names))`` float32 parameters of every regime, from the task stream."""
        raise NotImplementedError

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        task = self.task_stream(keys, split)
        count = uniform_count(rng.fold(task, 1), *self.num_regimes)
        used = torch.arange(self.max_regimes, device=task.device) < count.unsqueeze(-1)
        return {
            "family": torch.zeros(keys.shape[0], dtype=torch.int64, device=task.device),
            "num_regimes": count,
            "regime_params": self.regime_parameters(task) * used.unsqueeze(-1),
            "stream_key": task,
        }

    def _switches(
        self, tasks: TaskData, episode_keys: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Episode stream, the regime ``(n, length)`` of each step and the segment index ``(n, length)``."""
        check_length(length)
        check_episode_keys(tasks, episode_keys)
        episode = episode_stream(tasks["stream_key"], episode_keys)
        segment = geometric_segments(rng.fold(episode, 1), length, self.min_segment, self.mean_segment)
        return episode, self._regimes(episode, tasks["num_regimes"], segment), segment

    def _regimes(self, episode: torch.Tensor, count: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        most = math.ceil(segment.shape[1] / self.min_segment) + 1  # as many as geometric_segments draws
        return regime_sequence(rng.fold(episode, 2), count, most).gather(1, segment)

    def _with_burn_in(self, per_step: torch.Tensor) -> torch.Tensor:
        """Prepend ``burn_in`` copies of the first step's value: ``(n, L)`` -> ``(n, burn_in + L)``."""
        return torch.cat([per_step[:, :1].expand(-1, self.burn_in), per_step], dim=1)


class SwitchingARFamily(_SwitchingFamily):
    """Zero-mean AR(2) processes whose coefficients switch between ``R`` stable regimes.

    Regime parameters (``param_names``): ``phi1, phi2`` with characteristic roots
    of modulus below ``max_modulus`` (default 0.95; real or a complex pair, see
    :func:`~metaopt_envs.ensemble.families.base.stable_ar2`). The innovations have standard
    deviation ``noise_std`` (default 1) in every regime, so regimes differ only
    in their dynamics.
    """

    name = "switching_ar"
    param_names = ("phi1", "phi2")
    _salt = 0x5A1

    def __init__(self, noise_std: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.noise_std = checks.finite_float("noise_std", noise_std, low=0.0, low_open=True)

    def regime_parameters(self, task: torch.Tensor) -> torch.Tensor:
        phi1, phi2 = stable_ar2(rng.fold(task, 2), (self.max_regimes,), self.max_modulus)
        return torch.stack([phi1, phi2], dim=-1)

    def realise(self, tasks: TaskData, episode_keys: torch.Tensor, length: int) -> StreamData:
        episode, regime, _ = self._switches(tasks, episode_keys, length)
        # Regimes below R carry their parameters unchanged, and only those are gathered.
        phi1, phi2 = tasks["regime_params"].permute(2, 0, 1)
        noise = self.noise_std * rng.normal(rng.fold(episode, 3), (self.burn_in + length,))
        values = ar2_recursion(
            self._with_burn_in(phi1.gather(1, regime)), self._with_burn_in(phi2.gather(1, regime)), noise, self.burn_in
        )
        return {"values": values, "regime": regime}


class RegimesFamily(_SwitchingFamily):
    """Structural regimes: level, trend, noise scale, seasonality and AR(2) dynamics all switch.

    Within a segment in regime ``r`` that starts at step ``s``::

        values_t = level_r + slope_r * (t - s) + amplitude_r * sin(2 pi t / period_r + phase_r) + z_t
        z_t = phi1_r z_{t-1} + phi2_r z_{t-2} + noise_r * e_t,   e_t ~ N(0, 1)

    so a switch shifts the level, restarts the trend with a new slope, changes
    the noise scale, the seasonal pattern and the dynamics (``z`` carries over).
    Regime parameters (``param_names``): ``phi1, phi2`` (roots of modulus below
    ``max_modulus``, default 0.9), ``level ~ N(0, level_std^2)``,
    ``slope ~ N(0, slope_std^2)``, ``noise`` log-uniform in ``noise_range``,
    ``amplitude`` log-uniform in ``amplitude_range`` with probability
    ``seasonal_prob`` (else 0), ``period`` from ``periods``, ``phase ~ U(0, 2 pi)``.
    With the defaults values stay within a few tens (far below 1e3).
    """

    name = "regimes"
    param_names = ("phi1", "phi2", "level", "slope", "noise", "amplitude", "period", "phase")
    _salt = 0x5A2

    def __init__(
        self,
        level_std: float = 3.0,
        slope_std: float = 0.03,
        noise_range: tuple[float, float] = (0.3, 3.0),
        amplitude_range: tuple[float, float] = (0.5, 3.0),
        seasonal_prob: float = 0.6,
        periods: tuple[int, ...] = (4, 7, 12),
        max_modulus: float = 0.9,
        **kwargs,
    ) -> None:
        super().__init__(max_modulus=max_modulus, **kwargs)
        self.noise_range = check_range("noise_range", noise_range, low=0.0, low_open=True)
        self.amplitude_range = check_range("amplitude_range", amplitude_range, low=0.0, low_open=True)
        self.level_std = checks.finite_float("level_std", level_std, low=0.0)
        self.slope_std = checks.finite_float("slope_std", slope_std, low=0.0)
        self.seasonal_prob = checks.finite_float("seasonal_prob", seasonal_prob, low=0.0, high=1.0)
        self.periods = _periods(periods)

    def regime_parameters(self, task: torch.Tensor) -> torch.Tensor:
        """``(n, max_regimes, 8)`` float32 parameters, columns ``param_names``, from the task stream."""
        shape = (self.max_regimes,)
        phi1, phi2 = stable_ar2(rng.fold(task, 2), shape, self.max_modulus)
        level = self.level_std * rng.normal(rng.fold(task, 3), shape)
        slope = self.slope_std * rng.normal(rng.fold(task, 4), shape)
        noise = rng.log_uniform(rng.fold(task, 5), *self.noise_range, shape)
        seasonal = rng.uniform(rng.fold(task, 6), shape) < self.seasonal_prob
        amplitude = rng.log_uniform(rng.fold(task, 7), *self.amplitude_range, shape) * seasonal
        periods = torch.tensor(self.periods, dtype=torch.float32, device=task.device)
        period = periods[rng.randint(rng.fold(task, 8), len(self.periods), shape)]
        phase = 2.0 * math.pi * rng.uniform(rng.fold(task, 9), shape)
        return torch.stack([phi1, phi2, level, slope, noise, amplitude, period, phase], dim=-1)

    def realise(self, tasks: TaskData, episode_keys: torch.Tensor, length: int) -> StreamData:
        episode, regime, segment = self._switches(tasks, episode_keys, length)
        n, device = episode.shape[0], episode.device
        per_step = gather_rows(tasks["regime_params"], regime)  # (n, L, 8); regimes below R, unchanged
        phi1, phi2, level, slope, noise, amplitude, period, phase = per_step.permute(2, 0, 1)
        innovations = rng.normal(rng.fold(episode, 3), (self.burn_in + length,)) * self._with_burn_in(noise)
        z = ar2_recursion(self._with_burn_in(phi1), self._with_burn_in(phi2), innovations, self.burn_in)
        steps = torch.arange(length, device=device).expand(n, length)
        # First step of each step's segment: the running maximum of the switch steps.
        switch = torch.ones_like(segment, dtype=torch.bool)
        switch[:, 1:] = segment[:, 1:] != segment[:, :-1]
        start = torch.where(switch, steps, 0).cummax(1).values
        seasonal = amplitude * torch.sin((2.0 * math.pi) * steps.to(torch.float32) / period + phase)
        values = level + slope * (steps - start).to(torch.float32) + seasonal + z
        return {"values": values, "regime": regime}
