"""Kickstarting RL² from hand-designed teachers (``agent.kickstart`` of ``metaopt-train``).

Schmitt et al. (2018), "Kickstarting Deep Reinforcement Learning": the student's policy loss gets a
distillation term towards a teacher's actions on the states the *student* visits, with a weight that
decays to zero, so the student starts from the teacher's behaviour and PPO alone decides what it keeps.
Here each task family of the LR mixture can have its own teacher, a tuned hand-designed controller
(``{logistic: "cosine?lr=0.464"}``); rows whose family has none get no distillation term (nor, with
``from_episode``, rows in the first inner episodes of their trial). The teacher
sees only the observation (every :mod:`agents.controllers.lr` schedule and hypergradient rule reads
what it needs from it); the family is read from the core's tasks when the row acts, as
:class:`agents.rl2.reward_scale.FamilyRewardScale` does: it is privileged information of training,
the student never sees it.

A teacher emits a learning rate; :class:`Teachers` maps it to the env's action mode (absolute:
the action of ``lr_range``; relative: ``log(lr_teacher / lr_now) / log(max_lr_change)``; hypergradient:
the same less the rule's own step), clipped to [-1, 1]. The distillation term is the squared distance of
the student's action mean to the teacher's action (the KL divergence between two Gaussians of the
student's standard deviation, up to the factor 1 / (2 std^2)), so it shapes the mean and leaves the
exploration noise to PPO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from agents.controllers.base import core_of
from agents.controllers.lr import BASELINES, FEATURE, LRController

KICKSTART_KEYS = ("teachers", "coef", "steps", "from_episode")
"""The keys of ``agent.kickstart``: ``teachers`` (family -> ``NAME?key=value`` of a hand-designed
LR controller), ``coef`` (the distillation weight at the start), ``steps`` (environment steps over
which the weight decays linearly to zero) and ``from_episode`` (default 0: teach the inner episodes of
each RL² trial from this one on; 1 leaves the first episode, where the agent finds out what task it
faces, to PPO alone)."""


def check_kickstart(kickstart: Mapping[str, Any]) -> tuple[dict[str, str], float, int, int]:
    """``(teachers, coef, steps, from_episode)`` of an ``agent.kickstart`` mapping; ValueError naming the
    bad key or value."""
    for key in kickstart:
        if key not in KICKSTART_KEYS:
            raise ValueError(
                f"agent.kickstart.{key} is not a key of agent.kickstart; the keys are {', '.join(KICKSTART_KEYS)}"
            )
    teachers = kickstart.get("teachers")
    if not isinstance(teachers, Mapping) or not teachers:
        raise ValueError(
            f"agent.kickstart.teachers must map task families to controllers, e.g. {{logistic: 'cosine?lr=0.464'}}, "
            f"got {teachers!r}"
        )
    for family, spec in teachers.items():
        if not isinstance(spec, str):
            raise ValueError(f"agent.kickstart.teachers.{family} must be a string NAME?key=value, got {spec!r}")
    coef = kickstart.get("coef", 1.0)
    if isinstance(coef, bool) or not isinstance(coef, int | float) or not math.isfinite(coef) or coef <= 0:
        raise ValueError(f"agent.kickstart.coef must be a positive finite number, got {coef!r}")
    steps = kickstart.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"agent.kickstart.steps must be a positive integer (environment steps), got {steps!r}")
    from_episode = kickstart.get("from_episode", 0)
    if isinstance(from_episode, bool) or not isinstance(from_episode, int) or from_episode < 0:
        raise ValueError(f"agent.kickstart.from_episode must be an integer >= 0, got {from_episode!r}")
    return {str(k): str(v) for k, v in teachers.items()}, float(coef), int(steps), int(from_episode)


class Teachers:
    """The teachers of an LR env's families, as actions of the env's action mode.

    :param env: the env the student acts on (any form :func:`core_of` takes).
    :param teachers: family name -> ``NAME`` or ``NAME?key=value&...`` of a controller in
        :data:`agents.controllers.lr.BASELINES` (``cosine?lr=0.464``); a ValueError names an unknown
        family or controller, or one that needs more than the observation (``hypergradient_additive``,
        ``oracle``, ``random``).
    """

    def __init__(self, env: Any, teachers: Mapping[str, str], from_episode: int = 0) -> None:
        from agents.evaluation.specs import build_baseline, parse_agent_spec

        self.core = core_of(env)
        self.from_episode = int(from_episode)
        if not hasattr(self.core, "log_max_change"):
            raise ValueError("agent.kickstart needs a MetaOpt-LR-v0 env (its teachers are learning-rate controllers)")
        self.families = tuple(self.core.family.families())
        lr_range = (math.exp(self.core.log_lr_low), math.exp(self.core.log_lr_high))
        self.controllers: list[LRController | None] = [None] * len(self.families)
        for family, text in teachers.items():
            if family not in self.families:
                raise ValueError(
                    f"agent.kickstart.teachers names the family {family!r}, which the env does not have; "
                    f"its families are {', '.join(self.families)}"
                )
            spec = parse_agent_spec(f"baseline:{text}")
            if spec.name in ("hypergradient_additive", "oracle", "random") or spec.name not in BASELINES:
                usable = sorted(set(BASELINES) - {"hypergradient_additive", "oracle", "random"})
                raise ValueError(
                    f"agent.kickstart.teachers.{family} must name a controller that reads only the observation, "
                    f"one of {usable}; got {text!r}"
                )
            self.controllers[self.families.index(family)] = build_baseline(spec, BASELINES, "lr", lr_range=lr_range)
        self.has_teacher = np.array([c is not None for c in self.controllers])

    def actions(self, observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The teachers' actions ``(B, 1)`` float32 for the rows' current tasks and the weights ``(B,)``
        (1 where the row's family has a teacher and its inner episode is ``from_episode`` or later,
        else 0; the action is 0 where no teacher acts)."""
        core = self.core
        family = core.family.family_index(core.tasks).cpu().numpy()
        actions = np.zeros((observation.shape[0], 1), dtype=np.float32)
        for index, controller in enumerate(self.controllers):
            if controller is None:
                continue
            rows = np.flatnonzero(family == index)
            if not rows.size:
                continue
            obs = observation[rows]
            log_target = np.log(controller.learning_rate(obs))
            if core.action_mode == "absolute":
                action = 2.0 * (log_target - core.log_lr_low) / (core.log_lr_high - core.log_lr_low) - 1.0
            else:
                log_now = np.log(controller.current_lr(obs))
                if core.action_mode == "hypergradient":
                    log_now = log_now + core.hypergradient_beta * obs[:, FEATURE["update_cosine"]]
                action = (log_target - log_now) / core.log_max_change
            actions[rows, 0] = np.clip(action, -1.0, 1.0)
        weights = self.has_teacher[family].astype(np.float32)
        if self.from_episode:
            weights *= (core.inner_episode >= self.from_episode).cpu().numpy()
        return actions, weights


class Kickstart:
    """What :class:`agents.rl2.fast_recurrent.FastRecurrentPPO` needs to kickstart (its ``kickstart``
    attribute): the teachers, and the distillation weight ``coef`` decaying linearly to 0 at ``steps``."""

    def __init__(self, teachers: Teachers, coef: float, steps: int) -> None:
        self.teachers, self.coef, self.steps = teachers, float(coef), int(steps)

    @classmethod
    def from_config(cls, env: Any, kickstart: Mapping[str, Any]) -> Kickstart:
        """From an ``agent.kickstart`` mapping (:func:`check_kickstart`) on ``env``."""
        teachers, coef, steps, from_episode = check_kickstart(kickstart)
        return cls(Teachers(env, teachers, from_episode), coef, steps)

    def weight(self, num_timesteps: int) -> float:
        """The distillation weight after ``num_timesteps`` environment steps."""
        return self.coef * max(0.0, 1.0 - num_timesteps / self.steps)


def evaluate_actions_and_mean(
    policy: Any, obs: torch.Tensor, actions: torch.Tensor, lstm_states: Any, episode_starts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sb3-contrib's ``RecurrentActorCriticPolicy.evaluate_actions`` (the same operations), also
    returning the action distribution's mean ``(N, action_dim)``, which the distillation term needs."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        pi_features = vf_features = features
    else:
        pi_features, vf_features = features
    latent_pi, _ = policy._process_sequence(pi_features, lstm_states.pi, episode_starts, policy.lstm_actor)
    if policy.lstm_critic is not None:
        latent_vf, _ = policy._process_sequence(vf_features, lstm_states.vf, episode_starts, policy.lstm_critic)
    elif policy.shared_lstm:
        latent_vf = latent_pi.detach()
    else:
        latent_vf = policy.critic(vf_features)
    latent_pi = policy.mlp_extractor.forward_actor(latent_pi)
    latent_vf = policy.mlp_extractor.forward_critic(latent_vf)
    distribution = policy._get_action_dist_from_latent(latent_pi)
    values = policy.value_net(latent_vf)
    return values, distribution.log_prob(actions), distribution.entropy(), distribution.distribution.mean


def distillation_loss(mean: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real, taught steps of the squared distance of the student's action mean
    ``(N, 1)`` to the teacher's action; ``teacher`` is ``(N, 2)``: action, weight; ``mask`` ``(N,)`` bool."""
    weight = teacher[:, 1] * mask
    squared = ((mean[:, 0] - teacher[:, 0]) ** 2) * weight
    return squared.sum() / weight.sum().clamp_min(1.0)


__all__ = [
    "KICKSTART_KEYS",
    "Kickstart",
    "Teachers",
    "check_kickstart",
    "distillation_loss",
    "evaluate_actions_and_mean",
]
