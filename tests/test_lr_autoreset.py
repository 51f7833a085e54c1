"""Same-step autoreset of the VectorEnv and the SB3 VecEnv.

Promise (CoreVectorEnv / CoreSB3VecEnv docstrings, MetaOptLREnv "Starting
State"): when a row ends, the step returns the first observation of its next
episode, on a freshly drawn task (never a replay of the first state), and
hands the last observation of the ended episode over in
``infos["final_obs"]`` (masked by ``infos["_final_obs"]``) or SB3's
``infos[i]["terminal_observation"]``; SB3's ``TimeLimit.truncated`` is True
on a horizon truncation and False on a divergence termination; the info of
the ended step describes the ended episode.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecMonitor

from metaopt_envs import make_sb3_vec_env

HORIZON = 8
NUM_ENVS = 4
SEED = 31
PROGRESS = 6  # index of the "progress" feature
# lr_range up to 1e3: action +1 makes every quadratic diverge within a step or two.
KWARGS = {"task_family": "quadratic", "horizon": HORIZON, "lr_range": (1e-4, 1e3)}
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _actions(num_steps: int) -> np.ndarray:
    """Row 0 diverges at once (lr 1e3); the others run whole episodes with moderate rates."""
    actions = np.tile(np.float32(-0.55), (num_steps, NUM_ENVS, 1))
    actions[:, 0] = 1.0
    actions[:, 2] = -0.7
    return actions


class _Reference:
    """Row ``i`` as a single env reset with ``SEED + i``; an ended episode continues with ``reset()``."""

    def __init__(self):
        self.envs = [gym.make("MetaOpt-LR-v0", **KWARGS) for _ in range(NUM_ENVS)]
        self.obs = np.stack([env.reset(seed=SEED + i)[0] for i, env in enumerate(self.envs)])

    def step(self, actions):
        out = []
        for i, env in enumerate(self.envs):
            obs, reward, terminated, truncated, info = env.step(actions[i])
            first = None
            if terminated or truncated:
                first, _ = env.reset()
            out.append((obs, reward, terminated, truncated, info, first))
        return out


def _clone_tasks(core):
    return {name: value.clone() for name, value in core.tasks.items()}


def _row_task_changed(before, after, i):
    return any(not torch.equal(before[name][i], after[name][i]) for name in before)


def test_vector_final_obs_and_new_episode():
    steps = 2 * HORIZON + 2
    actions = _actions(steps)
    reference = _Reference()
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=NUM_ENVS, **KWARGS)
    obs, _ = vec.reset(seed=SEED)
    np.testing.assert_allclose(obs, reference.obs, **TOL)
    first_obs_of_episode = obs.copy()
    terminations = truncations = 0
    for t in range(steps):
        tasks_before = _clone_tasks(vec.core)
        obs, _reward, terminated, truncated, infos = vec.step(actions[t])
        ref = reference.step(actions[t])
        done = terminated | truncated
        np.testing.assert_array_equal(terminated, [r[2] for r in ref], err_msg=f"step {t}")
        np.testing.assert_array_equal(truncated, [r[3] for r in ref], err_msg=f"step {t}")
        assert not (terminated & truncated).any()
        if not done.any():
            assert "final_obs" not in infos and "_final_obs" not in infos
            np.testing.assert_allclose(obs, np.stack([r[0] for r in ref]), **TOL)
            continue
        np.testing.assert_array_equal(infos["_final_obs"], done)
        for i in range(NUM_ENVS):
            if not done[i]:
                assert infos["final_obs"][i] is None
                np.testing.assert_allclose(obs[i], ref[i][0], **TOL)
                assert not _row_task_changed(tasks_before, vec.core.tasks, i)
                continue
            terminations += bool(terminated[i])
            truncations += bool(truncated[i])
            # The ended episode's last observation, exactly what the un-reset env shows.
            np.testing.assert_allclose(infos["final_obs"][i], ref[i][0], **TOL, err_msg=f"step {t} row {i}")
            assert vec.single_observation_space.contains(infos["final_obs"][i])
            if truncated[i]:
                assert infos["final_obs"][i][PROGRESS] == pytest.approx(1.0)
            # The returned observation starts the next episode ...
            assert obs[i][PROGRESS] == 0.0
            np.testing.assert_allclose(obs[i], ref[i][5], **TOL, err_msg=f"step {t} row {i}")
            # ... on a new task, not a replay of the previous episode's first state.
            assert _row_task_changed(tasks_before, vec.core.tasks, i), f"row {i} kept its task"
            assert not np.array_equal(obs[i], first_obs_of_episode[i])
            first_obs_of_episode[i] = obs[i]
    assert terminations >= 2 and truncations >= 2 * (NUM_ENVS - 1)


def test_vector_final_info_describes_the_ended_episode():
    """``infos`` of the ending step (and ``final_info``) are the ended episode's, not the new episode's.

    Fails while LRCore.step returns its state tensors themselves in ``info`` (inner_step,
    initial_loss, diverged, the mixture's family index): the same-step reset then overwrites
    them in place before the adapter reads them.
    """
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=NUM_ENVS, **KWARGS)
    vec.reset(seed=SEED)
    initial_loss = vec.core.initial_loss.clone()
    actions = _actions(HORIZON)
    actions[:, 0] = -0.55  # everyone runs a whole episode here
    for t in range(HORIZON - 1):
        _, _, _, _, infos = vec.step(actions[t])
        np.testing.assert_array_equal(infos["inner_step"], np.full(NUM_ENVS, t + 1))
    _, _, terminated, truncated, infos = vec.step(actions[-1])
    assert truncated.all() and not terminated.any()
    # The new episodes have other initial losses, so the check below can tell them apart.
    assert not np.isclose(vec.core.initial_loss.numpy(), initial_loss.numpy()).any()
    assert "final_info" in infos
    for source in (infos, infos["final_info"]):
        np.testing.assert_array_equal(source["inner_step"], np.full(NUM_ENVS, HORIZON))
        np.testing.assert_allclose(source["initial_loss"], initial_loss.numpy(), rtol=1e-6)


def test_returned_arrays_are_not_changed_by_later_steps():
    """What a step returned stays as it was: later steps must not write into it.

    On the CPU ``tensor.cpu().numpy()`` shares memory with the tensor, so an info entry that
    is a core state tensor (inner_step, initial_loss, diverged) changes under the caller's
    feet at the next step. Same root cause as the final-info tests above.
    """
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=NUM_ENVS, **KWARGS)
    vec.reset(seed=SEED)
    obs, reward, terminated, truncated, infos = vec.step(np.full((NUM_ENVS, 1), -0.55, np.float32))
    held = {"obs": obs, "reward": reward, "terminated": terminated, "truncated": truncated}
    held.update({name: value for name, value in infos.items() if isinstance(value, np.ndarray)})
    snapshot = {name: value.copy() for name, value in held.items()}
    for _ in range(HORIZON):
        vec.step(np.full((NUM_ENVS, 1), -0.55, np.float32))
    for name in held:
        np.testing.assert_array_equal(held[name], snapshot[name], err_msg=name)


def test_vector_final_info_reports_divergence():
    """Same aliasing, seen on ``diverged``: the info of a diverging step must say it diverged."""
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=NUM_ENVS, **KWARGS)
    vec.reset(seed=SEED)
    for t in range(HORIZON):
        _, _reward, terminated, _, infos = vec.step(_actions(HORIZON)[t])
        if terminated.any():
            break
    assert terminated[0]
    np.testing.assert_array_equal(infos["diverged"], terminated)
    np.testing.assert_array_equal(infos["final_info"]["diverged"][terminated], True)


def test_vector_mixture_final_info_family_is_the_ended_tasks():
    kwargs = {"task_family": "mixture", "horizon": 3}
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=16, **kwargs)
    vec.reset(seed=0)
    family_before = vec.core.family.family_index(vec.core.tasks).clone()
    for _ in range(2):
        _, _, _, _, infos = vec.step(np.full((16, 1), -0.7, np.float32))
        np.testing.assert_array_equal(infos["family"], family_before.numpy())
    _, _, _, truncated, infos = vec.step(np.full((16, 1), -0.7, np.float32))
    assert truncated.all()
    family_after = vec.core.family.family_index(vec.core.tasks)
    assert not torch.equal(family_before, family_after)  # some rows switched family (seed 0, 16 rows)
    np.testing.assert_array_equal(infos["final_info"]["family"], family_before.numpy())


def test_vector_reset_mask_resets_only_masked_rows():
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=NUM_ENVS, **KWARGS)
    vec.reset(seed=SEED)
    for _ in range(3):
        obs, *_ = vec.step(np.full((NUM_ENVS, 1), -0.55, np.float32))
    mask = np.array([True, False, True, False])
    obs2, _ = vec.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs2[mask][:, PROGRESS], 0.0)
    np.testing.assert_allclose(obs2[~mask], obs[~mask])


def test_vector_time_limit_shorter_than_horizon():
    with pytest.warns(UserWarning, match="max_episode_steps"):
        vec = gym.make_vec("MetaOpt-LR-v0", num_envs=2, task_family="quadratic", horizon=20, max_episode_steps=5)
    vec.reset(seed=0)
    for t in range(5):
        obs, _, terminated, truncated, infos = vec.step(np.full((2, 1), -0.55, np.float32))
        assert truncated.all() == (t == 4)
    assert not terminated.any()
    np.testing.assert_allclose([f[PROGRESS] for f in infos["final_obs"]], 5 / 20)
    np.testing.assert_array_equal(obs[:, PROGRESS], 0.0)
    # The next episode gets a full time limit again.
    for t in range(5):
        _, _, _, truncated, _ = vec.step(np.full((2, 1), -0.55, np.float32))
        assert truncated.all() == (t == 4)


def test_vector_no_warning_when_time_limit_covers_horizon():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym.make_vec("MetaOpt-LR-v0", num_envs=2, task_family="quadratic", horizon=20)


def test_sb3_terminal_observation_and_time_limit_flag():
    steps = 2 * HORIZON + 2
    actions = _actions(steps)
    reference = _Reference()
    vec = make_sb3_vec_env("MetaOpt-LR-v0", num_envs=NUM_ENVS, seed=SEED, **KWARGS)
    obs = vec.reset()
    np.testing.assert_allclose(obs, reference.obs, **TOL)
    seen_truncation = seen_termination = 0
    for t in range(steps):
        tasks_before = _clone_tasks(vec.core)
        obs, reward, done, infos = vec.step(actions[t])
        ref = reference.step(actions[t])
        np.testing.assert_array_equal(done, [r[2] or r[3] for r in ref], err_msg=f"step {t}")
        np.testing.assert_allclose(reward, [r[1] for r in ref], **TOL)
        for i in range(NUM_ENVS):
            if not done[i]:
                assert "terminal_observation" not in infos[i]
                np.testing.assert_allclose(obs[i], ref[i][0], **TOL)
                continue
            np.testing.assert_allclose(infos[i]["terminal_observation"], ref[i][0], **TOL)
            if ref[i][2]:  # terminated: divergence, SB3 must not bootstrap
                assert infos[i]["TimeLimit.truncated"] is False
                assert reward[i] == pytest.approx(-10.0)
                seen_termination += 1
            else:  # truncated at the horizon: SB3 bootstraps
                assert infos[i]["TimeLimit.truncated"] is True
                assert infos[i]["terminal_observation"][PROGRESS] == pytest.approx(1.0)
                seen_truncation += 1
            assert obs[i][PROGRESS] == 0.0
            np.testing.assert_allclose(obs[i], ref[i][5], **TOL)
            assert _row_task_changed(tasks_before, vec.core.tasks, i)
    assert seen_termination >= 2 and seen_truncation >= 2 * (NUM_ENVS - 1)


def test_sb3_info_of_ended_row_describes_the_ended_episode():
    """SB3 infos of an ended row: inner_step is the horizon, diverged is set on a divergence.

    Fails for the same aliasing as ``test_vector_final_info_describes_the_ended_episode``.
    """
    vec = make_sb3_vec_env("MetaOpt-LR-v0", num_envs=NUM_ENVS, seed=SEED, **KWARGS)
    vec.reset()
    initial_loss = vec.core.initial_loss.clone()
    diverged_seen = False
    for t in range(HORIZON):
        _, _, done, infos = vec.step(_actions(HORIZON)[t])
        if done[0] and not diverged_seen:
            diverged_seen = True
            assert infos[0]["TimeLimit.truncated"] is False
            assert infos[0]["diverged"] is True
    assert diverged_seen
    for i in range(1, NUM_ENVS):
        assert done[i] and infos[i]["TimeLimit.truncated"] is True
        assert infos[i]["inner_step"] == HORIZON
        assert infos[i]["initial_loss"] == pytest.approx(float(initial_loss[i]), rel=1e-6)


def test_vec_monitor_reports_episode_returns():
    vec = VecMonitor(make_sb3_vec_env("MetaOpt-LR-v0", num_envs=NUM_ENVS, seed=SEED, **KWARGS))
    vec.reset()
    running = np.zeros(NUM_ENVS, np.float64)
    lengths = np.zeros(NUM_ENVS, int)
    episodes = []
    for t in range(2 * HORIZON):
        _, reward, done, infos = vec.step(_actions(2 * HORIZON)[t])
        running += reward
        lengths += 1
        for i in np.flatnonzero(done):
            assert "episode" in infos[i]
            assert infos[i]["episode"]["r"] == pytest.approx(running[i], rel=1e-5, abs=1e-5)
            assert infos[i]["episode"]["l"] == lengths[i]
            episodes.append((i, lengths[i]))
            running[i], lengths[i] = 0.0, 0
        for i in np.flatnonzero(~done):
            assert "episode" not in infos[i]
    assert len(episodes) >= 2 * NUM_ENVS
    assert {length for row, length in episodes if row != 0} == {HORIZON}
    assert all(length < HORIZON for row, length in episodes if row == 0)  # the diverging row
