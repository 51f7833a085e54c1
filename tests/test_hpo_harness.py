"""The HPO benchmark harness, and metaopt-train / metaopt-bench on MetaOpt-HPO-v0.

Promises: every agent runs on the same objectives; the regret curve is the running best; GP-EI
beats random search on held-out Branin tasks within its budget; a user agent given as
``module:Class`` is evaluated; training on the HPO env evaluates against the search baselines.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

import metaopt_envs
from agents.cli.bench import main as bench_main
from agents.controllers.hpo import GPEI, RandomSearch
from agents.evaluation.hpo import evaluate_hpo, load_hpo_agent, markdown_table, run_hpo_agent
from agents.rl2.training import CONFIG_DIR, train


def test_curves_are_running_best_and_same_objectives_for_every_agent():
    core = metaopt_envs.make_core("MetaOpt-HPO-v0", num_envs=6, task_family="mixture", budget=8, split="test")
    first = run_hpo_agent(RandomSearch(seed=1), core, seed=4)
    assert np.all(np.diff(first.curves, axis=1) <= 1e-12)  # a best-so-far curve never rises
    again = run_hpo_agent(RandomSearch(seed=1), core, seed=4)
    np.testing.assert_array_equal(first.curves, again.curves)  # same seed -> same objectives and search


def test_gp_ei_beats_random_search_on_held_out_branin():
    agents = {"random": RandomSearch(), "gp_ei": GPEI()}
    summaries, _ = evaluate_hpo(agents, {"task_family": "branin", "budget": 20}, num_tasks=12, seeds=(0,))
    assert summaries["gp_ei"].median < summaries["random"].median - 1.0  # 10x lower regret at least
    assert summaries["gp_ei"].win_rate > 0.8
    assert "gp_ei" in markdown_table(summaries)


class _Center:
    """A user agent: always proposes the centre of the search space."""

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.zeros((len(observation), (observation.shape[1] - 5) // 2), dtype=np.float32), state


def test_user_agent_module_class(monkeypatch):
    module = types.ModuleType("my_hpo_agents")
    module.Center = _Center
    monkeypatch.setitem(sys.modules, "my_hpo_agents", module)
    agent = load_hpo_agent("my_hpo_agents:Center")
    summaries, records = evaluate_hpo(
        {"center": agent}, {"task_family": "hartmann3", "budget": 4}, num_tasks=5, seeds=(0,)
    )
    curves = records["center"][0].curves
    np.testing.assert_allclose(curves, curves[:, :1].repeat(4, axis=1))  # the same point every time
    assert summaries["center"].num_runs == 5


def test_train_and_bench_on_the_hpo_env(tmp_path: Path):
    overrides = [
        "env=hpo",
        "budget=smoke",
        "env.num_envs=4",
        "env.kwargs.budget=8",
        "agent.hyperparameters.batch_size=64",
        "agent.hyperparameters.n_epochs=1",
        "eval_num_tasks=4",
        "eval_seeds=[0]",
        f"out_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    result = train(cfg)
    summaries = result["evaluation"]["summaries"]
    assert sum(name.startswith("RL²") for name in summaries) == 2  # mean and sampled actions
    assert {"random", "sobol", "gp_ei", "tpe"} <= set(summaries)
    report = bench_main(
        [
            "--env-id",
            "MetaOpt-HPO-v0",
            "--families",
            "branin,sklearn",
            "--num-tasks",
            "3",
            "--seeds",
            "0",
            "--agents",
            f"baseline:random,baseline:sobol,{tmp_path}/model.zip",
            "--episodes-per-trial",
            "2",
            "--env-kwargs",
            '{"budget": 8}',
            "--model-env-kwargs",
            '{"max_dim": 6}',
            "--out-dir",
            str(tmp_path / "bench"),
            "--sample-models",
        ]
    )
    assert (tmp_path / "bench" / "hpo_regret_sklearn.png").exists()
    assert len(report["families"]["branin"]["summaries"]) == 4  # random, sobol, the model, the model sampled
