"""metaopt-train: Hydra configs compose, training runs, checkpoints are written, a killed
run resumes from its last checkpoint, and the trained model is evaluated by the harness."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from agents.rl2.training import CONFIG_DIR, build_model, config_dict, latest_checkpoint, make_env, train

SMALL = [
    "budget=smoke",
    "env.num_envs=8",
    "env.kwargs.horizon=10",
    "agent.hyperparameters.n_steps=20",
    "agent.hyperparameters.batch_size=80",
    "agent.hyperparameters.n_epochs=1",
]


def _config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*SMALL, f"out_dir={tmp_path}", *overrides], return_hydra_config=False)


def test_train_checkpoints_and_resume(tmp_path):
    cfg = _config(tmp_path, "evaluate=false", "budget.total_timesteps=320", "budget.checkpoint_every=160")
    first = train(cfg)
    assert first["resumed_from"] is None and first["num_timesteps"] == 320
    assert (tmp_path / "model.zip").exists() and (tmp_path / "config.yaml").exists()
    assert latest_checkpoint(tmp_path / "checkpoints").name == "model_320_steps.zip"
    assert any((tmp_path / "tb").rglob("events.out.tfevents*"))

    # As if the run had been killed after its first checkpoint: resume from there.
    for late in (tmp_path / "checkpoints").glob("*_steps.zip"):
        if late.name != "model_160_steps.zip":
            late.unlink()
    cfg = _config(tmp_path, "evaluate=false", "budget.total_timesteps=480", "budget.checkpoint_every=160")
    resumed = train(cfg)
    assert resumed["resumed_from"].endswith("model_160_steps.zip")
    assert resumed["num_timesteps"] == 480


def test_config_to_model_takes_one_whole_trial_per_rollout(tmp_path):
    """``n_steps: null`` is one RL² trial per env and rollout: episodes_per_trial x decisions per episode."""
    cfg = _config(tmp_path, "agent.hyperparameters.n_steps=null", "agent.hyperparameters.batch_size=40")
    env = make_env(cfg)
    assert env.num_envs == 8
    model = build_model(cfg, env, tmp_path)
    assert type(model).__name__ == "FastRecurrentPPO" and model.n_steps == 2 * 10
    assert config_dict(cfg.env.kwargs) == {
        "task_family": "quadratic",
        "inner_optimizer": "sgd",
        "horizon": 10,
        "action_mode": "relative",
    }
    with pytest.raises(TypeError, match="expected a mapping"):
        config_dict(cfg.eval_seeds)
    with pytest.raises(ValueError, match=r"agent\.algo must be one of"):
        train(_config(tmp_path, "agent.algo=a2c"))


@pytest.mark.parametrize("agent", ["rl2", "ppo"])
def test_train_then_evaluate_against_baselines(tmp_path, agent):
    cfg = _config(
        tmp_path, f"agent={agent}", "budget.total_timesteps=160", "eval_num_tasks=4", "eval_seeds=[0]", "tune_tasks=4"
    )
    result = train(cfg)
    names = list(result["evaluation"]["summaries"])
    assert names[0] == ("PPO (no memory)" if agent == "ppo" else "RL² (fast_recurrent_ppo)")
    assert any(n.startswith("constant") for n in names)
    assert (tmp_path / "results.md").read_text().count("|") > 20
    assert (tmp_path / "curves.png").exists()


def test_wandb_offline_logs_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _config(tmp_path, "evaluate=false", "budget.total_timesteps=160", "wandb.mode=offline")
    train(cfg)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_rl2_learns_to_beat_the_tuned_constant_on_held_out_quadratics(tmp_path):
    """The learning test: the best rate depends on each task's curvature and noise, which the
    agent can only infer from what it observes (loss changes, gradient statistics). A broken
    learner, env or fast LSTM path stays below the tuned constant and fails here (~1 minute)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"out_dir={tmp_path}", "budget=demo", "eval_seeds=[0]"])
    summaries = train(cfg)["evaluation"]["summaries"]
    rl2 = summaries["RL² (fast_recurrent_ppo)"]
    constant = next(s for name, s in summaries.items() if name.startswith("constant"))
    assert rl2["return_mean"] > constant["return_mean"] + 0.2, (rl2["return_mean"], constant["return_mean"])
    # Not "no divergence at all": trained agents differ across CPU models (BLAS rounding), and on an AMD
    # EPYC this run diverges on 1 of the 64 tasks (none on the Intel Xeon the README's table comes from).
    # An agent that learned to blow the rate up (as a quadratic-only agent once did) diverges on many.
    assert rl2["win_rate"] > 0.5 and rl2["diverged_percent"] < 5.0, (rl2["win_rate"], rl2["diverged_percent"])


def test_hydra_multirun_sweeps_seeds_locally(tmp_path):
    """A sweep of seeds through Hydra's multirun with the local launcher: one run directory each."""
    import subprocess
    import sys

    overrides = [o for o in SMALL if not o.startswith("budget")] + [
        "budget.total_timesteps=160",
        "budget.checkpoint_every=160",
        "evaluate=false",
    ]
    command = [sys.executable, "-m", "agents.cli.train", "--multirun", "seed=0,1", *overrides]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    for seed in (0, 1):
        run = tmp_path / "runs" / f"lr_quadratic-rl2-seed{seed}"
        assert (run / "model.zip").exists(), sorted(p.name for p in (tmp_path / "runs").iterdir())
        assert f"seed: {seed}" in (run / "config.yaml").read_text()

    # Each job's out_dir is its seed's: a sweep with another learning rate would resume these runs
    # with overrides they were not trained with, so it is refused (before training anything).
    command = [*command, "agent.hyperparameters.learning_rate=0.05"]
    refused = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "holds a run of another configuration" in refused.stderr
    assert "agent.hyperparameters.learning_rate: 0.0003 -> 0.05" in refused.stderr
