"""RL² trial mode: K inner episodes on one task, presented to the learner as one episode.

Promise (vector/trial.py): with ``episodes_per_trial=K`` done is reported only
when the trial ends (K inner episodes); the observation is the core's, then
the previous action, the previous reward (clipped to +-20) and a flag that is
1 on the first step of each inner episode; within a trial the task stays the
same and each inner episode restarts from a fresh initialization; the next
trial draws a new task. Works through ``make_sb3_vec_env`` and ``gym.make_vec``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from metaopt_envs import make_sb3_vec_env
from metaopt_envs.core import RL2TrialCore
from metaopt_envs.lr.core import LR_FEATURES

HORIZON = 6
K = 3
NUM_ENVS = 3
BASE_DIM = len(LR_FEATURES)
PREV_ACTION, PREV_REWARD, NEW_EPISODE = BASE_DIM, BASE_DIM + 1, BASE_DIM + 2
PROGRESS = 6


def _make(num_envs=NUM_ENVS, **kwargs):
    kwargs = {"task_family": "quadratic", "horizon": HORIZON, **kwargs}
    return make_sb3_vec_env("MetaOpt-LR-v0", num_envs=num_envs, seed=0, episodes_per_trial=K, **kwargs)


def test_observation_layout():
    vec = _make()
    assert isinstance(vec.core, RL2TrialCore)
    assert vec.observation_space.shape == (BASE_DIM + 3,)
    assert vec.core.observation_names[BASE_DIM:] == ("previous_action_0", "previous_reward", "new_episode")
    np.testing.assert_array_equal(vec.observation_space.low[BASE_DIM:], [-1.0, -20.0, 0.0])
    np.testing.assert_array_equal(vec.observation_space.high[BASE_DIM:], [1.0, 20.0, 1.0])
    obs = vec.reset()
    np.testing.assert_array_equal(obs[:, PREV_ACTION], 0.0)
    np.testing.assert_array_equal(obs[:, PREV_REWARD], 0.0)
    np.testing.assert_array_equal(obs[:, NEW_EPISODE], 1.0)


def test_done_only_at_trial_end_and_feedback_features():
    vec = _make(lr_range=(1e-4, 0.1))  # every rate is stable on the quadratics (curvature <= 10)
    obs = vec.reset()
    rng = np.random.default_rng(0)
    curvature_trial = vec.core.core.tasks["curvature"].clone()
    init_params = [vec.core.core.params.clone()]
    trial_length = K * HORIZON
    for t in range(2 * trial_length):
        actions = rng.uniform(-1.0, -0.4, size=(NUM_ENVS, 1)).astype(np.float32)
        actions[0, 0] = 3.0  # out of range: the fed-back action is the clipped one
        obs, reward, done, infos = vec.step(actions)
        assert all(vec.observation_space.contains(row) for row in obs)  # SB3 spaces are per env
        step_in_trial = t % trial_length + 1
        trial_ends = step_in_trial == trial_length
        inner_ends = step_in_trial % HORIZON == 0
        np.testing.assert_array_equal(done, np.full(NUM_ENVS, trial_ends), err_msg=f"step {t}")
        if trial_ends:
            # A new trial: new task, zeroed feedback, new-episode flag.
            np.testing.assert_array_equal(obs[:, PREV_ACTION], 0.0)
            np.testing.assert_array_equal(obs[:, PREV_REWARD], 0.0)
            np.testing.assert_array_equal(obs[:, NEW_EPISODE], 1.0)
            np.testing.assert_array_equal(obs[:, PROGRESS], 0.0)
            for i in range(NUM_ENVS):
                final = infos[i]["terminal_observation"]
                assert final[PROGRESS] == pytest.approx(1.0)
                assert final[PREV_ACTION] == pytest.approx(min(actions[i, 0], 1.0))
                assert final[PREV_REWARD] != 0.0  # (the step's own reward: see test_trial_end_reward_is_reported_*)
                assert final[NEW_EPISODE] == 1.0  # the last inner episode just ended
                assert infos[i]["TimeLimit.truncated"] is False  # a trial ends by design
            new_curvature = vec.core.core.tasks["curvature"]
            for i in range(NUM_ENVS):
                assert not torch.equal(new_curvature[i], curvature_trial[i]), "the next trial must draw a new task"
            curvature_trial = new_curvature.clone()
            init_params = [vec.core.core.params.clone()]
            continue
        for i in range(NUM_ENVS):
            assert "terminal_observation" not in infos[i]
        np.testing.assert_allclose(obs[:, PREV_ACTION], np.clip(actions[:, 0], -1.0, 1.0))
        np.testing.assert_allclose(obs[:, PREV_REWARD], np.clip(reward, -20.0, 20.0))
        np.testing.assert_array_equal(obs[:, NEW_EPISODE], 1.0 if inner_ends else 0.0, err_msg=f"step {t}")
        if inner_ends:
            np.testing.assert_array_equal(obs[:, PROGRESS], 0.0)
            # Same task, fresh initialization.
            assert torch.equal(vec.core.core.tasks["curvature"], curvature_trial)
            params = vec.core.core.params.clone()
            for previous in init_params:
                assert not torch.equal(params, previous), "an inner episode must start from a new initialization"
            init_params.append(params)
        else:
            np.testing.assert_allclose(obs[:, PROGRESS], (step_in_trial % HORIZON) / HORIZON, rtol=1e-6)
            assert torch.equal(vec.core.core.tasks["curvature"], curvature_trial)


def test_inner_episode_end_by_divergence_stays_in_trial():
    vec = _make(num_envs=2, lr_range=(1e-4, 1e3))
    vec.reset()
    curvature = vec.core.core.tasks["curvature"].clone()
    actions = np.array([[1.0], [-0.55]], np.float32)  # row 0 diverges at once, inner episode after inner episode
    for t in range(3):
        obs, reward, done, infos = vec.step(actions)
        if t < 2:
            assert not done[0]
            assert reward[0] == pytest.approx(-10.0)
            assert obs[0, NEW_EPISODE] == 1.0
            assert obs[0, PREV_REWARD] == pytest.approx(-10.0)
            assert torch.equal(vec.core.core.tasks["curvature"][0], curvature[0])
    # The K-th diverging inner episode ends the trial (as a termination), with the penalty as reward.
    assert done[0] and not done[1]
    assert infos[0]["TimeLimit.truncated"] is False
    assert infos[0]["terminal_observation"][PREV_REWARD] == pytest.approx(-10.0)
    assert not torch.equal(vec.core.core.tasks["curvature"][0], curvature[0])
    assert torch.equal(vec.core.core.tasks["curvature"][1], curvature[1])
    assert reward[0] == pytest.approx(-10.0), "the last reward of a trial must be reported, not zeroed"


def test_trial_end_reward_is_reported_sb3():
    """The reward of a trial's last step is the real one (it is also fed back in terminal_observation).

    Fails while RL2TrialCore.step returns the tensor it keeps as ``previous_reward``: the
    same-step reset of the ended trial zeroes it in place before the adapter reads it.
    """
    vec = _make(num_envs=2, lr_range=(1e-4, 0.1))
    vec.reset()
    for _t in range(K * HORIZON):
        _, reward, done, infos = vec.step(np.full((2, 1), 0.5, np.float32))
    assert done.all()
    for i in range(2):
        fed_back = infos[i]["terminal_observation"][PREV_REWARD]
        assert fed_back != 0.0
        assert reward[i] == pytest.approx(fed_back, rel=1e-6)


def test_trial_end_reward_is_reported_vector_env():
    vec = gym.make_vec(
        "MetaOpt-LR-v0",
        num_envs=2,
        episodes_per_trial=2,
        task_family="quadratic",
        horizon=HORIZON,
        lr_range=(1e-4, 0.1),
    )
    vec.reset(seed=0)
    for _t in range(2 * HORIZON):
        _, reward, terminated, _, infos = vec.step(np.full((2, 1), 0.5, np.float32))
    assert terminated.all()
    for i in range(2):
        assert reward[i] != 0.0
        assert reward[i] == pytest.approx(infos["final_obs"][i][PREV_REWARD], rel=1e-6)


def test_inner_episode_info_flags():
    vec = _make(num_envs=2)
    vec.reset()
    core = vec.core
    for _t in range(HORIZON):
        result = core.step(torch.full((2, 1), -0.5))
    assert result.info["inner_episode_done"].all()
    assert not result.info["inner_terminated"].any()
    assert not result.terminated.any() and not result.truncated.any()


def test_make_vec_trial_mode():
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=2, episodes_per_trial=2, task_family="logistic", horizon=HORIZON)
    assert vec.single_observation_space.shape == (BASE_DIM + 3,)
    assert vec.observation_space.shape == (2, BASE_DIM + 3)
    obs, _ = vec.reset(seed=3)
    assert vec.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[:, NEW_EPISODE], 1.0)
    inputs = vec.core.core.tasks["inputs"].clone()
    for t in range(2 * HORIZON):
        obs, _reward, terminated, truncated, infos = vec.step(np.full((2, 1), -0.5, np.float32))
        assert vec.observation_space.contains(obs)
        ends = t == 2 * HORIZON - 1
        # The registry's TimeLimit (100 steps) is not applied to trials; the trial ends as a termination.
        np.testing.assert_array_equal(terminated, np.full(2, ends))
        assert not truncated.any()
        if t == HORIZON - 1:
            np.testing.assert_array_equal(obs[:, NEW_EPISODE], 1.0)
            assert torch.equal(vec.core.core.tasks["inputs"], inputs)
    np.testing.assert_array_equal(infos["_final_obs"], True)
    assert not torch.equal(vec.core.core.tasks["inputs"], inputs)


def test_trial_longer_than_registry_time_limit():
    """A trial of 2 x 60 decisions runs past the registered 100-step TimeLimit without being cut."""
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=1, episodes_per_trial=2, task_family="quadratic", horizon=60)
    vec.reset(seed=0)
    for t in range(120):
        _, _, terminated, truncated, _ = vec.step(np.full((1, 1), -0.6, np.float32))
        assert not truncated.any()
        assert terminated[0] == (t == 119), t


def test_rl2_batch_rows_match_single_trials():
    """Row i of a trial batch with seed s equals a one-row trial env with seed s + i."""
    big = make_sb3_vec_env("MetaOpt-LR-v0", num_envs=3, seed=10, episodes_per_trial=2, task_family="mixture", horizon=4)
    singles = [
        make_sb3_vec_env(
            "MetaOpt-LR-v0", num_envs=1, seed=10 + i, episodes_per_trial=2, task_family="mixture", horizon=4
        )
        for i in range(3)
    ]
    obs = big.reset()
    for i, single in enumerate(singles):
        np.testing.assert_allclose(obs[i], single.reset()[0], rtol=1e-4, atol=1e-4)
    actions = np.random.default_rng(1).uniform(-1, 0, size=(10, 3, 1)).astype(np.float32)
    for t in range(10):
        obs, reward, done, _ = big.step(actions[t])
        for i, single in enumerate(singles):
            o, r, d, _ = single.step(actions[t, i : i + 1])
            np.testing.assert_allclose(obs[i], o[0], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(reward[i], r[0], rtol=1e-4, atol=1e-4)
            assert done[i] == d[0]
