"""Registry contract of MetaOpt-LR-v0.

Promise: the id is registered with Gymnasium on import (and loadable as
``"metaopt_envs:MetaOpt-LR-v0"`` without importing the package first), every
configuration passes Gymnasium's and SB3's env checkers, ``gym.make_vec``
returns the native batched VectorEnv (same-step autoreset, batched spaces),
the env pickles, and no TimeLimit is registered (the core truncates at its horizon).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space

from metaopt_envs.lr.core import LR_FEATURES
from metaopt_envs.lr.env import MetaOptLREnv, MetaOptLRVectorEnv

FAMILIES = ("quadratic", "logistic", "sinusoid", "sklearn", "mixture")
WITH_VALIDATION = ("logistic", "sinusoid", "sklearn")
OPTIMIZERS = ("sgd", "momentum", "adam")
MODES = ("absolute", "relative")
SMALL = {"horizon": 10}  # the core truncates: no max_episode_steps needed


def _configs():
    for family in FAMILIES:
        for optimizer in OPTIMIZERS:
            for mode in MODES:
                for validation in (False, True) if family in WITH_VALIDATION else (False,):
                    yield pytest.param(
                        family, optimizer, mode, validation, id=f"{family}-{optimizer}-{mode}-val{int(validation)}"
                    )


@pytest.mark.parametrize(("family", "optimizer", "mode", "validation"), list(_configs()))
def test_gymnasium_check_env_every_configuration(family, optimizer, mode, validation):
    env = gym.make(
        "MetaOpt-LR-v0",
        task_family=family,
        inner_optimizer=optimizer,
        action_mode=mode,
        observe_validation=validation,
        **SMALL,
    )
    unwrapped = env.unwrapped
    assert isinstance(unwrapped, MetaOptLREnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a contract failure here
        gym_check_env(unwrapped, skip_render_check=True)
    expected_dim = len(LR_FEATURES) + (1 if validation else 0)
    assert unwrapped.observation_space.shape == (expected_dim,)
    assert unwrapped.observation_space.dtype == np.float32
    assert len(unwrapped.core.observation_names) == expected_dim
    assert unwrapped.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    # A whole episode stays inside the observation space and ends by truncation at the horizon.
    obs, _ = env.reset(seed=1)
    assert unwrapped.observation_space.contains(obs)
    for t in range(SMALL["horizon"]):
        obs, reward, terminated, truncated, _info = env.step(np.array([-0.5], np.float32))
        assert unwrapped.observation_space.contains(obs), (t, obs)
        assert np.isfinite(reward)
        assert not terminated
        assert truncated == (t == SMALL["horizon"] - 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_sb3_check_env(family):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("MetaOpt-LR-v0", task_family=family, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env, warn=True)
        sb3_check_env(env.unwrapped, warn=True)


def test_registered_spec():
    """Nothing registered repeats the core's episode length: the core is its one owner."""
    spec = gym.spec("MetaOpt-LR-v0")
    assert spec.max_episode_steps is None
    assert spec.entry_point == "metaopt_envs.lr.env:MetaOptLREnv"
    assert spec.vector_entry_point == "metaopt_envs.lr.env:MetaOptLRVectorEnv"
    env = gym.make("MetaOpt-LR-v0", task_family="quadratic")
    assert env.spec.max_episode_steps is None
    assert env.unwrapped.core.horizon == 100


def test_default_episode_is_100_steps():
    env = gym.make("MetaOpt-LR-v0", task_family="quadratic")
    env.reset(seed=0)
    action = np.array([-0.6], np.float32)
    for t in range(100):
        _, _, terminated, truncated, info = env.step(action)
        assert not terminated
        assert truncated == (t == 99), t
    assert info["inner_step"] == 100


def test_make_by_module_path_in_fresh_process(tmp_path):
    code = (
        "import sys\n"
        "import gymnasium as gym\n"
        "assert 'metaopt_envs' not in sys.modules\n"
        "env = gym.make('metaopt_envs:MetaOpt-LR-v0', task_family='quadratic', horizon=10, max_episode_steps=10)\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert env.observation_space.contains(obs)\n"
        "obs, r, te, tr, info = env.step(env.action_space.sample())\n"
        "assert env.observation_space.contains(obs)\n"
        "print(type(env.unwrapped).__name__, env.spec.id, env.spec.max_episode_steps)\n"
    )
    environ = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["MetaOptLREnv", "MetaOpt-LR-v0", "10"]


def test_make_vec_is_native_batched_env():
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=8, task_family="quadratic", horizon=10)
    assert isinstance(vec, MetaOptLRVectorEnv)
    assert not isinstance(vec, SyncVectorEnv)
    assert vec.num_envs == 8
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert vec.single_observation_space == gym.spaces.Box(
        vec.single_observation_space.low, vec.single_observation_space.high, (len(LR_FEATURES),), np.float32
    )
    assert vec.observation_space == batch_space(vec.single_observation_space, 8)
    assert vec.action_space == batch_space(vec.single_action_space, 8)
    assert vec.observation_space.shape == (8, len(LR_FEATURES))
    assert vec.action_space.shape == (8, 1)
    obs, _ = vec.reset(seed=0)
    assert vec.observation_space.contains(obs)
    obs, reward, terminated, truncated, _ = vec.step(vec.action_space.sample())
    assert vec.observation_space.contains(obs)
    assert reward.shape == terminated.shape == truncated.shape == (8,)
    assert terminated.dtype == truncated.dtype == np.bool_


def test_make_vec_with_validation_has_8_features():
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=3, task_family="logistic", observe_validation=True, horizon=10)
    assert vec.observation_space == batch_space(vec.single_observation_space, 3)
    assert vec.observation_space.shape == (3, len(LR_FEATURES) + 1)


def _rollout(env, steps, rng):
    out = []
    for _ in range(steps):
        action = rng.uniform(-1, 1, size=(1,)).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info["loss"]))
    return out


@pytest.mark.parametrize("family", ["quadratic", "mixture"])
def test_env_pickles_mid_episode(family):
    env = gym.make("MetaOpt-LR-v0", task_family=family, inner_optimizer="adam", **SMALL)
    env.reset(seed=11)
    _rollout(env, 3, np.random.default_rng(0))
    clone = pickle.loads(pickle.dumps(env))
    assert clone is not env
    a = _rollout(env, 7, np.random.default_rng(1))
    b = _rollout(clone, 7, np.random.default_rng(1))
    for (oa, ra, ta, tra, la), (ob, rb, tb, trb, lb) in zip(a, b):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb and ta == tb and tra == trb and la == lb
    assert a[-1][3] is True  # the clone kept the step count: both truncate at the same step
    # The next episode (a fresh task from the row's stream) matches too.
    oa, _ = env.reset()
    ob, _ = clone.reset()
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(env.unwrapped.core.params.numpy(), clone.unwrapped.core.params.numpy())


def test_vector_env_pickles():
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=4, task_family="logistic", horizon=10)
    vec.reset(seed=5)
    vec.step(np.full((4, 1), 0.2, np.float32))
    clone = pickle.loads(pickle.dumps(vec))
    actions = np.linspace(-1, 1, 4, dtype=np.float32).reshape(4, 1)
    oa, ra, *_ = vec.step(actions)
    ob, rb, *_ = clone.step(actions)
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(ra, rb)


def test_importing_the_package_only_registers() -> None:
    """Like Gymnasium's registry, ``import metaopt_envs`` imports no torch until an env or the checker is used."""
    import subprocess
    import sys

    code = (
        "import sys, metaopt_envs; assert 'torch' not in sys.modules, 'import metaopt_envs pulled in torch'; "
        "metaopt_envs.check_task_family; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
