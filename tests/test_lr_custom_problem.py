"""A user-defined TaskFamily plugs into every LR environment.

Promise (lr/families/base.py): subclass ``LRTaskFamily``, implement ``sample``,
``init_params``, ``loss`` and ``minibatch_loss`` with tensor operations over
the leading dimension, and pass the instance as ``task_family=`` to any LR
environment; the gradient comes from the autograd default.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

from metaopt_envs import make_sb3_vec_env
from metaopt_envs.core import rng
from metaopt_envs.lr.families import LRTaskFamily
from metaopt_envs.lr.core import LR_FEATURES

HORIZON = 15
LR_RANGE = (1e-4, 10.0)


class LeastSquaresFamily(LRTaskFamily):
    """Batched linear least squares ``1/2 mean((X w - y)^2)`` with its own random data per task."""

    name = "least_squares"

    def __init__(self, num_features: int = 5, num_samples: int = 64, batch_size: int = 8, noise: float = 0.1):
        self.num_features, self.num_samples, self.batch_size, self.noise = num_features, num_samples, batch_size, noise
        self.param_dim = num_features
        self.calls = {"sample": 0, "init_params": 0, "loss": 0, "minibatch_loss": 0}

    def sample(self, keys, split):
        self.calls["sample"] += 1
        shift = 0.0 if split == "train" else 3.0  # the test split draws other true weights
        x = rng.normal(rng.fold(keys, 1), (self.num_samples, self.num_features))
        w = rng.normal(rng.fold(keys, 2), (self.num_features,)) + shift
        y = (x @ w.unsqueeze(-1)).squeeze(-1) + self.noise * rng.normal(rng.fold(keys, 3), (self.num_samples,))
        return {"x": x, "y": y, "w": w}

    def init_params(self, tasks, keys):
        self.calls["init_params"] += 1
        return torch.zeros(keys.shape[0], self.param_dim, device=keys.device)

    @staticmethod
    def _objective(params, x, y):
        residual = (x @ params.unsqueeze(-1)).squeeze(-1) - y
        return 0.5 * residual.square().mean(-1)

    def loss(self, params, tasks, split="train"):
        self.calls["loss"] += 1
        return self._objective(params, tasks["x"], tasks["y"])

    def minibatch_loss(self, params, tasks, keys):
        self.calls["minibatch_loss"] += 1
        index = rng.randint(keys, self.num_samples, (self.batch_size,))
        x = tasks["x"].gather(1, index.unsqueeze(-1).expand(-1, -1, self.num_features))
        y = tasks["y"].gather(1, index)
        return self._objective(params, x, y)


def _action_for(lr: float) -> float:
    low, high = math.log(LR_RANGE[0]), math.log(LR_RANGE[1])
    return 2.0 * (math.log(lr) - low) / (high - low) - 1.0


SENSIBLE = np.float32(_action_for(0.3))


def test_single_env_check_env_and_learning():
    family = LeastSquaresFamily()
    env = gym.make("MetaOpt-LR-v0", task_family=family, horizon=HORIZON, max_episode_steps=HORIZON, lr_range=LR_RANGE)
    assert env.unwrapped.core.family is family
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
    assert all(count > 0 for count in family.calls.values()), family.calls
    for seed in range(3):
        env.reset(seed=seed)
        total = 0.0
        for t in range(HORIZON):
            obs, reward, terminated, truncated, info = env.step(np.array([SENSIBLE]))
            assert env.observation_space.contains(obs)
            total += reward
        assert truncated and not terminated
        assert total > 1.0, total  # the loss fell by more than a factor e
        assert info["loss"] < info["initial_loss"]
        assert info["family"] == 0


def test_sb3_check_env_on_custom_family():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(
        "MetaOpt-LR-v0", task_family=LeastSquaresFamily(), horizon=HORIZON, max_episode_steps=HORIZON,
        lr_range=LR_RANGE,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env, warn=True)


def test_custom_family_core_follows_autograd_sgd():
    """With SGD the core's update is exactly the autograd gradient of the user's minibatch_loss."""
    family = LeastSquaresFamily()
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=2, task_family=family, horizon=HORIZON, lr_range=LR_RANGE)
    vec.reset(seed=0)
    core = vec.core
    params = core.params.clone()
    step_key = rng.fold(core.run_key, 0)
    grads = []
    for half in (0, 1):
        leaf = params.clone().requires_grad_(True)
        family.minibatch_loss(leaf, core.tasks, rng.fold(step_key, half)).sum().backward()
        grads.append(leaf.grad)
    _, _, _, _, infos = vec.step(np.full((2, 1), SENSIBLE, np.float32))
    expected = params - torch.as_tensor(infos["lr"]).unsqueeze(-1) * 0.5 * (grads[0] + grads[1])
    torch.testing.assert_close(core.params, expected, rtol=1e-5, atol=1e-6)


def test_make_vec_with_custom_family():
    vec = gym.make_vec(
        "MetaOpt-LR-v0", num_envs=4, task_family=LeastSquaresFamily(), horizon=HORIZON, lr_range=LR_RANGE
    )
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (4, len(LR_FEATURES)) and vec.observation_space.contains(obs)
    returns = np.zeros(4)
    for t in range(HORIZON):
        obs, reward, terminated, truncated, infos = vec.step(np.full((4, 1), SENSIBLE, np.float32))
        assert vec.observation_space.contains(obs)
        returns += reward
    assert truncated.all() and not terminated.any()
    assert (returns > 1.0).all(), returns
    # Rows are different problems and the next episode is a new one.
    assert len(set(np.round(returns, 5))) == 4


def test_make_sb3_vec_env_with_custom_family():
    vec = make_sb3_vec_env(
        "MetaOpt-LR-v0", num_envs=3, seed=5, task_family=LeastSquaresFamily(), horizon=HORIZON, lr_range=LR_RANGE
    )
    obs = vec.reset()
    assert obs.shape == (3, len(LR_FEATURES))
    returns = np.zeros(3)
    for t in range(HORIZON):
        obs, reward, done, infos = vec.step(np.full((3, 1), SENSIBLE, np.float32))
        returns += reward
    assert done.all()
    assert all(info["TimeLimit.truncated"] for info in infos)
    assert (returns > 1.0).all(), returns


def test_custom_family_split_reaches_sample():
    kwargs = {"task_family": LeastSquaresFamily(), "horizon": HORIZON, "lr_range": LR_RANGE}
    train = gym.make_vec("MetaOpt-LR-v0", num_envs=2, split="train", **kwargs)
    kwargs["task_family"] = LeastSquaresFamily()
    test = gym.make_vec("MetaOpt-LR-v0", num_envs=2, split="test", **kwargs)
    train.reset(seed=0)
    test.reset(seed=0)
    assert (test.core.tasks["w"].mean(-1) > train.core.tasks["w"].mean(-1) + 1.0).all()


def test_custom_family_without_validation_rejects_observe_validation():
    with pytest.raises(ValueError, match="observe_validation"):
        gym.make("MetaOpt-LR-v0", task_family=LeastSquaresFamily(), observe_validation=True)


def test_incomplete_family_cannot_be_instantiated():
    class Incomplete(LRTaskFamily):
        param_dim = 3

        def sample(self, keys, split):
            return {}

    with pytest.raises(TypeError):
        Incomplete()
