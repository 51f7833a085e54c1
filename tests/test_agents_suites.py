"""One evaluation path: a Suite for every registered env id, every family through the one rollout loop.

Promises: every registered ``MetaOpt-*`` id has a suite, found by id; every family's
evaluator runs its agents through :func:`agents.evaluation.rollout.rollout`; an LR agent
evaluated through the suite gets the same returns as a hand-written loop over the core;
hand-designed controllers restart at every inner episode of an RL² trial; every baseline
shares the one :class:`~agents.controllers.base.Controller` base; the statistics equal the
estimators they replaced; nothing imports from the CLIs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import metaopt_envs
from agents.controllers.base import Controller, core_of
from agents.controllers.ensemble import ENSEMBLE_BASELINES
from agents.controllers.hpo import HPO_BASELINES
from agents.controllers.lr import BASELINES, ConstantLR, HypergradientLR
from agents.evaluation import ensemble, hpo, lr
from agents.evaluation.metrics import SEED_STRIDE, TEST_SEED_OFFSET, gap_closed, win_rate
from agents.evaluation.stats import bootstrap_ci, iqm
from agents.evaluation.suites import SUITES, Suite, get_suite

REGISTERED = sorted(env_id for env_id in gym.registry if env_id.startswith("MetaOpt-"))
SMALL = {
    "MetaOpt-LR-v0": {"task_family": "quadratic", "horizon": 6},
    "MetaOpt-Ensemble-v0": {"task_family": "switching_ar", "horizon": 70, "warmup": 60},
    "MetaOpt-HPO-v0": {"task_family": "branin", "budget": 4},
}


def test_every_registered_env_id_has_a_suite():
    assert REGISTERED and set(REGISTERED) == set(SUITES)
    for env_id in REGISTERED:
        suite = get_suite(env_id)
        assert isinstance(suite, Suite) and suite.env_id == env_id
        assert suite.default_families and suite.baselines and suite.description
    with pytest.raises(ValueError, match=r"no evaluation suite.*MetaOpt-LR-v0"):
        get_suite("CartPole-v1")


@pytest.mark.parametrize("env_id", sorted(SMALL))
def test_every_family_runs_through_the_shared_rollout(env_id, monkeypatch):
    from agents.evaluation import rollout as rollout_module

    calls = []

    def counting(agent, core, seed, *args, **kwargs):
        calls.append((type(agent).__name__, seed))
        return rollout_module.rollout(agent, core, seed, *args, **kwargs)

    module = {"MetaOpt-LR-v0": lr, "MetaOpt-Ensemble-v0": ensemble, "MetaOpt-HPO-v0": hpo}[env_id]
    monkeypatch.setattr(module, "rollout", counting)
    suite = get_suite(env_id)
    name = next(iter(suite.default_baselines({})))
    agents = {"a": suite.load_agent(f"baseline:{name}"), "b": suite.load_agent(f"baseline:{name}")}
    result = suite.run(agents, SMALL[env_id], num_tasks=3, seeds=(0, 1))
    assert sorted(seed for _, seed in calls) == [
        TEST_SEED_OFFSET,
        TEST_SEED_OFFSET,
        TEST_SEED_OFFSET + SEED_STRIDE,
        TEST_SEED_OFFSET + SEED_STRIDE,
    ]
    assert set(result.summaries) == {"a", "b"} and "| a |" in result.table


def test_lr_suite_returns_equal_a_manual_loop_over_the_core():
    kwargs = {"task_family": "logistic", "horizon": 12}
    summaries, records = get_suite("MetaOpt-LR-v0").evaluate(
        {"constant": ConstantLR(lr=0.3)}, kwargs, num_tasks=5, seeds=(2,)
    )
    core = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=5, split="test", **kwargs)
    core.reset_rows(
        torch.ones(5, dtype=torch.bool),
        keys=metaopt_envs.core.seeds_to_keys(TEST_SEED_OFFSET + 2 * SEED_STRIDE, 5, "cpu"),
    )
    agent, obs = ConstantLR(lr=0.3), core.observe().numpy()
    total, done = np.zeros(5), np.zeros(5, dtype=bool)
    while not done.all():
        result = core.step(torch.as_tensor(agent.predict(obs)[0]))
        total += np.where(done, 0.0, result.reward.numpy())
        done |= (result.terminated | result.truncated).numpy()
        obs = result.observation.numpy()
    np.testing.assert_allclose(records["constant"][0].returns, total, rtol=1e-6)
    assert summaries["constant"].return_mean == pytest.approx(total.mean(), rel=1e-6)


def test_lr_controllers_restart_every_inner_episode_of_a_trial():
    """Scored on the second episode of a 2-episode trial, a controller sees a fresh start: the
    same returns as in plain episodes on those tasks' second initializations."""
    kwargs = {"task_family": "quadratic", "horizon": 8}
    trial = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=4, episodes_per_trial=2, **kwargs)
    scored = lr.run_agent(HypergradientLR(lr=0.05, beta=0.2), trial, seed=3)
    plain = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=4, **kwargs)
    plain.reset_rows(torch.ones(4, dtype=torch.bool), keys=metaopt_envs.core.seeds_to_keys(3, 4, "cpu"))
    plain.reset_rows(torch.ones(4, dtype=torch.bool), same_task=True)
    agent, obs, total = HypergradientLR(lr=0.05, beta=0.2), plain.observe().numpy(), np.zeros(4)
    for _ in range(8):
        result = plain.step(torch.as_tensor(agent.predict(obs)[0]))
        total += result.reward.numpy()
        obs = result.observation.numpy()
    np.testing.assert_allclose(scored.returns, total, rtol=1e-5)


def test_every_baseline_shares_the_one_controller_base():
    for baselines in (BASELINES, ENSEMBLE_BASELINES, HPO_BASELINES):
        assert all(issubclass(cls, Controller) for cls in baselines.values())
    assert {cls.action_mode for cls in BASELINES.values()} == {"absolute"}
    assert {cls.action_mode for cls in ENSEMBLE_BASELINES.values()} == {"simplex"}


def test_core_of_reaches_the_family_core_through_every_adapter():
    core = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=2)
    trial = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=2, episodes_per_trial=2)
    assert core_of(core) is core and core_of(trial) is trial.core
    for env in (
        gym.make("MetaOpt-LR-v0"),
        gym.make_vec("MetaOpt-LR-v0", num_envs=2),
        metaopt_envs.make_sb3_vec_env("MetaOpt-LR-v0", num_envs=2, episodes_per_trial=2),
    ):
        assert type(core_of(env)).__name__ == type(core).__name__


def _old_iqm(values):
    values = np.sort(np.asarray(values, dtype=np.float64))
    low, high = math.floor(0.25 * len(values)), math.ceil(0.75 * len(values))
    return float(values[low:high].mean()) if high > low else float(values.mean())


def _old_bootstrap_ci(values, statistic, num_resamples=1000, seed=0):
    index = np.random.default_rng(seed).integers(0, len(values), size=(num_resamples, len(values)))
    stats = np.array([statistic(values[row]) for row in index])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


@pytest.mark.parametrize("n", [1, 2, 3, 9, 10, 64])
def test_statistics_equal_the_estimators_they_replaced(n):
    values = np.random.default_rng(n).lognormal(size=n)
    assert iqm(values) == pytest.approx(_old_iqm(values), rel=1e-12)
    for new, old in ((np.mean, np.mean), (iqm, _old_iqm), (np.median, np.median)):
        np.testing.assert_allclose(
            bootstrap_ci(values, new, seed=3), _old_bootstrap_ci(values, old, seed=3), rtol=1e-12
        )
    assert bootstrap_ci(values, np.mean, seed=3) == bootstrap_ci(values, np.mean, seed=3)  # seeded: deterministic


def test_metrics():
    assert win_rate(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 2.0, 2.0])) == pytest.approx(0.375)
    assert gap_closed(np.array([1.5]), np.array([2.0]), np.array([1.0])) == pytest.approx(0.5)
    assert gap_closed(np.array([1.5]), np.array([2.0]), np.array([2.0])) is None


def test_nothing_imports_from_the_clis():
    """The CLIs are thin: the package, the benchmarks and the notebooks import what they run from
    agents.rl2 / agents.evaluation (only the CLIs' own tests import them, to test the command lines)."""
    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^\s*(from|import)\s+agents\.cli\b|^\s*from\s+agents\s+import\s+.*\bcli\b", re.MULTILINE)
    sources = [
        *(root / "agents").rglob("*.py"),
        *(root / "benchmarks").glob("*.py"),
        *(root / "notebooks").glob("*.py"),
    ]
    assert len(sources) > 20 and any(path.parent.name == "notebooks" for path in sources)
    offenders = [
        str(path.relative_to(root))
        for path in sources
        if "cli" not in path.relative_to(root).parts and pattern.search(path.read_text())
    ]
    assert not offenders, f"import these from agents.rl2.training or agents.evaluation instead: {offenders}"


@pytest.mark.parametrize("env_id", ["MetaOpt-LR-v0", "MetaOpt-Ensemble-v0"])
def test_evaluation_seeds_draw_disjoint_tasks(env_id):
    """Each evaluation seed adds new tasks: no task of seed 1 is one of seed 0's (they once overlapped by a row)."""
    suite = get_suite(env_id)
    name = next(iter(suite.default_baselines({})))
    _, records = suite.evaluate({"a": suite.load_agent(f"baseline:{name}")}, SMALL[env_id], num_tasks=6, seeds=(0, 1))
    field = "returns"
    first, second = (np.asarray(getattr(record, field)) for record in records["a"])
    assert len(first) == len(second) == 6
    assert not np.isin(second, first).any()
