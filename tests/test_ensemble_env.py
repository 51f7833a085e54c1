"""MetaOpt-Ensemble-v0: registry contract, batch equivalence, seeding, autoreset, RL² trials, bad input.

Promises (MetaOptEnsembleEnv docstring):
- the id is registered; every stream family and action mode passes Gymnasium's and SB3's checkers;
- row ``i`` of a batch reset with ``seed=s`` is the run of a single env reset with ``seed=s+i``,
  across autoresets;
- the reward is ``-min(e_ens^2, loss_clip)`` with ``e_ens`` the weighted forecast's normalized error,
  computed here independently from the core's stream and forecasts;
- observations never carry NaN; bad actions and arguments raise ``ValueError`` naming the parameter.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

import metaopt_envs
from metaopt_envs.ensemble.core import EnsembleCore

SMALL = {"horizon": 30, "warmup": 20}  # the core truncates: no max_episode_steps needed
FAMILIES = ("switching_ar", "regimes", "real", "mixture")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ("logits", "simplex"))
def test_check_env_every_family_and_mode(family, mode):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("MetaOpt-Ensemble-v0", task_family=family, action_mode=mode, **SMALL)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5 * 8 + 4,) and np.isfinite(obs).all()


def test_make_vec_is_native_batched_env():
    envs = gym.make_vec("MetaOpt-Ensemble-v0", num_envs=5, horizon=30, warmup=20)
    assert type(envs.unwrapped).__name__ == "MetaOptEnsembleVectorEnv"
    obs, _ = envs.reset(seed=3)
    assert obs.shape == (5, 44)
    obs, reward, _terminated, _truncated, info = envs.step(envs.action_space.sample())
    assert reward.shape == (5,) and info["weights"].shape == (5, 8)


def _run_single(kwargs, seed, actions):
    env = gym.make("MetaOpt-Ensemble-v0", **kwargs)
    obs, _ = env.reset(seed=seed)
    observations, rewards, dones = [obs], [], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
        observations.append(obs)
        rewards.append(reward)
        dones.append(terminated or truncated)
    return np.array(observations), np.array(rewards), np.array(dones)


@pytest.mark.parametrize("family", ("switching_ar", "regimes", "real", "mixture"))
def test_vector_rows_equal_single_envs_across_autoreset(family):
    kwargs = {"task_family": family, "horizon": 15, "warmup": 20}
    num_envs, seed, steps = 3, 40, 35  # two whole episodes and part of a third
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, num_envs, 8)).astype(np.float32)
    envs = gym.make_vec("MetaOpt-Ensemble-v0", num_envs=num_envs, **kwargs)
    obs, _ = envs.reset(seed=seed)
    batch_obs, batch_rewards, batch_dones = [obs], [], []
    for t in range(steps):
        obs, reward, terminated, truncated, _ = envs.step(actions[t])
        batch_obs.append(obs)
        batch_rewards.append(reward)
        batch_dones.append(terminated | truncated)
    batch_obs, batch_rewards, batch_dones = np.array(batch_obs), np.array(batch_rewards), np.array(batch_dones)
    assert batch_dones.sum() == 2 * num_envs
    for i in range(num_envs):
        obs_i, rewards_i, dones_i = _run_single(kwargs, seed + i, actions[:, i])
        np.testing.assert_allclose(batch_obs[:, i], obs_i, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batch_rewards[:, i], rewards_i, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(batch_dones[:, i], dones_i)


def test_reward_and_observation_follow_the_definition():
    core = EnsembleCore(num_envs=6, task_family="regimes", horizon=40, warmup=20, loss_clip=4.0)
    core.reset_rows(torch.ones(6, dtype=torch.bool), keys=metaopt_envs.core.seeds_to_keys(5, 6, core.device))
    values, forecasts, sigma = core.values.double(), core.forecasts.double(), core.sigma.double()
    generator = np.random.default_rng(1)
    for step in range(40):
        actions = generator.uniform(-1, 1, size=(6, 8)).astype(np.float32)
        t = 20 + step
        weights = torch.softmax(4.0 * torch.tensor(actions, dtype=torch.float64), -1)
        errors = (forecasts[:, :, t] - values[:, t : t + 1]) / sigma[:, None]
        loss = ((weights * errors).sum(-1)) ** 2
        result = core.step(actions)
        np.testing.assert_allclose(result.info["loss"].double(), loss, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result.reward.double(), -loss.clamp(max=4.0), rtol=1e-4, atol=1e-5)
        obs = result.observation.double()
        np.testing.assert_allclose(obs[:, :8], errors.clamp(-100, 100), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(obs[:, 24:32], weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(obs[:, 40], (weights * errors).sum(-1).clamp(-100, 100), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(obs[:, 43], (step + 1) / 40, atol=1e-6)
    assert bool(result.truncated.all())


def test_sigma_uses_warmup_only():
    """Changing the stream after the warm-up leaves sigma and the first observation unchanged."""
    core = EnsembleCore(num_envs=4, task_family="switching_ar", horizon=30, warmup=20)
    sigma = core.values[:, :20].double().diff(dim=-1).square().mean(-1).sqrt()
    np.testing.assert_allclose(core.sigma.double(), sigma, rtol=1e-5)
    obs = core.observe()
    # Only the forecast-spread block looks at the forecasts for the first decision (made from the past).
    core.values[:, 21:] += 1000.0
    np.testing.assert_allclose(core.observe(), obs)


def test_simplex_mode_uses_weights_and_zero_mass_is_uniform():
    core = EnsembleCore(num_envs=2, task_family="switching_ar", action_mode="simplex", horizon=10, warmup=20)
    actions = np.zeros((2, 8), dtype=np.float32)
    actions[0, 3] = 0.5
    result = core.step(actions)
    np.testing.assert_allclose(result.info["weights"][0], np.eye(8)[3], atol=1e-7)
    np.testing.assert_allclose(result.info["weights"][1], np.full(8, 1 / 8), atol=1e-7)


def test_rl2_trial_keeps_the_process_and_changes_the_realization():
    core = metaopt_envs.make_core(
        "MetaOpt-Ensemble-v0", num_envs=2, episodes_per_trial=2, task_family="switching_ar", horizon=10, warmup=20
    )
    base = core.core
    first_values, task_key = base.values.clone(), base.task_key.clone()
    for _ in range(10):
        result = core.step(np.zeros((2, 8), dtype=np.float32))
    assert bool(result.info["inner_episode_done"].all()) and not bool(result.terminated.any())
    assert not torch.equal(base.values, first_values)  # a new realization ...
    assert torch.equal(base.task_key, task_key)  # ... of the same process
    np.testing.assert_array_equal(result.observation[:, -1].numpy(), 1.0)  # the new-episode flag
    for _ in range(10):
        result = core.step(np.zeros((2, 8), dtype=np.float32))
    assert bool(result.terminated.all())


def test_no_nan_in_observations_on_flat_and_huge_streams():
    core = EnsembleCore(num_envs=2, task_family="switching_ar", horizon=10, warmup=20)
    core.values[0] = 3.0  # a flat stream: sigma is floored, not zero
    core.values[1] = torch.linspace(0, 1e6, core.length)
    core.forecasts[:] = 0.0
    for _ in range(10):
        result = core.step(np.ones((2, 8), dtype=np.float32))
        assert torch.isfinite(result.observation).all() and torch.isfinite(result.reward).all()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"task_family": "nope"}, "task_family"),
        ({"split": "val"}, "split"),
        ({"horizon": 0}, "horizon"),
        ({"warmup": 3}, "warmup"),
        ({"action_mode": "softmax"}, "action_mode"),
        ({"logit_scale": -1.0}, "logit_scale"),
        ({"loss_clip": 0.0}, "loss_clip"),
        ({"forecasters": ("last",)}, "forecasters"),
        ({"forecasters": "last_value"}, "forecasters must be a list or tuple"),
        ({"forecaster_window": 8}, "forecaster_window=8 is too short"),
        ({"logit_scale": float("inf")}, "logit_scale must be a finite number"),
        ({"horizon": True}, "horizon must be an int"),
        ({"forecasters": ("last", "crystal_ball")}, "crystal_ball"),
        ({"forecaster_window": 2}, "forecaster_window"),
        ({"num_envs": 0}, "num_envs"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        EnsembleCore(**{"num_envs": 1, **kwargs})


def test_bad_actions_raise():
    env = gym.make("MetaOpt-Ensemble-v0", **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(7, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(8, np.nan, dtype=np.float32))
    venv = metaopt_envs.make_sb3_vec_env("MetaOpt-Ensemble-v0", num_envs=3, horizon=10, warmup=20)
    venv.reset()
    with pytest.raises(ValueError, match="actions"):
        venv.step(np.zeros((3, 4), dtype=np.float32))


def test_seeding_reproduces_and_unseeded_resets_move_on():
    env = gym.make("MetaOpt-Ensemble-v0", **SMALL)
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    np.testing.assert_array_equal(first, again)
    other, _ = env.reset(seed=8)
    assert not np.allclose(first, other)
    env.reset(seed=7)
    following, _ = env.reset()  # the row's next stream, not a replay of the seeded one
    assert not np.allclose(first, following)
    core = env.unwrapped.core
    train = EnsembleCore(num_envs=4, split="train", horizon=10, warmup=20)
    test = EnsembleCore(num_envs=4, split="test", horizon=10, warmup=20)
    assert not torch.equal(train.values, test.values)  # the splits draw different streams
    assert core.values.shape == (1, 50)
