"""Hand-designed learning-rate controllers with SB3's ``predict`` interface.

Every controller answers ``predict(observation, state=None, episode_start=None,
deterministic=True) -> (actions, state)`` on a batch of MetaOpt-LR-v0
observations ``(n, obs_dim)``, so one evaluator scores them, a trained SB3
model, and a user's own agent alike. They read what they need from the
observation (documented per class) and emit absolute-mode actions:

- ``progress`` (feature 6) drives the schedules;
- ``log_lr`` (feature 5) is the rate in force, which hypergradient descent updates;
- ``update_cosine`` (feature 7) is the normalized hypergradient.

Rates are mapped to actions with the environment's ``lr_range``; build a
controller with :meth:`LRController.for_env` to take it from the env. Every controller
is a :class:`agents.controllers.base.Controller` (the one base of the hand-designed agents).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agents.controllers.base import Controller, core_of
from metaopt_envs.lr.core import LR_FEATURES

FEATURE = {name: i for i, (name, _, _) in enumerate(LR_FEATURES)}


def _num_features(obs_dim: int) -> int:
    """The width itself; ValueError below the LR env's feature count (extra columns are ignored)."""
    if int(obs_dim) < len(LR_FEATURES):
        raise ValueError(f"observation width must be at least {len(LR_FEATURES)} (MetaOpt-LR-v0), got {obs_dim}")
    return int(obs_dim)


class LRController(Controller):
    """Base: maps a learning rate per row to the absolute-mode action of ``lr_range``."""

    name = "lr_controller"
    action_mode = "absolute"
    observation_width = f">= {len(LR_FEATURES)}"
    _size_from_width = staticmethod(_num_features)

    def __init__(self, lr_range: tuple[float, float] = (1e-4, 10.0)) -> None:
        super().__init__()
        self.log_low, self.log_high = math.log(lr_range[0]), math.log(lr_range[1])

    @classmethod
    def for_env(cls, env: Any, **kwargs: Any) -> LRController:
        """A controller for ``env`` (any form: Env, VectorEnv, SB3 VecEnv or core)."""
        core = core_of(env)
        if core.action_mode != "absolute":
            raise ValueError(
                "hand-designed controllers emit absolute-mode actions; make the env with action_mode='absolute'"
            )
        return cls(lr_range=(math.exp(core.log_lr_low), math.exp(core.log_lr_high)), **kwargs)

    def lr_to_action(self, lr: np.ndarray) -> np.ndarray:
        action = 2.0 * (np.log(lr) - self.log_low) / (self.log_high - self.log_low) - 1.0
        return np.clip(action, -1.0, 1.0).astype(np.float32).reshape(-1, 1)

    def current_lr(self, observation: np.ndarray) -> np.ndarray:
        scaled = observation[:, FEATURE["log_lr"]]
        return np.exp(self.log_low + 0.5 * (scaled + 1.0) * (self.log_high - self.log_low))

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        """The rate ``(n,)`` to use next."""
        raise NotImplementedError

    def _act(self, observation: Any, episode_start: Any) -> np.ndarray:
        obs, _ = self._check_observation(observation)
        return self.lr_to_action(self.learning_rate(obs))


class TunableLRController(LRController):
    """Base of the controllers with a base rate ``lr``, the hyperparameter ``metaopt-bench`` tunes."""

    def __init__(self, lr: float = 0.1, lr_range: tuple[float, float] = (1e-4, 10.0)) -> None:
        super().__init__(lr_range)
        self.lr = lr


class ConstantLR(TunableLRController):
    """A constant rate ``lr``."""

    name = "constant"

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        return np.full(observation.shape[0], self.lr)


class CosineLR(TunableLRController):
    """Cosine annealing from ``lr`` to ``lr * final_fraction`` over the episode (reads ``progress``)."""

    name = "cosine"

    def __init__(
        self, lr: float = 0.1, final_fraction: float = 0.0, lr_range: tuple[float, float] = (1e-4, 10.0)
    ) -> None:
        super().__init__(lr, lr_range)
        self.final_fraction = final_fraction

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        progress = observation[:, FEATURE["progress"]]
        shape = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + np.cos(np.pi * progress))
        return self.lr * np.maximum(shape, 1e-12)


class StepDecayLR(TunableLRController):
    """``lr`` times ``factor`` at each milestone fraction of the episode (reads ``progress``)."""

    name = "step_decay"

    def __init__(
        self,
        lr: float = 0.1,
        factor: float = 0.1,
        milestones: tuple[float, ...] = (0.5, 0.75),
        lr_range: tuple[float, float] = (1e-4, 10.0),
    ) -> None:
        super().__init__(lr, lr_range)
        self.factor, self.milestones = factor, np.asarray(milestones)

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        progress = observation[:, FEATURE["progress"]]
        passed = (progress[:, None] >= self.milestones[None, :]).sum(-1)
        return self.lr * self.factor**passed


class ExponentialDecayLR(TunableLRController):
    """``lr * final_fraction ** progress``: geometric decay to ``lr * final_fraction``."""

    name = "exponential_decay"

    def __init__(
        self, lr: float = 0.1, final_fraction: float = 0.01, lr_range: tuple[float, float] = (1e-4, 10.0)
    ) -> None:
        super().__init__(lr, lr_range)
        self.final_fraction = final_fraction

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        return self.lr * self.final_fraction ** observation[:, FEATURE["progress"]]


class WarmupCosineLR(TunableLRController):
    """Linear warm-up to ``lr`` over ``warmup_fraction`` of the episode, then cosine annealing to 0."""

    name = "warmup_cosine"

    def __init__(
        self, lr: float = 0.1, warmup_fraction: float = 0.1, lr_range: tuple[float, float] = (1e-4, 10.0)
    ) -> None:
        super().__init__(lr, lr_range)
        if not 0.0 < warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in (0, 1), got {warmup_fraction}")
        self.warmup_fraction = warmup_fraction

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        progress = observation[:, FEATURE["progress"]]
        warm = (progress + 1e-3) / self.warmup_fraction
        decay = 0.5 * (1.0 + np.cos(np.pi * (progress - self.warmup_fraction) / (1.0 - self.warmup_fraction)))
        return self.lr * np.maximum(np.where(progress < self.warmup_fraction, warm, decay), 1e-12)


class HypergradientLR(TunableLRController):
    """Hypergradient descent (Baydin et al., 2018), multiplicative (normalized) form.

    ``lr_t = lr_{t-1} * exp(beta * cos(g_t, u_{t-1}))``, where ``u`` is the last
    update direction: the observation's ``update_cosine`` feature, so the rule
    works for SGD, momentum and Adam alike. The rate in force comes from the
    ``log_lr`` feature; an episode starts at ``lr`` (``progress == 0``).
    """

    name = "hypergradient"

    def __init__(self, lr: float = 0.01, beta: float = 0.1, lr_range: tuple[float, float] = (1e-4, 10.0)) -> None:
        super().__init__(lr, lr_range)
        self.beta = beta

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        start = observation[:, FEATURE["progress"]] == 0.0
        updated = self.current_lr(observation) * np.exp(self.beta * observation[:, FEATURE["update_cosine"]])
        return np.where(start, self.lr, updated)


class AdditiveHypergradientLR(TunableLRController):
    """Hypergradient descent in its original, additive form (Baydin et al., 2018, SGD-HD).

    ``lr_t = lr_{t-1} + beta * g_t . u_{t-1}``: the raw dot product of the gradient with the
    last update direction ``u = (params_before - params_after) / lr`` (for SGD the previous
    gradient, as in the paper's Algorithm 4; for momentum and Adam their update direction, as in
    SGDN-HD and Adam-HD), which is ``-d loss / d lr``. The dot product is not in the observation
    (its features are scale-free), so the rule reads it from the env's core each decision
    (``bind_core``; the evaluator binds it, as for the oracles): it uses nothing a user's own
    optimizer would not compute. With ``action_every > 1`` it sees the last inner step of each
    decision. Unlike :class:`HypergradientLR` its ``beta`` has the units of ``lr**2 / loss`` and
    depends on the problem's scale; the paper uses ``beta = 1e-3`` from ``lr = 1e-3`` for SGD-HD.
    An episode starts at ``lr``; the rate stays inside the env's ``lr_range``.
    """

    name = "hypergradient_additive"

    def __init__(self, lr: float = 0.001, beta: float = 0.001, lr_range: tuple[float, float] = (1e-4, 10.0)) -> None:
        super().__init__(lr, lr_range)
        self.beta = beta
        self.core: Any = None

    def bind_core(self, core: Any) -> None:
        self.core = core_of(core)

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        if self.core is None:
            raise RuntimeError(
                "hypergradient_additive reads the raw hypergradient from the env's core: bind it first "
                "(agent.bind_core(env); the evaluator does this)"
            )
        hypergradient = self.core.grad_dot_previous_update.detach().cpu().numpy().astype(np.float64)
        start = observation[:, FEATURE["progress"]] == 0.0
        updated = self.current_lr(observation) + self.beta * np.nan_to_num(hypergradient, posinf=0.0, neginf=0.0)
        return np.where(start, self.lr, np.clip(updated, math.exp(self.log_low), math.exp(self.log_high)))


class RandomLR(LRController):
    """Uniformly random actions (a random log learning rate each decision)."""

    name = "random"

    def __init__(self, seed: int = 0, lr_range: tuple[float, float] = (1e-4, 10.0)) -> None:
        super().__init__(lr_range)
        self.rng = np.random.default_rng(seed)

    def _act(self, observation: Any, episode_start: Any) -> np.ndarray:
        n = self._check_observation(observation)[0].shape[0]
        return self.rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)


class QuadraticOracleLR(LRController):
    """The analytic optimal constant SGD step of each quadratic task (an oracle row, not an agent).

    It reads the task itself, which no agent can: the harness binds it to the
    core (``bind_core``) after every reset. Needs ``task_family="quadratic"``
    and ``inner_optimizer="sgd"``.
    """

    name = "oracle"

    def __init__(self, lr_range: tuple[float, float] = (1e-4, 10.0)) -> None:
        super().__init__(lr_range)
        self.core: Any = None

    def bind_core(self, core: Any) -> None:
        self.core = core_of(core)
        self.rates = self.core.optimal_constant_lr().cpu().numpy()

    def learning_rate(self, observation: np.ndarray) -> np.ndarray:
        if self.core is None:
            raise RuntimeError("the oracle must be bound to the env's core first (the harness does this)")
        return self.rates


TUNABLE: dict[str, type[TunableLRController]] = {
    cls.name: cls for cls in (ConstantLR, CosineLR, StepDecayLR, ExponentialDecayLR, WarmupCosineLR, HypergradientLR)
}
"""The baselines whose ``lr`` is tuned on the training split (``metaopt-bench --agents baselines``)."""

TUNED = tuple(TUNABLE)
"""Their names."""

BASELINES: dict[str, type[LRController]] = {
    **TUNABLE,
    AdditiveHypergradientLR.name: AdditiveHypergradientLR,
    RandomLR.name: RandomLR,
    QuadraticOracleLR.name: QuadraticOracleLR,
}
"""Baselines by name; all but ``random`` and ``oracle`` take a tunable ``lr``."""
