"""Time-series streams with regime switches, and the forecasters an ensemble weights.

* :mod:`~metaopt_envs.ensemble.families.base`: the :class:`StreamFamily` protocol
  (``sample(task_keys, episode_keys, length, split)``) and :class:`StreamMixture`;
* :mod:`~metaopt_envs.ensemble.families.synthetic`: ``"switching_ar"`` and ``"regimes"``;
* :mod:`~metaopt_envs.ensemble.families.real`: ``"real"``, crops of series bundled with
  statsmodels, disjoint train/test pools;
* :mod:`~metaopt_envs.ensemble.forecasters`: :func:`forecast`, a batched bank of
  one-step forecasters with no look-ahead.
"""

from __future__ import annotations

from typing import Any

from metaopt_envs.ensemble.families.base import StreamData, StreamFamily, StreamMixture
from metaopt_envs.ensemble.forecasters import DEFAULT_FORECASTERS, FORECASTER_PATTERNS, forecast, parse_forecaster
from metaopt_envs.ensemble.families.real import TEST_SERIES, TRAIN_SERIES, RealSeriesFamily
from metaopt_envs.ensemble.families.synthetic import RegimesFamily, SwitchingARFamily

STREAM_FAMILIES: dict[str, type[StreamFamily]] = {
    "switching_ar": SwitchingARFamily,
    "regimes": RegimesFamily,
    "real": RealSeriesFamily,
}
"""The built-in stream families by name; ``"mixture"`` draws each task's family from several of them
(by default the synthetic ones, ``switching_ar`` and ``regimes``)."""


def make_stream_family(task_family: str | StreamFamily = "mixture", **kwargs: Any) -> StreamFamily:
    """A stream family from its name (``STREAM_FAMILIES`` or ``"mixture"``), or a user's instance as is.

    ``kwargs`` go to the family's constructor; for ``"mixture"``: ``members=``
    (names or instances, default ``("switching_ar", "regimes")``) and ``weights=``.
    """
    if isinstance(task_family, StreamFamily):
        if kwargs:
            raise ValueError("stream family kwargs cannot be combined with a StreamFamily instance")
        return task_family
    if task_family == "mixture":
        return StreamMixture(**kwargs)
    if task_family not in STREAM_FAMILIES:
        allowed = (*STREAM_FAMILIES, "mixture")
        raise ValueError(f"task_family must be one of {allowed} or a StreamFamily instance, got {task_family!r}")
    return STREAM_FAMILIES[task_family](**kwargs)


__all__ = [
    "DEFAULT_FORECASTERS",
    "FORECASTER_PATTERNS",
    "STREAM_FAMILIES",
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
