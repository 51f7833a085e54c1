"""Bad input fails loudly: a ValueError whose message names the offending argument.

Promise (MetaOptLREnv docstring): "NaN or inf actions and wrong shapes raise
ValueError"; every constructor argument is validated with a clear message,
whichever way the env is built (``gym.make``, ``gym.make_vec``,
``make_sb3_vec_env``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from metaopt_envs import make_sb3_vec_env

SMALL = {"task_family": "quadratic", "horizon": 4}


def _single():
    env = gym.make("MetaOpt-LR-v0", **SMALL)
    env.reset(seed=0)
    return env


def _vector(num_envs=3):
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=num_envs, **SMALL)
    vec.reset(seed=0)
    return vec


# ------------------------------------------------------------------ actions
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_single_env_non_finite_action(bad):
    env = _single()
    with pytest.raises(ValueError, match=r"(?i)action.*(finite|nan|inf)"):
        env.step(np.array([bad], np.float32))
    # The unwrapped env raises the same, and a rejected action leaves the state untouched.
    core = env.unwrapped.core
    params = core.params.clone()
    with pytest.raises(ValueError, match=r"(?i)action"):
        env.unwrapped.step(np.array([bad], np.float32))
    assert (core.params == params).all()
    assert int(core.inner_step[0]) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_vector_non_finite_action(bad):
    vec = _vector()
    actions = np.zeros((3, 1), np.float32)
    actions[1, 0] = bad
    with pytest.raises(ValueError, match=r"(?i)action.*(finite|nan|inf)"):
        vec.step(actions)
    assert int(vec.core.inner_step.max()) == 0


def test_sb3_non_finite_action():
    vec = make_sb3_vec_env("MetaOpt-LR-v0", num_envs=2, seed=0, **SMALL)
    vec.reset()
    with pytest.raises(ValueError, match=r"(?i)action.*(finite|nan|inf)"):
        vec.step(np.array([[0.0], [np.nan]], np.float32))


@pytest.mark.parametrize("shape", [(), (2,), (1, 1), (0,)], ids=["scalar", "two", "1x1", "empty"])
def test_single_env_wrong_action_shape(shape):
    env = _single()
    with pytest.raises(ValueError, match=r"(?i)action.*shape"):
        env.step(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"(?i)action.*shape"):
        env.unwrapped.step(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape", [(3, 2), (2, 1), (4, 1), (1,), (3, 1, 1), ()], ids=str)
def test_vector_wrong_action_shape(shape):
    vec = _vector(3)
    with pytest.raises(ValueError, match=r"(?i)action.*shape"):
        vec.step(np.zeros(shape, np.float32))


def test_vector_accepts_flat_actions():
    """(B,) is documented as an accepted shape, equivalent to (B, 1)."""
    vec_a, vec_b = _vector(3), _vector(3)
    obs_a, *_ = vec_a.step(np.array([-0.5, 0.0, 0.5], np.float32))
    obs_b, *_ = vec_b.step(np.array([[-0.5], [0.0], [0.5]], np.float32))
    np.testing.assert_array_equal(obs_a, obs_b)


@pytest.mark.parametrize("shape", [(2, 2), (3,), (4, 1)], ids=str)
def test_sb3_wrong_action_shape(shape):
    vec = make_sb3_vec_env("MetaOpt-LR-v0", num_envs=2, seed=0, **SMALL)
    vec.reset()
    with pytest.raises(ValueError, match=r"(?i)action.*shape"):
        vec.step(np.zeros(shape, np.float32))


def test_out_of_range_actions_are_clipped_not_rejected():
    env_a, env_b = _single(), _single()
    obs_a, reward_a, *_ = env_a.step(np.array([5.0], np.float32))
    obs_b, reward_b, *_ = env_b.step(np.array([1.0], np.float32))
    np.testing.assert_array_equal(obs_a, obs_b)
    assert reward_a == reward_b


# ------------------------------------------------------------------ constructor arguments
BAD_ARGUMENTS = [
    pytest.param({"task_family": "nope"}, r"task_family", id="unknown-family"),
    pytest.param({"task_family": 3}, r"task_family", id="family-not-a-name"),
    pytest.param({"inner_optimizer": "rmsprop"}, r"inner_optimizer", id="unknown-optimizer"),
    pytest.param({"horizon": 0}, r"horizon", id="horizon-0"),
    pytest.param({"horizon": -5}, r"horizon", id="horizon-negative"),
    pytest.param({"horizon": 2.5}, r"horizon", id="horizon-float"),
    pytest.param({"horizon": True}, r"horizon must be an int >= 1.*got True", id="horizon-bool"),
    pytest.param({"horizon": 10, "action_every": 3}, r"horizon.*action_every|action_every.*horizon", id="not-multiple"),
    pytest.param({"action_every": 0}, r"action_every", id="action-every-0"),
    pytest.param({"lr_range": (1.0, 1.0)}, r"lr_range", id="lr-range-empty"),
    pytest.param({"lr_range": (1.0, 0.1)}, r"lr_range", id="lr-range-inverted"),
    pytest.param({"lr_range": (0.0, 1.0)}, r"lr_range", id="lr-range-zero"),
    pytest.param({"lr_range": (-1.0, 1.0)}, r"lr_range", id="lr-range-negative"),
    pytest.param({"lr_range": (1e-3, float("inf"))}, r"lr_range", id="lr-range-inf"),
    pytest.param({"lr_range": (float("nan"), 1.0)}, r"lr_range", id="lr-range-nan"),
    pytest.param({"lr_range": (1.0,)}, r"lr_range must be a \(low, high\) pair.*got \(1.0,\)", id="lr-range-one-value"),
    pytest.param({"lr_range": 0.1}, r"lr_range must be a \(low, high\) pair.*got 0.1", id="lr-range-scalar"),
    pytest.param({"action_mode": "multiplicative"}, r"action_mode", id="unknown-action-mode"),
    pytest.param({"split": "validation"}, r"split", id="unknown-split"),
    pytest.param({"observe_validation": True}, r"observe_validation", id="validation-quadratic"),
    pytest.param(
        {"task_family": "mixture", "observe_validation": True}, r"observe_validation", id="validation-mixture"
    ),
    pytest.param({"initial_lr": 100.0}, r"initial_lr", id="initial-lr-outside"),
    pytest.param({"max_lr_change": 1.0}, r"max_lr_change", id="max-lr-change"),
    pytest.param({"max_lr_change": float("inf")}, r"max_lr_change must be a finite number", id="max-lr-change-inf"),
    pytest.param({"initial_lr": float("nan")}, r"initial_lr must be a finite number", id="initial-lr-nan"),
    pytest.param({"divergence_threshold": 0.5}, r"divergence_threshold", id="divergence-threshold"),
    pytest.param({"divergence_penalty": -1.0}, r"divergence_penalty", id="divergence-penalty"),
    pytest.param(
        {"divergence_penalty": float("inf")}, r"divergence_penalty must be a finite", id="divergence-penalty-inf"
    ),
    pytest.param(
        {"divergence_threshold": float("nan")}, r"divergence_threshold must be a finite", id="divergence-threshold-nan"
    ),
    pytest.param({"observe_validation": 1}, r"observe_validation must be True or False", id="validation-int"),
    pytest.param({"loss_floor": 0.0}, r"loss_floor", id="loss-floor"),
    pytest.param({"optimizer_kwargs": {"momentum": 1.5}}, r"momentum", id="momentum"),
    pytest.param({"task_family_kwargs": {"min_dim": 0}}, r"min_dim", id="family-kwargs"),
    pytest.param({"device": "tpu-9000"}, r"device", id="device"),
    pytest.param({"device": "cuda:99"}, r"device='cuda:99'", id="device-missing-cuda"),
]


def _kwargs(extra: dict) -> dict:
    return {"task_family": "quadratic", "horizon": 4, **extra}


@pytest.mark.parametrize(("extra", "pattern"), BAD_ARGUMENTS)
def test_gym_make_rejects(extra, pattern):
    with pytest.raises(ValueError, match=pattern):
        gym.make("MetaOpt-LR-v0", **_kwargs(extra))


@pytest.mark.parametrize(("extra", "pattern"), BAD_ARGUMENTS)
def test_make_vec_rejects(extra, pattern):
    with pytest.raises(ValueError, match=pattern):
        gym.make_vec("MetaOpt-LR-v0", num_envs=2, **_kwargs(extra))


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        pytest.param({"task_family": "nope"}, r"task_family", id="unknown-family"),
        pytest.param({"lr_range": (1.0, 0.1)}, r"lr_range", id="lr-range-inverted"),
        pytest.param({"split": "dev"}, r"split", id="unknown-split"),
        pytest.param({"observe_validation": True}, r"observe_validation", id="validation-quadratic"),
    ],
)
def test_make_sb3_vec_env_rejects(extra, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_sb3_vec_env("MetaOpt-LR-v0", num_envs=2, **_kwargs(extra))


@pytest.mark.parametrize("num_envs", [0, -1, 1.5, True])
def test_make_vec_rejects_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec("MetaOpt-LR-v0", num_envs=num_envs, **SMALL)


@pytest.mark.parametrize("episodes", [0, -2, 1.5, True])
def test_rejects_bad_episodes_per_trial(episodes):
    with pytest.raises(ValueError, match="episodes_per_trial"):
        make_sb3_vec_env("MetaOpt-LR-v0", num_envs=2, episodes_per_trial=episodes, **SMALL)
    with pytest.raises(ValueError, match="episodes_per_trial"):
        gym.make_vec("MetaOpt-LR-v0", num_envs=2, episodes_per_trial=episodes, **SMALL)


def test_make_sb3_vec_env_rejects_unknown_id():
    with pytest.raises(ValueError, match="env_id"):
        make_sb3_vec_env("CartPole-v1", num_envs=2)


def test_family_instance_with_family_kwargs_is_rejected():
    from metaopt_envs.lr.families import NoisyQuadraticFamily

    with pytest.raises(ValueError, match="task_family_kwargs"):
        gym.make("MetaOpt-LR-v0", task_family=NoisyQuadraticFamily(), task_family_kwargs={"min_dim": 2})
