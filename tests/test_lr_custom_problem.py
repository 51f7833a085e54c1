"""A user-defined TaskFamily plugs into every LR environment.

Promise (lr/families/base.py): subclass ``LRTaskFamily``, implement ``sample``,
``init_params``, ``loss`` and ``minibatch_loss`` with tensor operations over
the leading dimension, and pass the instance as ``task_family=`` to any LR
environment; the gradient comes from the autograd default, which keeps its graph
when params require grad (a differentiable unroll gets a second-order meta-gradient).
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
from metaopt_envs.lr.core import LR_FEATURES
from metaopt_envs.lr.families import LRTaskFamily

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
        for _t in range(HORIZON):
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
        "MetaOpt-LR-v0",
        task_family=LeastSquaresFamily(),
        horizon=HORIZON,
        max_episode_steps=HORIZON,
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


class LogCoshFamily(LeastSquaresFamily):
    """Robust regression ``mean(log cosh(X w - y))``: not quadratic, so its Hessian moves with the parameters and
    a meta-gradient through an unroll has a second-order term that a first-order one misses."""

    name = "log_cosh"

    @staticmethod
    def _objective(params, x, y):
        residual = (x @ params.unsqueeze(-1)).squeeze(-1) - y
        return (residual + torch.nn.functional.softplus(-2.0 * residual) - math.log(2.0)).mean(-1)


class LogCoshClosedForm(LogCoshFamily):
    """The same family with its gradient written out (``mean(tanh(r) x)``): differentiable in params, as the
    built-in closed forms are; the reference."""

    def minibatch_loss_and_grad(self, params, tasks, keys):
        index = rng.randint(keys, self.num_samples, (self.batch_size,))
        x = tasks["x"].gather(1, index.unsqueeze(-1).expand(-1, -1, self.num_features))
        y = tasks["y"].gather(1, index)
        residual = (x @ params.unsqueeze(-1)).squeeze(-1) - y
        loss = (residual + torch.nn.functional.softplus(-2.0 * residual) - math.log(2.0)).mean(-1)
        return loss, (torch.tanh(residual).unsqueeze(-1) * x).mean(1)


class LogCoshFirstOrder(LogCoshFamily):
    """What the autograd default did before: the gradient as a constant of the graph."""

    def minibatch_loss_and_grad(self, params, tasks, keys):
        with torch.enable_grad():
            leaf = params.detach().requires_grad_(True)
            loss = self.minibatch_loss(leaf, tasks, keys)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        return loss.detach(), grad


def _meta_derivatives(family, optimizer_name, steps=3, n=4):
    """First and second derivatives ``(n,)`` of the training loss after ``steps`` decisions of
    :func:`metaopt_envs.lr.dynamics.step` with respect to each row's constant log learning rate."""
    from metaopt_envs.lr import dynamics
    from metaopt_envs.lr.optimizers import InnerOptimizer

    keys = rng.keys_from_seeds(list(range(n)))
    tasks = family.sample(keys, "train")
    optimizer = InnerOptimizer(optimizer_name)
    log_lr = torch.full((n,), math.log(0.3 if optimizer_name == "sgd" else 0.2), requires_grad=True)
    with torch.no_grad():
        params = family.init_params(tasks, keys)
        state = dynamics.start(family, optimizer, params, tasks, rng.fold(keys, 7), log_lr.detach())
    with torch.enable_grad():
        for _ in range(steps):
            state = dynamics.step(state, log_lr, family, optimizer, tasks, rng.fold(keys, 7))
        assert not state.diverged.any()
        (first,) = torch.autograd.grad(state.loss.sum(), log_lr, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), log_lr)  # rows are independent: the diagonal
    return first.detach(), second


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_autograd_default_gives_a_second_order_meta_gradient(optimizer_name):
    """Through a differentiable unroll of dynamics.step (the learned optimizers' meta-training), a family with only
    minibatch_loss gets the meta-gradient, and its derivative, of a closed-form gradient: the default keeps the
    graph of its gradient when params require grad. Without grad (the environments) it is detached, same numbers."""
    first, second = _meta_derivatives(LogCoshFamily(), optimizer_name)
    ref_first, ref_second = _meta_derivatives(LogCoshClosedForm(), optimizer_name)
    torch.testing.assert_close(first, ref_first, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(second, ref_second, rtol=1e-4, atol=1e-6)
    # The test can tell: a first-order gradient gives another meta-gradient.
    old_first, old_second = _meta_derivatives(LogCoshFirstOrder(), optimizer_name)
    assert (old_first - ref_first).abs().max() > 1e-2 * ref_first.abs().max()
    assert (old_second - ref_second).abs().max() > 1e-2 * ref_second.abs().max()

    family = LogCoshFamily()
    keys = rng.keys_from_seeds([0, 1, 2])
    tasks = family.sample(keys, "train")
    params = 0.1 * rng.normal(keys, (family.param_dim,))
    detached = LRTaskFamily.minibatch_loss_and_grad(family, params, tasks, rng.fold(keys, 3))
    with torch.enable_grad():
        graph = family.minibatch_loss_and_grad(params.clone().requires_grad_(True), tasks, rng.fold(keys, 3))
    assert not any(t.requires_grad for t in detached) and all(t.grad_fn is not None for t in graph)
    assert all(torch.equal(a, b.detach()) for a, b in zip(detached, graph))
    assert all(
        torch.equal(a, b)
        for a, b in zip(detached, LogCoshFirstOrder().minibatch_loss_and_grad(params, tasks, rng.fold(keys, 3)))
    )


def test_make_vec_with_custom_family():
    vec = gym.make_vec(
        "MetaOpt-LR-v0", num_envs=4, task_family=LeastSquaresFamily(), horizon=HORIZON, lr_range=LR_RANGE
    )
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (4, len(LR_FEATURES)) and vec.observation_space.contains(obs)
    returns = np.zeros(4)
    for _t in range(HORIZON):
        obs, reward, terminated, truncated, _infos = vec.step(np.full((4, 1), SENSIBLE, np.float32))
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
    for _t in range(HORIZON):
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
