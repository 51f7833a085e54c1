"""The one evaluation loop of every family: an agent runs one trial on each row of a batched core.

:func:`rollout` handles what is the same for every environment family: reseeding,
``bind_core`` for oracles, the action mode a hand-designed controller needs, SB3's
``predict`` with ``episode_start``, RL² trial bookkeeping (only the last inner episode
is scored) and per-call timing. The family's evaluator (:mod:`agents.evaluation.lr`,
:mod:`~agents.evaluation.ensemble`, :mod:`~agents.evaluation.hpo`) passes a callback
that accumulates its own metrics from each step's ``info`` and reward for the rows
being scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from agents.controllers.base import Controller
from metaopt_envs.core import seeds_to_keys


class Step(NamedTuple):
    """One step of :func:`rollout`, as numpy arrays over the rows ``(n, ...)``."""

    info: dict[str, np.ndarray]
    reward: np.ndarray
    scored: np.ndarray  # bool: the row is in its last inner episode (the one that is scored)
    live: np.ndarray  # bool: the row's trial has not ended (earlier inner episodes included)
    inner_done: np.ndarray  # bool: the row's inner episode ended at this step


StepCallback = Callable[[Step], None]
"""``callback(step)``: called after every step; the family accumulates its metrics from it."""


def rollout(
    agent: Any,
    core: Any,
    seed: int,
    callback: StepCallback,
    restart_each_episode: bool | None = None,
    deterministic: bool = True,
) -> dict[str, Any]:
    """Run ``agent`` for one trial on each of ``core``'s rows, reset with ``seed``.

    ``restart_each_episode`` (default: whether ``agent`` is a hand-designed
    :class:`~agents.controllers.base.Controller`): the agent sees only the env's own features
    (not the RL² trial extras) and ``episode_start`` at every inner episode, so it restarts per
    task; memory agents see the whole observation and a start per trial. An agent that declares
    an ``action_mode`` must run on a core of that mode (ValueError otherwise).
    Returns the families (index per row) and the agent's seconds per suggestion (per row).
    """
    base = core.unwrapped
    mode = getattr(agent, "action_mode", None)
    if isinstance(mode, str) and getattr(base, "action_mode", mode) != mode:
        raise ValueError(
            f"{type(agent).__name__} emits {mode}-mode actions but the env has action_mode="
            f"{base.action_mode!r}; evaluate it with action_mode={mode!r}"
        )
    if restart_each_episode is None:
        restart_each_episode = isinstance(agent, Controller)
    n = core.num_envs
    core.reset_rows(torch.ones(n, dtype=torch.bool, device=core.device), keys=seeds_to_keys(seed, n, core.device))
    if hasattr(agent, "bind_core"):  # an oracle that reads the tasks (documented as such)
        agent.bind_core(core)
    trial = getattr(core, "episodes_per_trial", 1)
    width = base.single_observation_space.shape[0]
    obs = core.observe().cpu().numpy()
    state, episode_start = None, np.ones(n, dtype=bool)
    done = np.zeros(n, dtype=bool)
    episode = np.zeros(n, dtype=np.int64)
    family = np.zeros(n, dtype=np.int64)
    seconds, calls = 0.0, 0
    while not done.all():
        seen = obs[:, :width] if restart_each_episode else obs
        start = time.perf_counter()
        actions, state = agent.predict(seen, state=state, episode_start=episode_start, deterministic=deterministic)
        seconds += time.perf_counter() - start
        calls += 1
        result = core.step(torch.as_tensor(np.asarray(actions, dtype=np.float32).reshape(n, -1), device=core.device))
        info = {k: v.cpu().numpy() for k, v in result.info.items()}
        ended = (result.terminated | result.truncated).cpu().numpy()
        inner_done = info.get("inner_episode_done", ended)
        live = ~done
        callback(Step(info, result.reward.cpu().numpy(), live & (episode == trial - 1), live, inner_done))
        family = np.where(live, info["family"], family)
        episode += live & inner_done
        done |= live & (episode >= trial)
        obs = result.observation.cpu().numpy()
        episode_start = inner_done if restart_each_episode else ended
    return {"family": family, "seconds_per_suggestion": seconds / max(calls * n, 1)}


class SampledActions:
    """An SB3 model whose ``predict`` samples from its policy (``deterministic=False``) whatever it is asked.

    RL² policies are trained stochastic; where exploration is the point (a search), the mean action
    can be a much worse policy than the sampled one. ``metaopt-bench --sample-models`` and the
    trainer's evaluation of the Ensemble and HPO families report both.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        for name in ("env_kwargs", "episodes_per_trial", "action_mode"):  # the env a model with a run spec needs
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        return self.model.predict(observation, state=state, episode_start=episode_start, deterministic=False)
