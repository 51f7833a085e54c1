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
