"""Per-family reward scales (``agent.reward_scale``): what the learner sees, and what it does not change."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from stable_baselines3.common.vec_env import VecMonitor

import metaopt_envs
from agents.cli.train import check_config
from agents.rl2.reward_scale import FamilyRewardScale
from agents.rl2.training import CONFIG_DIR, make_env

SCALES = {"quadratic": 0.5, "logistic": 4.0, "sinusoid": 2.0}  # sklearn left at 1


def _mixture(seed: int = 3) -> VecMonitor:
    env = metaopt_envs.make_sb3_vec_env(
        "MetaOpt-LR-v0", num_envs=16, seed=seed, episodes_per_trial=2, task_family="mixture", horizon=10
    )
    return VecMonitor(env)


def test_each_row_is_scaled_by_its_family_and_the_monitor_logs_unscaled_rewards():
    plain, scaled = _mixture(), FamilyRewardScale(_mixture(), SCALES)
    names = scaled.families
    assert names == ("quadratic", "logistic", "sinusoid", "sklearn")
    plain.reset(), scaled.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (40, 16, 1)).astype(np.float32)
    seen_families: set[int] = set()
    for step_actions in actions:  # two whole trials: rows end, reset and draw new tasks in between
        family = scaled.core.family.family_index(scaled.core.tasks).numpy().copy()  # reset rows write in place
        seen_families |= set(family.tolist())
        _, reward, done, infos = plain.step(step_actions)
        _, scaled_reward, scaled_done, scaled_infos = scaled.step(step_actions)
        expected = reward * np.array([SCALES.get(names[f], 1.0) for f in family], dtype=np.float32)
        np.testing.assert_array_equal(scaled_reward, expected)
        np.testing.assert_array_equal(done, scaled_done)
        for info, scaled_info in zip(infos, scaled_infos):
            if "episode" in info:  # VecMonitor inside the wrapper: the env's own returns
                assert info["episode"]["r"] == scaled_info["episode"]["r"]
    assert len(seen_families) >= 3  # the check covered several families


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["env=lr_mixture", "budget=smoke", *overrides])


def test_training_config_wraps_the_env_only_when_scales_are_given():
    assert not isinstance(make_env(_cfg()), FamilyRewardScale)
    env = make_env(_cfg("agent.reward_scale={logistic:4.0}"))
    assert isinstance(env, FamilyRewardScale)
    assert env.scales.tolist() == [1.0, 4.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("agent.reward_scale={logistc:4.0}", "names the family 'logistc', which the env does not have"),
        ("agent.reward_scale={logistic:0}", "agent.reward_scale.logistic must be a positive finite number, got 0"),
        ("agent.reward_scale={logistic:true}", "agent.reward_scale.logistic must be a positive finite number"),
    ],
)
def test_bad_scales_are_refused_before_training(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        check_config(_cfg(override))
    assert "quadratic, logistic, sinusoid, sklearn" in str(error.value) or "positive" in str(error.value)


@pytest.mark.parametrize("gamma", [0.9, 0.99, 1.0])
def test_final_loss_shaping_discounts_to_each_inner_episodes_final_objective(gamma):
    """Over every inner episode (the two of each trial, early ends by divergence included) the discounted
    sum of the shaped rewards is gamma^T times the episode's objective log(L0/LT), the sum of the env's
    rewards; rows restart their sums at every inner episode."""
    from agents.rl2.reward_scale import FinalLossReward

    plain, shaped = _mixture(), FinalLossReward(_mixture(), gamma)
    plain.reset(), shaped.reset()
    actions = np.random.default_rng(1).uniform(-1, 1.2, (60, 16, 1)).astype(np.float32)  # some diverge
    objective, discounted, length = np.zeros(16), np.zeros(16), np.zeros(16, dtype=int)
    checked, ended_early = 0, 0
    for step_actions in actions:
        _, reward, _, _ = plain.step(step_actions)
        _, shaped_reward, _, _ = shaped.step(step_actions)
        discounted += gamma**length * shaped_reward
        objective += reward
        length += 1
        restarted = shaped.core.state.inner_step.numpy() == 0
        for row in np.flatnonzero(restarted):
            np.testing.assert_allclose(discounted[row], gamma ** length[row] * objective[row], rtol=1e-4, atol=1e-4)
            checked += 1
            ended_early += int(length[row] < 10)
        objective[restarted], discounted[restarted], length[restarted] = 0.0, 0.0, 0
    assert checked >= 64 and ended_early > 0, (checked, ended_early)
    if gamma == 1.0:
        np.testing.assert_array_equal(shaped_reward, reward)


def test_unknown_reward_shaping_is_refused():
    from agents.rl2.training import check_config as check_training_config

    with pytest.raises(ValueError, match=r"agent\.reward_shaping must be null or one of final_loss, got 'final'"):
        check_training_config(_cfg("agent.reward_shaping=final"))
