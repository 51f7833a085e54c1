"""Ensemble baselines: each online learner matches a direct per-row scalar implementation of its
update rule (episode starts included), weights stay on the simplex under huge losses, the
oracles back the right forecaster on a constructed episode, and bad input raises ValueError.

Written against the MetaOpt-Ensemble-v0 observation layout with synthetic observations and a
fake core, so it does not depend on the environment's core."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.controllers.ensemble import (
    ENSEMBLE_BASELINES,
    BestSingleInHindsight,
    ExponentiatedGradient,
    FixedShare,
    FollowTheLeader,
    Hedge,
    RegimeOracle,
    Uniform,
    num_forecasters,
)

K, N, STEPS, RESET_ROW, RESET_STEP = 4, 3, 40, 1, 17


def _obs(errors, last_weights, progress, rng):
    """A synthetic observation batch (float32, (n, 5K + 4)) with the given errors and weights."""
    n, k = errors.shape
    obs = rng.normal(size=(n, 5 * k + 4)).astype(np.float32)  # unused features: noise
    obs[:, :k] = np.clip(errors, -100, 100)
    obs[:, 3 * k : 4 * k] = last_weights
    e = obs[:, :k].astype(np.float64)
    obs[:, 5 * k] = (last_weights.astype(np.float64) * e).sum(-1)  # e_ens of the weights sent
    obs[:, 5 * k + 3] = progress
    return obs


def _run(agent, steps=STEPS, n=N, k=K, scale=2.0, seed=0, reset=((RESET_STEP, RESET_ROW),)):
    """Feed ``agent`` ``steps`` observations; return the observations, start flags and its actions."""
    rng = np.random.default_rng(seed)
    weights = np.full((n, k), 1.0 / k, np.float32)
    biases = rng.normal(size=(n, k)) * scale  # forecasters differ in quality
    observations, starts, actions = [], [], []
    for step in range(steps):
        errors = biases + rng.normal(size=(n, k)) * scale
        obs = _obs(errors, weights, step / steps, rng)
        start = np.zeros(n, bool)
        if step == 0:
            start[:] = True
        for when, row in reset:
            if step == when:
                start[row] = True
        weights, _ = agent.predict(obs, episode_start=start)
        assert weights.shape == (n, k) and weights.dtype == np.float32
        observations.append(obs), starts.append(start), actions.append(weights)
    return observations, starts, actions


# ------------------------------------------------------------------ scalar references (one row)
def _normalize_exp(logits):
    top = max(logits)
    z = [math.exp(x - top) for x in logits]
    return [v / sum(z) for v in z]


class _RowReference:
    """Direct per-row implementation: reset at a start (output uniform), else update then output."""

    def __init__(self, k):
        self.k = k

    def __call__(self, obs, start):
        k = self.k
        if start:
            self.reset()
            return [1.0 / k] * k
        errors = [float(obs[i]) for i in range(k)]
        return self.step([e * e for e in errors], errors, float(obs[5 * k]))


class _FTL(_RowReference):
    def reset(self):
        self.total = [0.0] * self.k

    def step(self, losses, errors, e_ens):
        self.total = [a + b for a, b in zip(self.total, losses)]
        best = min(range(self.k), key=lambda i: (self.total[i], i))
        return [1.0 if i == best else 0.0 for i in range(self.k)]


class _Hedge(_RowReference):
    def __init__(self, k, eta, loss_scale=25.0):
        super().__init__(k)
        self.eta, self.loss_scale = eta, loss_scale

    def reset(self):
        self.total, self.t = [0.0] * self.k, 0

    def step(self, losses, errors, e_ens):
        self.t += 1
        if self.eta is None:
            losses = [min(x, self.loss_scale) / self.loss_scale for x in losses]
            eta = math.sqrt(8.0 * math.log(self.k) / self.t)
        else:
            eta = self.eta
        self.total = [a + b for a, b in zip(self.total, losses)]
        return _normalize_exp([-eta * x for x in self.total])


class _FixedShare(_RowReference):
    def __init__(self, k, eta, alpha):
        super().__init__(k)
        self.eta, self.alpha = eta, alpha

    def reset(self):
        self.w = [1.0 / self.k] * self.k

    def step(self, losses, errors, e_ens):
        v = _normalize_exp([math.log(w) - self.eta * x for w, x in zip(self.w, losses)])
        self.w = [(1 - self.alpha) * x + self.alpha / self.k for x in v]
        return self.w


class _EG(_RowReference):
    def __init__(self, k, eta):
        super().__init__(k)
        self.eta = eta

    def reset(self):
        self.w = [1.0 / self.k] * self.k

    def step(self, losses, errors, e_ens):
        self.w = _normalize_exp([math.log(w) - self.eta * 2.0 * e_ens * e for w, e in zip(self.w, errors)])
        return self.w


CASES = {
    "ftl": (FollowTheLeader, {}, lambda: _FTL(K)),
    "hedge_anytime": (Hedge, {}, lambda: _Hedge(K, None)),
    "hedge_anytime_scale4": (Hedge, {"loss_scale": 4.0}, lambda: _Hedge(K, None, 4.0)),
    "hedge_fixed": (Hedge, {"eta": 0.05}, lambda: _Hedge(K, 0.05)),
    "fixed_share": (FixedShare, {"eta": 0.2, "alpha": 0.05}, lambda: _FixedShare(K, 0.2, 0.05)),
    "fixed_share_alpha0": (FixedShare, {"eta": 0.1, "alpha": 0.0}, lambda: _FixedShare(K, 0.1, 0.0)),
    "eg": (ExponentiatedGradient, {"eta": 0.02}, lambda: _EG(K, 0.02)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_scalar_reference(case):
    cls, kwargs, reference = CASES[case]
    observations, starts, actions = _run(cls(**kwargs))
    references = [reference() for _ in range(N)]
    moved = False
    for obs, start, action in zip(observations, starts, actions):
        for row in range(N):
            expected = references[row](obs[row], bool(start[row]))
            np.testing.assert_allclose(action[row], expected, atol=1e-6, rtol=0)
        moved |= not np.allclose(action, 1.0 / K)
    assert moved  # the losses did change the weights
    # The reset row restarted: uniform at its start, unlike the others.
    np.testing.assert_allclose(actions[RESET_STEP][RESET_ROW], 1.0 / K)
    assert not np.allclose(actions[RESET_STEP][0], 1.0 / K)


def test_episode_start_output_ignores_the_observation_errors():
    agent = Hedge(eta=1.0)
    rng = np.random.default_rng(1)
    errors = np.array([[0.0, 5.0, 5.0, 5.0]])
    w, _ = agent.predict(_obs(errors, np.full((1, K), 0.25, np.float32), 0.0, rng), episode_start=[True])
    np.testing.assert_allclose(w, 0.25)  # the warm-up's errors are not used
    w, _ = agent.predict(_obs(errors, w, 0.1, rng), episode_start=[False])
    assert w[0, 0] > 0.99


def test_batch_size_change_reinitialises_and_state_passes_through():
    agent = FollowTheLeader()
    rng = np.random.default_rng(2)
    errors = np.array([[3.0, 0.0, 3.0, 3.0]] * 2)
    agent.predict(_obs(errors, np.full((2, K), 0.25, np.float32), 0.0, rng), episode_start=[True, True])
    w, _ = agent.predict(_obs(errors, np.full((2, K), 0.25, np.float32), 0.1, rng))
    np.testing.assert_array_equal(w, [[0, 1, 0, 0]] * 2)
    sentinel = object()
    w, state = agent.predict(_obs(errors[:1], np.full((1, K), 0.25, np.float32), 0.2, rng), state=sentinel)
    assert state is sentinel
    np.testing.assert_allclose(w, 0.25)  # a new batch: every row starts fresh


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("uniform", {}),
        ("follow_the_leader", {}),
        ("hedge", {}),
        ("hedge", {"eta": 5.0}),
        ("fixed_share", {}),
        ("fixed_share", {"eta": 5.0, "alpha": 0.0}),
        ("fixed_share", {"eta": 5.0, "alpha": 1e-12}),
        ("exponentiated_gradient", {}),
        ("exponentiated_gradient", {"eta": 5.0}),
    ],
)
def test_weights_stay_on_the_simplex_with_huge_losses(name, kwargs):
    agent = ENSEMBLE_BASELINES[name](**kwargs)
    rng = np.random.default_rng(3)
    n, k, steps = 5, 6, 1500
    weights = np.full((n, k), 1.0 / k, np.float32)
    for step in range(steps):
        # Errors at the observation's clip (loss 1e4), with the best forecaster changing.
        errors = rng.choice([-100.0, 100.0], size=(n, k)) * rng.uniform(0.5, 1.0, (n, k))
        errors[:, (step // 300) % k] *= 1e-3
        errors[:, -1] = 100.0
        obs = _obs(errors, weights, step / steps, rng)
        weights, _ = agent.predict(obs, episode_start=np.full(n, step == 0))
        assert np.isfinite(weights).all()
        assert (weights >= 0).all() and (weights <= 1).all()
        np.testing.assert_allclose(weights.astype(np.float64).sum(-1), 1.0, atol=1e-6)


# ------------------------------------------------------------------ oracles
def _fake_core(as_torch=False, change=(12, 8), T=24, warmup=4, offset=0.5):
    """Row b: forecaster 0 exact before ``change[b]``, forecaster 2 exact from it; forecaster 1
    is off by ``offset`` everywhere (best overall by default); forecasters 0 and 2 are off by 3
    outside their regime."""
    b, k = len(change), 3
    rng = np.random.default_rng(4)
    values = rng.normal(size=(b, T)).astype(np.float32)
    regime = np.zeros((b, T), np.int64)
    forecasts = np.repeat(values[:, None, :], k, axis=1)
    forecasts[:, 1] += offset
    for row, c in enumerate(change):
        regime[row, c:] = 1
        forecasts[row, 0, c:] += 3.0
        forecasts[row, 2, :c] -= 3.0
    sigma = np.array([1.0, 2.0][:b], np.float32)
    t = np.full(b, warmup, np.int64)
    core = SimpleNamespace(values=values, forecasts=forecasts, sigma=sigma, regime=regime, t=t, warmup=warmup)
    if as_torch:
        core = SimpleNamespace(
            **{key: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for key, v in vars(core).items()}
        )
    return core


def _drive(agent, core, change):
    """Step the fake core through one episode; check the oracle's choice at each decision."""
    b, k, T = core.forecasts.shape
    obs = np.zeros((b, 5 * k + 4), np.float32)
    start = np.ones(b, bool)
    for t in range(core.warmup, T):
        core.t[:] = t
        w, _ = agent.predict(obs, episode_start=start)
        start[:] = False
        yield t, w


@pytest.mark.parametrize("as_torch", [False, True], ids=["numpy", "torch"])
def test_regime_oracle_backs_each_segments_best(as_torch):
    change = (12, 8)
    core = _fake_core(as_torch, change)
    agent = RegimeOracle()
    agent.bind_core(SimpleNamespace(core=core))  # through a wrapper
    for t, w in _drive(agent, core, change):
        for row, c in enumerate(change):
            expected = np.eye(3)[0 if t < c else 2]
            np.testing.assert_array_equal(w[row], expected)


def test_oracles_recompute_after_a_reset_of_one_row():
    core = _fake_core(False, (12, 8))
    regime_oracle, best = RegimeOracle(), BestSingleInHindsight()
    regime_oracle.bind_core(core), best.bind_core(core)
    for _t, w in _drive(best, core, None):
        np.testing.assert_array_equal(w, [[0, 1, 0], [0, 1, 0]])
    list(_drive(regime_oracle, core, None))
    # Row 1 gets a new stream: forecaster 2 is now exact throughout, in one regime.
    core.forecasts[1] = core.values[1][None, :] + np.array([[1.0], [0.5], [0.0]], np.float32)
    core.regime[1] = 7
    core.t[:] = core.warmup
    obs = np.zeros((2, 19), np.float32)
    for agent, row0 in ((best, [0, 1, 0]), (regime_oracle, [1, 0, 0])):
        w, _ = agent.predict(obs, episode_start=np.array([False, True]))
        np.testing.assert_array_equal(w, [row0, [0, 0, 1]])


def test_best_single_picks_the_best_overall_forecaster():
    # Forecaster 0 is exact for most of the episode and forecaster 1 is off by 1.5: forecaster 0
    # is then the best overall (9 * 2 and 9 * 4 against 2.25 * 20).
    core = _fake_core(True, (22, 20), offset=1.5)
    agent = BestSingleInHindsight()
    agent.bind_core(core)
    for _, w in _drive(agent, core, None):
        np.testing.assert_array_equal(w, [[1, 0, 0], [1, 0, 0]])


def test_oracle_needs_a_core_and_matching_batch():
    with pytest.raises(RuntimeError, match="bind_core"):
        RegimeOracle().predict(np.zeros((2, 19), np.float32))
    agent = RegimeOracle()
    agent.bind_core(_fake_core())
    with pytest.raises(ValueError, match="observation"):
        agent.predict(np.zeros((3, 19), np.float32))


# ------------------------------------------------------------------ registry, bad input
def test_registry_names_and_hyperparameters():
    assert set(ENSEMBLE_BASELINES) == {
        "uniform",
        "follow_the_leader",
        "hedge",
        "fixed_share",
        "exponentiated_gradient",
        "best_single",
        "regime_oracle",
        "bayes_filter",
    }
    for name, cls in ENSEMBLE_BASELINES.items():
        agent = cls()
        assert agent.name == name and agent.action_mode == "simplex"
        assert isinstance(agent.hyperparameters(), dict)
    assert Hedge(eta=0.5).hyperparameters() == {"eta": 0.5, "loss_scale": 25.0}
    assert FixedShare(eta=2.0, alpha=0.1).hyperparameters() == {"eta": 2.0, "alpha": 0.1}
    assert ExponentiatedGradient(eta=0.3).hyperparameters() == {"eta": 0.3}
    w, _ = Uniform().predict(np.zeros(5 * 7 + 4, np.float32))
    np.testing.assert_allclose(w, np.full((1, 7), 1 / 7))


@pytest.mark.parametrize("width", [0, 4, 8, 10, 18, 20])
@pytest.mark.parametrize("name", sorted(ENSEMBLE_BASELINES))
def test_bad_observation_width(name, width):
    agent = ENSEMBLE_BASELINES[name]()
    if hasattr(agent, "bind_core"):
        agent.bind_core(_fake_core())
    with pytest.raises(ValueError, match="observation"):
        agent.predict(np.zeros((2, width), np.float32))
    with pytest.raises(ValueError, match="observation"):
        num_forecasters(width)


def test_non_finite_observation():
    obs = np.zeros((1, 19), np.float32)
    obs[0, 2] = np.nan
    with pytest.raises(ValueError, match="observation"):
        Hedge().predict(obs)


@pytest.mark.parametrize(
    "build, parameter",
    [
        (lambda: Hedge(eta=0.0), "eta"),
        (lambda: Hedge(eta=-1.0), "eta"),
        (lambda: Hedge(eta=float("nan")), "eta"),
        (lambda: Hedge(loss_scale=0.0), "loss_scale"),
        (lambda: FixedShare(eta=0.0), "eta"),
        (lambda: FixedShare(eta=-0.5), "eta"),
        (lambda: FixedShare(alpha=-0.01), "alpha"),
        (lambda: FixedShare(alpha=1.5), "alpha"),
        (lambda: FixedShare(alpha="x"), "alpha"),
        (lambda: ExponentiatedGradient(eta=0.0), "eta"),
        (lambda: ExponentiatedGradient(eta=-2.0), "eta"),
    ],
)
def test_bad_hyperparameters(build, parameter):
    with pytest.raises(ValueError, match=parameter):
        build()
