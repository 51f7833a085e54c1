"""Batch equivalence: row ``i`` of a batch reset with ``seed=s`` is the run of a single env reset with ``seed=s+i``.

Promise (MetaOptLREnv docstring, lr_core module docstring): randomness is keyed
per row, so the batched core computes for every row exactly what a one-row core
computes, whatever the other rows do. Checked over whole episodes with the same
actions, for the native VectorEnv and the SB3 VecEnv, including episodes that
end by divergence and the next episode after an autoreset (the single env's
``reset()`` without a seed).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from metaopt_envs import make_sb3_vec_env

HORIZON = 12
# Same random numbers; batched matmuls may round differently from one-row ones, and the log
# features (grad_noise) amplify that a little.
TOL = {"rtol": 1e-4, "atol": 1e-4}


def _actions(num_steps: int, num_envs: int, seed: int) -> np.ndarray:
    """Random actions in [-1, 1]: with the default lr_range some quadratic runs diverge (lr up to 10)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(num_steps, num_envs, 1)).astype(np.float32)


def _single_env_reference(kwargs: dict, seed: int, num_envs: int, actions: np.ndarray):
    """Same-step autoreset emulated with ``num_envs`` single envs: row ``i`` is an env reset with ``seed + i``.

    Returns first obs (B, D) and per step: obs, reward, terminated, truncated, final obs (None where not done).
    """
    # The core's own horizon truncates; the registry's TimeLimit is set out of the way (Gymnasium's
    # TimeLimit would also flag ``truncated`` on a divergence at the last step, the core does not).
    envs = [gym.make("MetaOpt-LR-v0", max_episode_steps=10 * HORIZON, **kwargs) for _ in range(num_envs)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    first = obs.copy()
    steps = []
    for t in range(actions.shape[0]):
        out_obs, rewards, terms, truncs, finals = [], [], [], [], []
        for i, env in enumerate(envs):
            o, r, te, tr, _ = env.step(actions[t, i])
            final = None
            if te or tr:
                final = o
                o, _ = env.reset()  # next task from the row's own stream, no seed
            out_obs.append(o)
            rewards.append(r)
            terms.append(te)
            truncs.append(tr)
            finals.append(final)
        steps.append((np.stack(out_obs), np.array(rewards), np.array(terms), np.array(truncs), finals))
    return first, steps


CASES = [
    pytest.param({"task_family": "quadratic", "inner_optimizer": "sgd"}, id="quadratic-sgd"),
    pytest.param({"task_family": "quadratic", "inner_optimizer": "adam", "action_mode": "relative"}, id="quadratic-adam-rel"),
    pytest.param({"task_family": "logistic", "inner_optimizer": "momentum"}, id="logistic-momentum"),
    pytest.param({"task_family": "sinusoid", "inner_optimizer": "adam"}, id="sinusoid-adam"),
    pytest.param({"task_family": "sklearn", "inner_optimizer": "sgd", "observe_validation": True}, id="sklearn-sgd-val"),
    pytest.param({"task_family": "mixture", "inner_optimizer": "sgd"}, id="mixture-sgd"),
    pytest.param({"task_family": "mixture", "inner_optimizer": "momentum", "action_every": 2}, id="mixture-momentum-every2"),
]


def _num_steps(kwargs: dict) -> int:
    # Two whole episodes and part of a third (decisions, not inner steps).
    return 2 * HORIZON // kwargs.get("action_every", 1) + 3


@pytest.mark.parametrize("kwargs", CASES)
def test_vector_rows_equal_single_envs(kwargs):
    num_envs, seed = 4, 100
    kwargs = dict(kwargs, horizon=HORIZON)
    steps = _num_steps(kwargs)
    actions = _actions(steps, num_envs, seed=7)
    first, reference = _single_env_reference(kwargs, seed, num_envs, actions)

    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=num_envs, **kwargs)
    obs, _ = vec.reset(seed=seed)
    np.testing.assert_allclose(obs, first, **TOL)
    ended = 0
    for t in range(steps):
        obs, reward, terminated, truncated, infos = vec.step(actions[t])
        ref_obs, ref_reward, ref_term, ref_trunc, ref_final = reference[t]
        np.testing.assert_array_equal(terminated, ref_term, err_msg=f"step {t}")
        np.testing.assert_array_equal(truncated, ref_trunc, err_msg=f"step {t}")
        np.testing.assert_allclose(reward, ref_reward, **TOL, err_msg=f"step {t}")
        np.testing.assert_allclose(obs, ref_obs, **TOL, err_msg=f"step {t}")
        for i in range(num_envs):
            if ref_final[i] is not None:
                ended += 1
                np.testing.assert_allclose(infos["final_obs"][i], ref_final[i], **TOL, err_msg=f"step {t} row {i}")
    assert ended >= 2 * num_envs  # the comparison really crossed autoreset boundaries


@pytest.mark.parametrize("kwargs", [CASES[0], CASES[2], CASES[5]])
def test_sb3_vec_env_rows_equal_single_envs(kwargs):
    num_envs, seed = 3, 2024
    kwargs = dict(kwargs, horizon=HORIZON)
    steps = _num_steps(kwargs)
    actions = _actions(steps, num_envs, seed=3)
    first, reference = _single_env_reference(kwargs, seed, num_envs, actions)

    vec = make_sb3_vec_env("MetaOpt-LR-v0", num_envs=num_envs, seed=seed, **kwargs)
    obs = vec.reset()
    np.testing.assert_allclose(obs, first, **TOL)
    ended = 0
    for t in range(steps):
        obs, reward, done, infos = vec.step(actions[t])
        ref_obs, ref_reward, ref_term, ref_trunc, ref_final = reference[t]
        np.testing.assert_array_equal(done, ref_term | ref_trunc, err_msg=f"step {t}")
        np.testing.assert_allclose(reward, ref_reward, **TOL, err_msg=f"step {t}")
        np.testing.assert_allclose(obs, ref_obs, **TOL, err_msg=f"step {t}")
        for i in range(num_envs):
            if ref_final[i] is not None:
                ended += 1
                np.testing.assert_allclose(infos[i]["terminal_observation"], ref_final[i], **TOL)
                assert infos[i]["TimeLimit.truncated"] == bool(ref_trunc[i] and not ref_term[i])
            else:
                assert "terminal_observation" not in infos[i]
    assert ended >= 2 * num_envs


def test_vector_reset_seed_list_matches_single_envs():
    seeds = [9, 3, 1000]
    kwargs = {"task_family": "mixture", "horizon": HORIZON}
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=3, **kwargs)
    obs, _ = vec.reset(seed=seeds)
    actions = 0.25 * _actions(HORIZON, 3, seed=1) - 0.75  # small rates: one whole episode, no divergence
    trajectories = [vec.step(actions[t])[:2] for t in range(HORIZON)]
    for i, s in enumerate(seeds):
        env = gym.make("MetaOpt-LR-v0", max_episode_steps=10 * HORIZON, **kwargs)
        o, _ = env.reset(seed=s)
        np.testing.assert_allclose(obs[i], o, **TOL)
        for t in range(HORIZON):
            o, r, terminated, truncated, _ = env.step(actions[t, i])
            assert not terminated and truncated == (t == HORIZON - 1)
            if truncated:
                o, _ = env.reset()  # the vector env autoresets the row in the same step
            np.testing.assert_allclose(trajectories[t][0][i], o, **TOL)
            np.testing.assert_allclose(trajectories[t][1][i], r, **TOL)


def test_row_does_not_depend_on_batch_size_or_neighbours():
    """Row 0 of a batch of 1 and of a batch of 6 (other rows doing other things) is the same run."""
    kwargs = {"task_family": "mixture", "horizon": HORIZON}
    small = gym.make_vec("MetaOpt-LR-v0", num_envs=1, **kwargs)
    big = gym.make_vec("MetaOpt-LR-v0", num_envs=6, **kwargs)
    o_small, _ = small.reset(seed=42)
    o_big, _ = big.reset(seed=42)
    np.testing.assert_allclose(o_small[0], o_big[0], **TOL)
    actions = _actions(HORIZON, 6, seed=5)
    for t in range(HORIZON):
        o_small, r_small, *_ = small.step(actions[t, :1])
        o_big, r_big, *_ = big.step(actions[t])
        np.testing.assert_allclose(o_small[0], o_big[0], **TOL)
        np.testing.assert_allclose(r_small[0], r_big[0], **TOL)
