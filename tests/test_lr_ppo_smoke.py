"""Smoke test: the SB3 VecEnv trains with PPO, and the RL² trial form with RecurrentPPO.

Promise (make_sb3_vec_env docstring): the VecEnv is a Stable-Baselines3 VecEnv
that SB3's learners (and VecMonitor) run on without adaptation. A few hundred
steps, checking that rollouts were collected, episodes were logged and the
policy's weights were updated.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor

from metaopt_envs import make_sb3_vec_env
from metaopt_envs.lr.core import LR_FEATURES


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.policy.parameters()])


def test_ppo_mlp_trains_on_sb3_vec_env():
    horizon = 8
    vec = VecMonitor(make_sb3_vec_env("MetaOpt-LR-v0", num_envs=16, seed=0, task_family="quadratic", horizon=horizon))
    model = PPO(
        "MlpPolicy",
        vec,
        n_steps=16,
        batch_size=64,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [32, 32]},
    )
    before = _weights(model)
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    assert not torch.equal(before, _weights(model)), "PPO did not update the policy"
    episodes = list(model.ep_info_buffer)
    assert len(episodes) >= 16
    assert all(np.isfinite(ep["r"]) for ep in episodes)
    assert all(1 <= ep["l"] <= horizon for ep in episodes)
    obs = vec.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (16, 1)
    assert np.all(np.abs(actions) <= 1.0)


def test_recurrent_ppo_trains_on_trial_form():
    from sb3_contrib import RecurrentPPO

    horizon, episodes_per_trial = 4, 2
    vec = VecMonitor(
        make_sb3_vec_env(
            "MetaOpt-LR-v0",
            num_envs=4,
            seed=0,
            episodes_per_trial=episodes_per_trial,
            task_family="quadratic",
            horizon=horizon,
            lr_range=(1e-4, 0.1),  # no inner run can diverge
        )
    )
    assert vec.observation_space.shape == (len(LR_FEATURES) + 3,)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        vec,
        n_steps=32,
        batch_size=64,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"lstm_hidden_size": 16, "net_arch": [16]},
    )
    before = _weights(model)
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    assert not torch.equal(before, _weights(model)), "RecurrentPPO did not update the policy"
    episodes = list(model.ep_info_buffer)
    assert len(episodes) >= 4
    assert {ep["l"] for ep in episodes} == {horizon * episodes_per_trial}  # done only at trial ends
    assert all(np.isfinite(ep["r"]) for ep in episodes)
    obs = vec.reset()
    actions, state = model.predict(obs, episode_start=np.ones(4, bool), deterministic=True)
    assert actions.shape == (4, 1)
    actions, _ = model.predict(obs, state=state, episode_start=np.zeros(4, bool), deterministic=True)
    assert actions.shape == (4, 1)
