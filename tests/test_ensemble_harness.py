"""The Ensemble benchmark harness, the regime experts, and metaopt-train / metaopt-bench on MetaOpt-Ensemble-v0.

Promises: the expert forecasters are each regime's true AR(2) predictor; every agent is scored on the
same streams (whatever its action mode); on expert pools the regime oracle beats Fixed-Share, which
beats uniform weights; a user agent given as ``module:Class`` is evaluated; the baselines restart at
every inner episode of an RL² trial; training on the Ensemble env evaluates against the baselines.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import metaopt_envs
from agents.cli.bench import main as bench_main
from agents.controllers.ensemble import FixedShare, RegimeOracle, Uniform
from agents.evaluation.ensemble import evaluate_ensemble, load_ensemble_agent, markdown_table, run_ensemble_agent
from agents.rl2.training import CONFIG_DIR, train
from metaopt_envs.ensemble.core import EnsembleCore

EXPERTS = {
    "task_family": "switching_ar",
    "task_family_kwargs": {"num_regimes": (4, 4)},
    "forecasters": ("expert0", "expert1", "expert2", "expert3"),
    "horizon": 150,
    "warmup": 30,
}


def test_experts_are_the_regimes_true_ar2_predictors():
    core = EnsembleCore(num_envs=3, **EXPERTS)
    stream = core.family.sample_stream(
        core.task_key, metaopt_envs.core.rng.fold(core.task_key, 1, core.inner_episode), core.length, "train"
    )
    torch.testing.assert_close(stream["values"], core.values)
    y, params = core.values.double(), stream["regime_params"].double()
    for r in range(4):
        expected = params[:, r, 0:1] * y[:, 1:-1] + params[:, r, 1:2] * y[:, :-2]
        torch.testing.assert_close(core.forecasts[:, r, 2:].double(), expected, rtol=1e-5, atol=1e-5)
    # The expert of the active regime leaves only the noise (std 1).
    active = core.forecasts.gather(1, core.regime.unsqueeze(1)).squeeze(1)
    residual = (core.values - active)[:, 60:]
    assert 0.8 < float(residual.std()) < 1.2


def test_experts_need_switching_ar():
    with pytest.raises(ValueError, match="switching_ar"):
        EnsembleCore(num_envs=1, task_family="regimes", forecasters=("expert0", "last"))
    with pytest.raises(ValueError, match="expert"):
        EnsembleCore(num_envs=1, task_family="switching_ar", forecasters=("expertX", "last"))


def test_oracle_beats_fixed_share_beats_uniform_on_experts():
    agents = {"uniform": Uniform(), "fixed_share": FixedShare(eta=1.0, alpha=0.03), "oracle": RegimeOracle()}
    summaries, _ = evaluate_ensemble(
        agents, EXPERTS, num_tasks=32, seeds=(0,), reference="fixed_share", oracle="oracle"
    )
    iqm = {name: s.mse_iqm for name, s in summaries.items()}
    assert iqm["oracle"] < iqm["fixed_share"] < iqm["uniform"]
    assert summaries["oracle"].gap_closed == pytest.approx(1.0)
    assert summaries["fixed_share"].win_rate == pytest.approx(0.5)
    assert "fixed_share" in markdown_table(summaries, "fixed_share", "oracle")


class _FirstForecaster:
    """A user agent in logits mode: all weight on forecaster 0."""

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        actions = -np.ones((len(observation), 4), dtype=np.float32)
        actions[:, 0] = 1.0
        return actions, state


def test_user_agent_module_class_and_same_streams_in_any_action_mode(monkeypatch):
    module = types.ModuleType("my_ensemble_agents")
    module.FirstForecaster = _FirstForecaster
    monkeypatch.setitem(sys.modules, "my_ensemble_agents", module)
    agent = load_ensemble_agent("my_ensemble_agents:FirstForecaster")
    core = metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=8, **EXPERTS)
    record = run_ensemble_agent(agent, core, seed=3)
    # The same streams in simplex mode with the one-hot weight (softmax(4 * a) is near one-hot).
    simplex = metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=8, action_mode="simplex", **EXPERTS)

    class OneHot(Uniform):
        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            return np.eye(4, dtype=np.float32)[np.zeros(len(observation), dtype=int)], state

    reference = run_ensemble_agent(OneHot(), simplex, seed=3)
    np.testing.assert_allclose(record.mse, reference.mse, rtol=0.05)


def test_baselines_restart_every_inner_episode_of_a_trial():
    """In a 2-episode trial the baseline's second-episode run equals a fresh run on that stream."""
    kwargs = dict(EXPERTS, action_mode="simplex")
    trial_core = metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=4, episodes_per_trial=2, **kwargs)
    scored = run_ensemble_agent(FixedShare(eta=1.0, alpha=0.03), trial_core, seed=5)
    # Replay the second stream of each trial in a plain core and run Fixed-Share fresh on it.
    plain = EnsembleCore(num_envs=4, **kwargs)
    plain.reset_rows(torch.ones(4, dtype=torch.bool), keys=metaopt_envs.core.seeds_to_keys(5, 4, plain.device))
    plain.reset_rows(torch.ones(4, dtype=torch.bool), same_task=True)
    agent, obs, start = FixedShare(eta=1.0, alpha=0.03), plain.observe().numpy(), np.ones(4, dtype=bool)
    total = np.zeros(4)
    for _ in range(plain.horizon):
        actions, _ = agent.predict(obs, episode_start=start)
        result = plain.step(actions)
        total += result.info["loss"].numpy()
        obs, start = result.observation.numpy(), np.zeros(4, dtype=bool)
    np.testing.assert_allclose(scored.mse, total / plain.horizon, rtol=1e-5)


def test_train_and_bench_on_the_ensemble_env(tmp_path: Path):
    overrides = [
        "env=ensemble_experts",
        "budget=smoke",
        "env.num_envs=4",
        "env.kwargs.horizon=20",
        "env.kwargs.warmup=20",
        "agent.hyperparameters.batch_size=80",
        "agent.hyperparameters.n_epochs=1",
        "tune_tasks=4",
        "eval_num_tasks=4",
        "eval_seeds=[0]",
        f"out_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    result = train(cfg)
    assert result["num_timesteps"] >= 800  # n_steps is one whole trial: 2 x 20 decisions per env
    summaries = result["evaluation"]["summaries"]
    assert any(name.startswith("RL²") for name in summaries) and any(
        name.startswith("fixed_share") for name in summaries
    )

    report = bench_main(
        [
            "--env-id",
            "MetaOpt-Ensemble-v0",
            "--families",
            "switching_ar",
            "--num-tasks",
            "4",
            "--seeds",
            "0",
            "--tune-tasks",
            "4",
            "--agents",
            f"baseline:uniform,baseline:fixed_share,baseline:regime_oracle,{tmp_path}/model.zip",
            "--episodes-per-trial",
            "2",
            "--env-kwargs",
            json.dumps({k: v for k, v in EXPERTS.items() if k != "horizon"}),
            "--out-dir",
            str(tmp_path / "bench"),
        ]
    )
    assert (tmp_path / "bench" / "results.md").exists() and (
        tmp_path / "bench" / "ensemble_curves_switching_ar.png"
    ).exists()
    assert len(report["families"]["switching_ar"]["summaries"]) == 4
