"""Seeding: a seed fixes the whole run, different seeds and rows give different problems, and splits are disjoint.

Promise (lr_core / rng module docstrings): all randomness comes from per-row
keys derived from ``reset(seed=...)``; the task of each episode, the
initialization and every minibatch are functions of that key; no global RNG
state is touched. ``split="test"`` draws a different part of the task
distribution; for ``"sklearn"`` the test split is exactly the held-out dataset
(wine) and the train split never uses it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from metaopt_envs import make_core, make_sb3_vec_env
from metaopt_envs.lr.families import SklearnMLPFamily

HORIZON = 10
FAMILIES = ("quadratic", "logistic", "sinusoid", "sklearn", "mixture")


def _episode(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    observations, rewards, losses = [obs], [], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        losses.append(info["loss"])
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), np.array(losses)


def _actions(seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 0.0, size=(HORIZON, 1)).astype(np.float32)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_trajectory_different_seed_different(family):
    env_a = gym.make("MetaOpt-LR-v0", task_family=family, horizon=HORIZON)
    env_b = gym.make("MetaOpt-LR-v0", task_family=family, horizon=HORIZON)
    actions = _actions()
    obs_a, rew_a, loss_a = _episode(env_a, 123, actions)
    obs_b, rew_b, loss_b = _episode(env_b, 123, actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    np.testing.assert_array_equal(loss_a, loss_b)
    # Re-seeding the same env replays the run exactly.
    obs_c, rew_c, _ = _episode(env_a, 123, actions)
    np.testing.assert_array_equal(obs_a, obs_c)
    np.testing.assert_array_equal(rew_a, rew_c)
    # Another seed is another problem.
    _obs_d, rew_d, loss_d = _episode(env_b, 124, actions)
    assert not np.array_equal(loss_a, loss_d)
    assert not np.allclose(rew_a, rew_d)


def test_seeded_episode_sequence_is_reproducible():
    """After reset(seed=s), the following unseeded resets draw the same sequence of tasks."""

    def sequence():
        env = gym.make("MetaOpt-LR-v0", task_family="quadratic", horizon=HORIZON)
        env.reset(seed=77)
        curvatures = [env.unwrapped.core.tasks["curvature"].clone()]
        for _ in range(3):
            env.reset()
            curvatures.append(env.unwrapped.core.tasks["curvature"].clone())
        return torch.stack(curvatures)

    first, second = sequence(), sequence()
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    for i in range(4):
        for j in range(i):
            assert not torch.equal(first[i], first[j]), (i, j)


def test_unseeded_envs_differ():
    vec_a = make_sb3_vec_env("MetaOpt-LR-v0", num_envs=2, task_family="quadratic", horizon=HORIZON)
    vec_b = make_sb3_vec_env("MetaOpt-LR-v0", num_envs=2, task_family="quadratic", horizon=HORIZON)
    obs_a, obs_b = vec_a.reset(), vec_b.reset()
    assert not torch.equal(vec_a.core.tasks["curvature"], vec_b.core.tasks["curvature"])
    assert not np.array_equal(obs_a, obs_b)


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_of_a_batch_are_different_problems(family):
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=8, task_family=family, horizon=HORIZON)
    vec.reset(seed=0)
    params = vec.core.params
    init_loss = vec.core.initial_loss
    if family != "logistic":  # logistic starts every problem at w = 0, loss log(2)
        assert torch.unique(init_loss).numel() == 8, init_loss
        assert torch.unique(params, dim=0).shape[0] == 8
    for name, value in vec.core.tasks.items():
        if value.is_floating_point() and value.dim() >= 2 and value.abs().sum() > 0 and family != "mixture":
            assert torch.unique(value.flatten(1), dim=0).shape[0] == 8, name
    # The rows' trajectories differ too.
    _obs, reward, *_ = vec.step(np.full((8, 1), -0.5, np.float32))
    assert np.unique(reward).size == 8


@pytest.mark.parametrize("family", ["quadratic", "logistic", "sinusoid", "mixture"])
def test_train_and_test_splits_give_different_tasks(family):
    train = make_core("MetaOpt-LR-v0", num_envs=16, task_family=family, split="train", horizon=HORIZON)
    test = make_core("MetaOpt-LR-v0", num_envs=16, task_family=family, split="test", horizon=HORIZON)
    keys = torch.arange(16)
    rows = torch.ones(16, dtype=torch.bool)
    train.reset_rows(rows, keys=keys)
    test.reset_rows(rows, keys=keys)
    assert set(train.tasks) == set(test.tasks)
    differing = [
        name
        for name in train.tasks
        if train.tasks[name].is_floating_point() and not torch.equal(train.tasks[name], test.tasks[name])
    ]
    assert differing, "the test split drew the very same tasks as the train split"
    if family != "logistic":  # logistic starts every problem at loss log(2)
        assert not torch.equal(train.initial_loss, test.initial_loss)
    # No test task equals any train task row-wise (rows with the same key and any other key).
    signature = "curvature" if family == "quadratic" else ("inputs" if family == "logistic" else None)
    if signature is not None:
        a, b = train.tasks[signature].flatten(1), test.tasks[signature].flatten(1)
        assert torch.cdist(a, b).min() > 0


def test_split_reaches_the_single_env():
    """``split`` is an env argument: seeded train and test envs start on different problems."""
    kwargs = {"task_family": "sinusoid", "horizon": HORIZON}
    env_train = gym.make("MetaOpt-LR-v0", split="train", **kwargs)
    env_test = gym.make("MetaOpt-LR-v0", split="test", **kwargs)
    env_train.reset(seed=5)
    env_test.reset(seed=5)
    tasks_train, tasks_test = env_train.unwrapped.core.tasks, env_test.unwrapped.core.tasks
    assert not torch.equal(tasks_train["amplitude"], tasks_test["amplitude"])
    assert env_test.unwrapped.core.split == "test"


def _dataset_names(family: SklearnMLPFamily, tasks) -> set[str]:
    return {family.datasets[int(i)] for i in tasks["dataset"]}


def _standardized(loader) -> torch.Tensor:
    x, _ = loader(return_X_y=True)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    return torch.as_tensor(x, dtype=torch.float32)


def _wine_rows(tasks) -> torch.Tensor:
    """(n, rows) bool: which data rows of each task are (zero-padded) rows of the standardized wine data."""
    from sklearn.datasets import load_wine

    wine = _standardized(load_wine)
    inputs = tasks["inputs"]  # (n, rows, max_features)
    padded_zero = (inputs[..., wine.shape[1] :] == 0).all(-1)
    head = inputs[..., : wine.shape[1]].flatten(0, 1)
    distance = torch.cdist(head, wine, compute_mode="donot_use_mm_for_euclid_dist").amin(-1).view(inputs.shape[:2])
    return padded_zero & (distance < 1e-4)


def test_sklearn_test_split_is_only_wine():
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=24, task_family="sklearn", split="test", horizon=2)
    vec.reset(seed=0)
    family = vec.core.family
    seen = set()
    for _ in range(3):  # the first tasks and two rounds of autoreset tasks
        seen |= _dataset_names(family, vec.core.tasks)
        assert _wine_rows(vec.core.tasks).all(), "a test task reads data outside the wine dataset"
        for _ in range(2):
            vec.step(np.zeros((24, 1), np.float32))
    assert seen == {"wine"}


def test_sklearn_train_split_never_uses_wine():
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=48, task_family="sklearn", split="train", horizon=2)
    vec.reset(seed=0)
    family = vec.core.family
    seen = set()
    for _ in range(3):
        seen |= _dataset_names(family, vec.core.tasks)
        assert not _wine_rows(vec.core.tasks).any(), "a train task reads wine rows"
        for _ in range(2):
            vec.step(np.zeros((48, 1), np.float32))
    assert seen == {"digits", "breast_cancer"}


def test_mixture_sklearn_member_respects_split():
    core = make_core("MetaOpt-LR-v0", num_envs=64, task_family="mixture", split="test", horizon=HORIZON)
    core.reset_rows(torch.ones(64, dtype=torch.bool), keys=torch.arange(64))
    members = core.family.families()
    sk = members.index("sklearn")
    rows = core.tasks["family"] == sk
    assert rows.sum() > 0
    sk_family = core.family.members[sk]
    datasets = {sk_family.datasets[int(i)] for i in core.tasks[f"{sk}/dataset"][rows]}
    assert datasets == {"wine"}


def test_no_global_rng_state_is_touched():
    torch.manual_seed(0)
    np.random.seed(0)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=4, task_family="mixture", horizon=4)
    vec.reset(seed=1)
    for _ in range(6):
        vec.step(np.full((4, 1), -0.3, np.float32))
    env = gym.make("MetaOpt-LR-v0", task_family="mixture", horizon=4)
    env.reset(seed=3)
    env.step(np.array([0.1], np.float32))
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
