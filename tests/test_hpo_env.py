"""MetaOpt-HPO-v0: registry contract, batch equivalence, reward definition, RL² trials, bad input.

Promises (MetaOptHPOEnv docstring): every family passes Gymnasium's and SB3's checkers; row ``i``
of a batch reset with ``seed=s`` is a single env reset with ``seed=s+i``, across autoresets; the
observation carries the evaluated configuration and its normalized regret; the reward is the
improvement of ``log10`` of the best regret, so the return is ``-log10`` of the simple regret;
padded coordinates are ignored; bad input raises ``ValueError`` naming the parameter.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

import metaopt_envs
from metaopt_envs.hpo.core import HPOCore

FAMILIES = ("branin", "hartmann3", "hartmann6", "gp", "sklearn", "mixture")


@pytest.mark.parametrize("family", FAMILIES)
def test_check_env_every_family(family):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("MetaOpt-HPO-v0", task_family=family, budget=8)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("family", ("branin", "gp", "sklearn", "mixture"))
def test_vector_rows_equal_single_envs_across_autoreset(family):
    num_envs, seed, budget, steps = 3, 11, 6, 15
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, size=(steps, num_envs, 6)).astype(np.float32)
    envs = gym.make_vec("MetaOpt-HPO-v0", num_envs=num_envs, task_family=family, budget=budget)
    d = envs.single_action_space.shape[0]
    obs, _ = envs.reset(seed=seed)
    batch = [obs]
    rewards = []
    for t in range(steps):
        obs, reward, *_ = envs.step(actions[t, :, :d])
        batch.append(obs)
        rewards.append(reward)
    for i in range(num_envs):
        env = gym.make("MetaOpt-HPO-v0", task_family=family, budget=budget)
        single = [env.reset(seed=seed + i)[0]]
        single_rewards = []
        for t in range(steps):
            o, r, terminated, truncated, _ = env.step(actions[t, i, :d])
            if terminated or truncated:
                o, _ = env.reset()
            single.append(o)
            single_rewards.append(r)
        np.testing.assert_allclose(np.array(batch)[:, i], np.array(single), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(rewards)[:, i], np.array(single_rewards), rtol=1e-5, atol=1e-6)


def test_observation_and_reward_follow_the_definition():
    core = HPOCore(num_envs=8, task_family="mixture", budget=10)
    tasks = {k: v.clone() for k, v in core.tasks.items()}
    generator = np.random.default_rng(2)
    best = np.ones(8)
    total = np.zeros(8)
    for _ in range(10):
        actions = generator.uniform(-1, 1, size=(8, core.max_dim)).astype(np.float32)
        mask = core.mask.numpy()
        f = core.family.evaluate(tasks, torch.tensor(actions * mask)).double().numpy()
        regret = (f - tasks["f_opt"].double().numpy()) / (tasks["f_ref"] - tasks["f_opt"]).double().numpy()
        new_best = np.minimum(best, regret)
        result = core.step(actions)
        expected_reward = np.log10(np.maximum(best, 1e-6)) - np.log10(np.maximum(new_best, 1e-6))
        np.testing.assert_allclose(result.reward.numpy(), expected_reward, rtol=1e-4, atol=1e-5)
        obs = result.observation.numpy()
        d = core.max_dim
        np.testing.assert_allclose(obs[:, :d], actions * mask, atol=1e-6)
        np.testing.assert_allclose(obs[:, 2 * d], np.clip(regret, -1, 10), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(obs[:, 2 * d + 2], np.clip(new_best, -1, 10), rtol=1e-4, atol=1e-5)
        best = new_best
        total += result.reward.numpy()
    np.testing.assert_allclose(total, -np.log10(np.maximum(best, 1e-6)), rtol=1e-4, atol=1e-4)
    assert bool(result.truncated.all())


def test_padded_coordinates_are_ignored():
    core = HPOCore(num_envs=16, task_family="mixture", budget=4)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(16, core.max_dim)).astype(np.float32)
    noisy = actions + (1.0 - core.mask.numpy()) * 0.7
    first = core.step(actions).info["value"].clone()
    core.reset_rows(torch.ones(16, dtype=torch.bool), same_task=True)
    np.testing.assert_allclose(core.step(noisy).info["value"], first)


def test_max_dim_pads_the_spaces_without_changing_the_values():
    wide = HPOCore(num_envs=4, task_family="branin", budget=3, max_dim=6)
    narrow = HPOCore(num_envs=4, task_family="branin", budget=3)
    assert wide.single_action_space.shape == (6,) and wide.single_observation_space.shape == (17,)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(4, 6)).astype(np.float32)
    torch.testing.assert_close(wide.step(actions).info["value"], narrow.step(actions[:, :2]).info["value"])


def test_rl2_trial_searches_the_same_objective_again():
    core = metaopt_envs.make_core("MetaOpt-HPO-v0", num_envs=4, episodes_per_trial=2, task_family="branin", budget=3)
    actions = np.full((4, core.max_dim), 0.3, dtype=np.float32)
    first = [core.step(actions) for _ in range(3)]
    second = [core.step(actions) for _ in range(3)]
    torch.testing.assert_close(first[0].info["value"], second[0].info["value"])  # the same objective
    assert bool(first[-1].info["inner_episode_done"].all()) and not bool(first[-1].terminated.any())
    assert bool(second[0].info["evaluation"].eq(1).all())  # a new search: the budget starts again
    assert bool(second[-1].terminated.all())  # the trial ends after 2 searches


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"task_family": "rosenbrock"}, "rosenbrock"),
        ({"split": "validation"}, "split"),
        ({"budget": 0}, "budget"),
        ({"budget": True}, "budget must be an int >= 1"),
        ({"regret_floor": float("nan")}, "regret_floor must be a finite number"),
        ({"max_dim": True}, "max_dim must be an int"),
        ({"reward_mode": "loss"}, "reward_mode"),
        ({"regret_floor": 0.0}, "regret_floor"),
        ({"num_envs": -2}, "num_envs"),
        ({"task_family": "hartmann6", "max_dim": 3}, "max_dim"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        HPOCore(**{"num_envs": 1, **kwargs})


def test_bad_actions_raise():
    core = HPOCore(num_envs=2, task_family="branin")
    with pytest.raises(ValueError, match="actions"):
        core.step(np.zeros((2, core.max_dim + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        core.step(np.full((2, core.max_dim), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="actions must be real numbers"):
        core.step(np.zeros((2, core.max_dim), dtype=object))
