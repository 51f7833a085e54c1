"""Divergence handling and the reward's telescoping.

Promise (MetaOptLREnv "Rewards"/"Episode End"): a diverging inner run
(non-finite loss or gradient, or loss above ``divergence_threshold * L_0``)
gets reward ``-divergence_penalty`` and terminates; no NaN or inf reaches an
observation or a reward, observations stay inside the observation space, and a
row continues normally after its autoreset. The rewards of an episode
telescope: their sum is ``log((L_0 + eps L_0) / (L_T + eps L_0))``.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from metaopt_envs import make_sb3_vec_env

HORIZON = 10
NUM_ENVS = 6


def _action_for(lr: float, lr_range: tuple[float, float]) -> float:
    low, high = math.log(lr_range[0]), math.log(lr_range[1])
    return 2.0 * (math.log(lr) - low) / (high - low) - 1.0


def _check_finite_in_space(space, obs, reward):
    assert np.isfinite(obs).all(), obs
    assert not np.isnan(obs).any()
    assert np.isfinite(reward).all(), reward
    assert space.contains(obs.astype(np.float32)), obs


@pytest.mark.parametrize(
    "huge_lr",
    [
        pytest.param(1e4, id="lr1e4"),  # loss explodes past the threshold
        pytest.param(1e30, id="lr1e30"),  # float32 overflow: inf and NaN inside the inner run
    ],
)
def test_huge_constant_lr_terminates_with_penalty(huge_lr):
    penalty = 7.5
    vec = gym.make_vec(
        "MetaOpt-LR-v0",
        num_envs=NUM_ENVS,
        task_family="quadratic",
        horizon=HORIZON,
        lr_range=(1e-4, huge_lr),
        divergence_penalty=penalty,
    )
    obs, _ = vec.reset(seed=0)
    _check_finite_in_space(vec.observation_space, obs, np.zeros(1))
    ended = np.zeros(NUM_ENVS, bool)
    for _t in range(3):
        initial_loss = vec.core.initial_loss.clone()
        obs, reward, terminated, truncated, infos = vec.step(np.ones((NUM_ENVS, 1), np.float32))
        _check_finite_in_space(vec.observation_space, obs, reward)
        assert not truncated.any()
        np.testing.assert_array_equal(reward[terminated], -penalty)
        assert (reward[~terminated] > -penalty).all()
        for i in np.flatnonzero(terminated):
            _check_finite_in_space(vec.single_observation_space, infos["final_obs"][i], reward[i])
            assert not np.isnan(infos["loss"][i])
            assert infos["loss"][i] > 1e4 * initial_loss[i].item() or math.isinf(infos["loss"][i])
        ended |= terminated
    assert ended.all(), "every quadratic must diverge at a huge learning rate"
    # After the autoreset every row continues with a sane rate (0.02) and finite values.
    sane = _action_for(0.02, (1e-4, huge_lr))
    returns = np.zeros(NUM_ENVS)
    for _t in range(HORIZON):
        obs, reward, terminated, truncated, infos = vec.step(np.full((NUM_ENVS, 1), sane, np.float32))
        _check_finite_in_space(vec.observation_space, obs, reward)
        assert np.isfinite(infos["loss"]).all()
        assert not terminated.any()
        returns += reward
    assert (returns > 0).all()


def test_divergence_in_single_env_relative_mode():
    env = gym.make(
        "MetaOpt-LR-v0",
        task_family="quadratic",
        action_mode="relative",
        horizon=HORIZON,
        lr_range=(1e-4, 1e30),
        initial_lr=1e3,
        max_lr_change=1e3,
    )
    obs, _ = env.reset(seed=4)
    assert env.observation_space.contains(obs)
    for _ in range(HORIZON):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0], np.float32))
        _check_finite_in_space(env.observation_space, obs, np.array([reward]))
        if terminated:
            break
    assert terminated and not truncated
    assert reward == -10.0
    assert info["diverged"] is True
    # A fresh episode after reset starts again at initial_lr, is finite and proceeds normally:
    # lr 1e3 -> 1 -> 0.1, then kept at 0.1 (stable: curvatures are at most 10).
    obs, _ = env.reset()
    assert obs[6] == 0.0
    total = 0.0
    actions = [-1.0, -1.0 / 3.0] + [0.0] * (HORIZON - 2)
    for t in range(HORIZON):
        obs, reward, terminated, truncated, info = env.step(np.array([actions[t]], np.float32))
        _check_finite_in_space(env.observation_space, obs, np.array([reward]))
        total += reward
        if terminated or truncated:
            break
    assert not terminated and truncated
    assert info["diverged"] is False
    assert info["lr"] == pytest.approx(0.1, rel=1e-4)
    assert math.isfinite(total)


def test_divergence_threshold_is_relative_to_initial_loss():
    """A small threshold turns an ordinary growth of the loss into a divergence."""
    env = gym.make(
        "MetaOpt-LR-v0",
        task_family="quadratic",
        horizon=HORIZON,
        lr_range=(1e-4, 1e3),
        divergence_threshold=1.5,
    )
    env.reset(seed=2)
    initial = env.unwrapped.core.initial_loss.item()
    for _t in range(HORIZON):
        _, reward, terminated, _, info = env.step(np.array([1.0], np.float32))
        if terminated:
            break
    assert terminated
    assert info["loss"] > 1.5 * initial
    assert reward == -10.0


def test_sb3_divergence_rows_finite():
    vec = make_sb3_vec_env(
        "MetaOpt-LR-v0", num_envs=NUM_ENVS, seed=0, task_family="quadratic", horizon=HORIZON, lr_range=(1e-4, 1e30)
    )
    obs = vec.reset()
    done_any = np.zeros(NUM_ENVS, bool)
    for _t in range(4):
        obs, reward, done, infos = vec.step(np.ones((NUM_ENVS, 1), np.float32))
        for i in range(NUM_ENVS):
            _check_finite_in_space(vec.observation_space, obs[i], reward[i])
        for i in np.flatnonzero(done):
            assert infos[i]["TimeLimit.truncated"] is False
            _check_finite_in_space(vec.observation_space, infos[i]["terminal_observation"], reward[i])
        done_any |= done
    assert done_any.all()


@pytest.mark.parametrize(
    ("family", "optimizer", "loss_floor", "action_every"),
    [
        ("quadratic", "sgd", 1e-6, 1),
        ("quadratic", "momentum", 1e-2, 2),
        ("logistic", "adam", 1e-6, 1),
        ("sinusoid", "sgd", 1e-3, 5),
        ("mixture", "adam", 1e-6, 1),
    ],
)
def test_returns_telescope(family, optimizer, loss_floor, action_every):
    decisions = HORIZON // action_every
    env = gym.make(
        "MetaOpt-LR-v0",
        task_family=family,
        inner_optimizer=optimizer,
        horizon=HORIZON,
        action_every=action_every,
        loss_floor=loss_floor,
    )
    for seed in range(3):
        env.reset(seed=seed)
        rewards = []
        actions = np.random.default_rng(seed).uniform(-1.0, -0.3, size=(decisions, 1)).astype(np.float32)
        for t in range(decisions):
            obs, reward, terminated, truncated, info = env.step(actions[t])
            rewards.append(reward)
            assert not terminated
            assert info["inner_step"] == (t + 1) * action_every
            # The reward is the negated loss_change feature, and log_loss_ratio is the loss relative to L_0.
            l0, lt = info["initial_loss"], info["loss"]
            assert obs[1] == pytest.approx(-reward, rel=1e-4, abs=1e-5)
            assert obs[0] == pytest.approx(math.log((lt + loss_floor * l0) / l0), rel=1e-4, abs=1e-5)
            assert obs[6] == pytest.approx((t + 1) * action_every / HORIZON)
        assert truncated
        expected = math.log((l0 + loss_floor * l0) / (lt + loss_floor * l0))
        assert sum(rewards) == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_vector_returns_telescope_with_final_info():
    """The same identity read from the vector env's info on the ending step.

    Depends on the info of the ending step describing the ended episode (see
    test_lr_autoreset.py::test_vector_final_info_describes_the_ended_episode).
    """
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=4, task_family="sinusoid", horizon=HORIZON)
    vec.reset(seed=8)
    total = np.zeros(4)
    for _t in range(HORIZON):
        _, reward, _terminated, truncated, infos = vec.step(np.full((4, 1), -0.5, np.float32))
        total += reward
    assert truncated.all()
    info = infos["final_info"]
    l0, lt = info["initial_loss"], info["loss"]
    np.testing.assert_allclose(total, np.log((l0 + 1e-6 * l0) / (lt + 1e-6 * l0)), rtol=1e-4, atol=1e-4)
