"""Batch equivalence: row ``i`` of a batch reset with ``seed=s`` is the run of a single env reset with ``seed=s+i``.

Promise (MetaOptLREnv docstring, lr_core module docstring): randomness is keyed
per row and every per-row computation takes the same kernel path whatever the
batch size, so the batched core computes for every row *the same bits* as a
one-row core, whatever the other rows do: for every built-in family (quadratic,
logistic, sinusoid, sklearn and their mixture), every inner optimizer, at any
batch size, with any ``chunk_size``, and while other rows reset (alone or in
sub-batches of any size, by divergence, truncation or by hand). Checked over
100 decisions (several episodes) with ``torch.equal``; for the native
VectorEnv and the SB3 VecEnv, including episodes that end by divergence and
the next episode after an autoreset (the single env's ``reset()`` without a
seed), with exact equality of the numpy outputs.

The two kernels that used to break this (a bmm whose operand is a strided view
of one problem's params, or a matrix-vector bmm: a batch of one takes another
path and rounds differently) are written so that they do not: see
``LogisticRegressionFamily._logits`` and ``mlp._affine``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from metaopt_envs import make_sb3_vec_env
from metaopt_envs.core import seeds_to_keys
from metaopt_envs.lr.core import LRCore

HORIZON = 12


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
    pytest.param(
        {"task_family": "quadratic", "inner_optimizer": "adam", "action_mode": "relative"}, id="quadratic-adam-rel"
    ),
    pytest.param({"task_family": "logistic", "inner_optimizer": "momentum"}, id="logistic-momentum"),
    pytest.param({"task_family": "sinusoid", "inner_optimizer": "adam"}, id="sinusoid-adam"),
    pytest.param(
        {"task_family": "sklearn", "inner_optimizer": "sgd", "observe_validation": True}, id="sklearn-sgd-val"
    ),
    pytest.param({"task_family": "mixture", "inner_optimizer": "sgd"}, id="mixture-sgd"),
    pytest.param(
        {"task_family": "mixture", "inner_optimizer": "momentum", "action_every": 2}, id="mixture-momentum-every2"
    ),
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
    np.testing.assert_array_equal(obs, first)
    ended = 0
    for t in range(steps):
        obs, reward, terminated, truncated, infos = vec.step(actions[t])
        ref_obs, ref_reward, ref_term, ref_trunc, ref_final = reference[t]
        np.testing.assert_array_equal(terminated, ref_term, err_msg=f"step {t}")
        np.testing.assert_array_equal(truncated, ref_trunc, err_msg=f"step {t}")
        np.testing.assert_array_equal(reward, ref_reward, err_msg=f"step {t}")
        np.testing.assert_array_equal(obs, ref_obs, err_msg=f"step {t}")
        for i in range(num_envs):
            if ref_final[i] is not None:
                ended += 1
                np.testing.assert_array_equal(infos["final_obs"][i], ref_final[i], err_msg=f"step {t} row {i}")
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
    np.testing.assert_array_equal(obs, first)
    ended = 0
    for t in range(steps):
        obs, reward, done, infos = vec.step(actions[t])
        ref_obs, ref_reward, ref_term, ref_trunc, ref_final = reference[t]
        np.testing.assert_array_equal(done, ref_term | ref_trunc, err_msg=f"step {t}")
        np.testing.assert_array_equal(reward, ref_reward, err_msg=f"step {t}")
        np.testing.assert_array_equal(obs, ref_obs, err_msg=f"step {t}")
        for i in range(num_envs):
            if ref_final[i] is not None:
                ended += 1
                np.testing.assert_array_equal(infos[i]["terminal_observation"], ref_final[i])
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
        np.testing.assert_array_equal(obs[i], o)
        for t in range(HORIZON):
            o, r, terminated, truncated, _ = env.step(actions[t, i])
            assert not terminated and truncated == (t == HORIZON - 1)
            if truncated:
                o, _ = env.reset()  # the vector env autoresets the row in the same step
            np.testing.assert_array_equal(trajectories[t][0][i], o)
            np.testing.assert_array_equal(trajectories[t][1][i], r)


def test_row_does_not_depend_on_batch_size_or_neighbours():
    """Row 0 of a batch of 1 and of a batch of 6 (other rows doing other things) is the same run."""
    kwargs = {"task_family": "mixture", "horizon": HORIZON}
    small = gym.make_vec("MetaOpt-LR-v0", num_envs=1, **kwargs)
    big = gym.make_vec("MetaOpt-LR-v0", num_envs=6, **kwargs)
    o_small, _ = small.reset(seed=42)
    o_big, _ = big.reset(seed=42)
    np.testing.assert_array_equal(o_small[0], o_big[0])
    actions = _actions(HORIZON, 6, seed=5)
    for t in range(HORIZON):
        o_small, r_small, *_ = small.step(actions[t, :1])
        o_big, r_big, *_ = big.step(actions[t])
        np.testing.assert_array_equal(o_small[0], o_big[0])
        np.testing.assert_array_equal(r_small[0], r_big[0])


# ---------------------------------------------------------------------- the core, bit for bit
NUM_DECISIONS = 100
CORE_HORIZON = 20  # five episodes in 100 decisions
CHECKED_ROWS = 3
CORE_CASES = [
    pytest.param("quadratic", "sgd", {}, id="quadratic-sgd"),
    pytest.param("quadratic", "adam", {"action_mode": "relative"}, id="quadratic-adam-relative"),
    pytest.param("logistic", "sgd", {"observe_validation": True}, id="logistic-sgd-val"),
    pytest.param("logistic", "adam", {}, id="logistic-adam"),
    pytest.param("sinusoid", "sgd", {"observe_validation": True}, id="sinusoid-sgd-val"),
    pytest.param("sinusoid", "adam", {"action_every": 2}, id="sinusoid-adam-every2"),
    pytest.param("sklearn", "momentum", {"observe_validation": True}, id="sklearn-momentum-val"),
    pytest.param("mixture", "sgd", {}, id="mixture-sgd"),
    pytest.param("mixture", "adam", {}, id="mixture-adam"),
]


def _core_actions(num_envs: int, steps: int) -> torch.Tensor:
    """Rates spread over the whole range for the other rows (some diverge and reset early, at
    their own times), over the stable part of it for the checked rows (their episodes run out)."""
    gen = np.random.default_rng(11)
    actions = gen.uniform(-1.0, 1.0, (steps, num_envs, 1))
    actions[:, :CHECKED_ROWS] = gen.uniform(-1.0, 0.4, (steps, CHECKED_ROWS, 1))
    return torch.as_tensor(actions, dtype=torch.float32)


def _core_rollout(
    num_envs: int, seed: int, actions: torch.Tensor, core_kwargs: dict, meddle: bool, device: torch.device
) -> list:
    """Per decision: (obs, reward, terminated, truncated, loss, obs after the autoreset) of the first
    ``min(num_envs, CHECKED_ROWS)`` rows. ``meddle``: also reset other rows by hand, in sub-batches
    of changing sizes, some on the same task."""
    core = LRCore(num_envs=num_envs, horizon=CORE_HORIZON, device=device, **core_kwargs)
    actions = actions.to(device)
    core.reset_rows(torch.ones(num_envs, dtype=torch.bool), keys=seeds_to_keys(seed, num_envs, core.device))
    rows = slice(0, min(num_envs, CHECKED_ROWS))
    record = [core.observe()[rows].clone()]
    for t in range(actions.shape[0]):
        result = core.step(actions[t, :num_envs])
        done = result.terminated | result.truncated
        if done.any():
            core.reset_rows(done)
        if meddle and num_envs > CHECKED_ROWS and t % 7 == 3:
            others = torch.zeros(num_envs, dtype=torch.bool, device=device)
            others[CHECKED_ROWS + t % 5 :: 1 + t % 4] = True
            core.reset_rows(others, same_task=t % 2 == 1)
        record.append(
            (
                result.observation[rows],
                result.reward[rows],
                result.terminated[rows],
                result.truncated[rows],
                result.info["loss"][rows],
                core.observe()[rows],
            )
        )
    return record


@pytest.mark.parametrize(("family", "optimizer", "extra"), CORE_CASES)
def test_core_rows_are_bit_identical_to_single_rows(family, optimizer, extra, device):
    """Row i of batches of 2, 9 and 33 (33 in blocks of ``chunk_size=8``, so a last block of one) equals a
    one-row core seeded alike, bit for bit, over 100 decisions while the other rows diverge, end and are reset."""
    seed, kwargs = 500, {"task_family": family, "inner_optimizer": optimizer, **extra}
    steps = NUM_DECISIONS
    actions = _core_actions(33, steps)
    single = [
        _core_rollout(1, seed + i, actions[:, i : i + 1], kwargs, meddle=False, device=device)
        for i in range(CHECKED_ROWS)
    ]
    ended = sum(int(step[2].any() or step[3].any()) for step in single[0][1:])
    assert ended >= 3, "the reference row should run through several episodes"
    for num_envs, chunk_size in ((2, 1024), (9, 1024), (33, 8)):
        batch = _core_rollout(num_envs, seed, actions, dict(kwargs, chunk_size=chunk_size), meddle=True, device=device)
        for i in range(min(num_envs, CHECKED_ROWS)):
            assert torch.equal(batch[0][i], single[i][0][0]), f"B={num_envs} row {i}: first observation"
            for t in range(1, steps + 1):
                for name, got, want in zip(
                    ("obs", "reward", "terminated", "truncated", "loss", "obs after reset"), batch[t], single[i][t]
                ):
                    assert torch.equal(got[i], want[0]), (
                        f"B={num_envs} row {i} decision {t}: {name} differs by "
                        f"{(got[i].double() - want[0].double()).abs().max()}"
                    )


@pytest.mark.parametrize("family", ["sinusoid", "sklearn"])
def test_mlp_rows_in_blocks_equal_single_rows(family, device):
    """Above ``block_rows`` (256) problems the MLP families run their passes in blocks on the CPU; rows on
    either side of a block boundary still equal one-row cores seeded alike, bit for bit."""
    num_envs, rows = 300, (0, 255, 256, 299)
    batch = LRCore(num_envs=num_envs, task_family=family, horizon=CORE_HORIZON, inner_optimizer="adam", device=device)
    actions = _core_actions(num_envs, 6).to(device)
    singles = {}
    for row in rows:
        single = LRCore(num_envs=1, task_family=family, horizon=CORE_HORIZON, inner_optimizer="adam", device=device)
        single.reset_rows(torch.ones(1, dtype=torch.bool, device=device), keys=seeds_to_keys(row, 1, device))
        singles[row] = single
    for t in range(actions.shape[0]):
        result = batch.step(actions[t])
        for row, single in singles.items():
            expected = single.step(actions[t, row : row + 1])
            assert torch.equal(result.observation[row], expected.observation[0]), (row, t)
            assert torch.equal(result.reward[row], expected.reward[0]), (row, t)
