"""Time-series streams with regime switches, and the forecasters an ensemble weights.

* :mod:`~metaopt_envs.ensemble.families.base`: the :class:`StreamFamily` protocol
  (``sample(keys, split)`` draws each task's process, ``realise(tasks, episode_keys,
  length)`` one episode of it, ``sample_stream`` both) and :class:`StreamMixture`;
* :mod:`~metaopt_envs.ensemble.families.synthetic`: ``"switching_ar"`` and ``"regimes"``;
* :mod:`~metaopt_envs.ensemble.families.real`: ``"real"``, crops of series bundled with
  statsmodels, disjoint train/test pools;
* :mod:`~metaopt_envs.ensemble.forecasters`: :func:`forecast`, a batched bank of
  one-step forecasters with no look-ahead.
"""

from __future__ import annotations

from typing import Any

from metaopt_envs.core.registry import make_task_family, register_task_family
from metaopt_envs.ensemble.families.base import EPISODE_FIELDS, TASK_FIELDS, StreamData, StreamFamily, StreamMixture
from metaopt_envs.ensemble.families.real import TEST_SERIES, TRAIN_SERIES, RealSeriesFamily
from metaopt_envs.ensemble.families.synthetic import RegimesFamily, SwitchingARFamily
from metaopt_envs.ensemble.forecasters import DEFAULT_FORECASTERS, FORECASTER_PATTERNS, forecast, parse_forecaster

STREAM_FAMILIES: dict[str, type[StreamFamily]] = {
    "switching_ar": SwitchingARFamily,
    "regimes": RegimesFamily,
    "real": RealSeriesFamily,
}
"""The built-in stream families by name; ``"mixture"`` draws each task's family from several of them
(by default the synthetic ones, ``switching_ar`` and ``regimes``)."""

for _name, _family in STREAM_FAMILIES.items():
    register_task_family("ensemble", _name, _family, built_in=True)
register_task_family("ensemble", "mixture", StreamMixture, built_in=True)


def make_stream_family(task_family: str | StreamFamily = "mixture", **kwargs: Any) -> StreamFamily:
    """``metaopt_envs.core.registry.make_task_family("ensemble", task_family, **kwargs)``.

    For ``"mixture"``: ``members=`` (names or instances, default
    ``("switching_ar", "regimes")``) and ``weights=``.
    """
    return make_task_family("ensemble", task_family, **kwargs)  # type: ignore[return-value]


__all__ = [
    "DEFAULT_FORECASTERS",
    "EPISODE_FIELDS",
    "FORECASTER_PATTERNS",
    "STREAM_FAMILIES",
    "TASK_FIELDS",
    "TEST_SERIES",
    "TRAIN_SERIES",
    "RealSeriesFamily",
    "RegimesFamily",
    "StreamData",
    "StreamFamily",
    "StreamMixture",
    "SwitchingARFamily",
    "forecast",
    "make_stream_family",
    "parse_forecaster",
]
