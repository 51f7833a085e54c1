"""The one base of every hand-designed agent: learning-rate control, ensemble weighting, HPO search.

:class:`Controller` holds what :class:`agents.controllers.lr.LRController`,
:class:`agents.controllers.ensemble.EnsembleController` and :class:`agents.controllers.hpo.HPOController`
share: SB3's ``predict`` signature (the ``state`` argument is passed through untouched), the
observation checks (a 1-D observation is a batch of one; the width must fit the env's layout; no
NaN or inf), the ``episode_start`` flags (one per row), re-initialising the per-row state when the
batch size or the size read from the observation width changes (every row then starts an episode),
the ``action_mode`` its actions are meant for (the evaluators make the env with it), and
:func:`core_of`, the one way an oracle's ``bind_core`` reaches the family's core.

The evaluator (:func:`agents.evaluation.rollout.rollout`) shows a controller only the env's own
features (not the RL² trial extras) and an ``episode_start`` at every inner episode: a
hand-designed agent restarts on every task.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["BatchController", "Controller", "check_positive", "core_of"]


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is a positive finite number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def core_of(env: Any) -> Any:
    """The family's batched core behind ``env``: a core, an RL² trial core, an Env, a VectorEnv or an SB3 VecEnv.

    A stand-in that is none of these (a test's namespace of tensors) is returned as it is, or its ``.core``.
    """
    from metaopt_envs.core import BatchedCore

    inner = getattr(env, "unwrapped", env)  # through Gymnasium and SB3 wrappers; a core's own .unwrapped
    if not isinstance(inner, BatchedCore) and hasattr(inner, "core"):
        inner = inner.core  # the adapters (Env, VectorEnv, SB3 VecEnv) hold their core as .core
    return inner.unwrapped if isinstance(inner, BatchedCore) else inner


class Controller:
    """Base: observation checks, episode-start flags, per-row state sizing, and ``predict``.

    Subclasses set :attr:`observation_width` (the width formula named in error messages, e.g.
    ``"5K + 4"``), implement :meth:`_size_from_width` (the size, e.g. ``K``, from the width;
    ValueError if the width does not fit), :meth:`_allocate` (fresh state for ``n`` rows of
    that size) and :meth:`_act` (the actions for one call). :meth:`_prepare` runs the checks
    and the re-allocation and returns the episode-start mask.
    """

    name = "controller"
    observation_width = "W"
    action_mode: str | None = None
    """The env's ``action_mode`` this controller's actions are for (None: the env has only one)."""

    def __init__(self) -> None:
        self._n: int | None = None  # batch size of the allocated state
        self._size: int | None = None  # size read from the observation width (K, D)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments, for result files."""
        return {}

    # ----------------------------------------------------------------- observation checks
    @staticmethod
    def _size_from_width(obs_dim: int) -> int:
        raise NotImplementedError

    @classmethod
    def _check_observation(cls, observation: Any) -> tuple[np.ndarray, int]:
        """The observation as float64 ``(n, width)`` and the size read from its width."""
        obs = np.asarray(observation, dtype=np.float64)
        if obs.ndim == 1:
            obs = obs[None, :]
        if obs.ndim != 2 or obs.shape[0] < 1:
            width = cls.observation_width
            raise ValueError(f"observation must have shape (n, {width}) or ({width},), got {np.shape(observation)}")
        size = cls._size_from_width(obs.shape[1])
        if not np.isfinite(obs).all():
            raise ValueError("observation contains NaN or inf")
        return obs, size

    @staticmethod
    def _episode_starts(episode_start: Any, n: int) -> np.ndarray:
        """The ``episode_start`` flags as a boolean ``(n,)`` mask (all False for None)."""
        if episode_start is None:
            return np.zeros(n, dtype=bool)
        start = np.asarray(episode_start).astype(bool).reshape(-1)
        if start.size != n:
            raise ValueError(
                f"episode_start must have one flag per observation row ({n}), got shape {np.shape(episode_start)}"
            )
        return start

    # ----------------------------------------------------------------- per-row state
    def _allocate(self, n: int, size: int) -> None:
        """Fresh per-row state for ``n`` rows."""

    def _prepare(self, observation: Any, episode_start: Any) -> tuple[np.ndarray, int, np.ndarray]:
        """Check the inputs; re-allocate when the batch size or the size changed (every row starts).

        Returns the float64 observation ``(n, width)``, the size, and the start mask ``(n,)``.
        """
        obs, size = self._check_observation(observation)
        n = obs.shape[0]
        start = self._episode_starts(episode_start, n)
        if self._n != n or self._size != size:
            self._n, self._size = n, size
            self._allocate(n, size)
            start = np.ones(n, dtype=bool)
        return obs, size, start

    # ----------------------------------------------------------------- SB3 interface
    def _act(self, observation: Any, episode_start: Any) -> np.ndarray:
        raise NotImplementedError

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """Actions for a batch of observations (:meth:`_act`); ``state`` is passed through."""
        return self._act(observation, episode_start), state


BatchController = Controller  # its name before every hand-designed agent shared one base
