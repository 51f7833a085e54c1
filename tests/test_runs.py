"""Self-describing runs: the spec a model was trained on travels with it, and metaopt-bench uses it.

A smoke-budget run records its env, agent, seed, commit, versions and trained budget in the zip and
in ``spec.json``; ``metaopt-bench --agents <run dir>`` with no model flags reproduces the trainer's
own evaluation of the model exactly; explicit overrides are printed, and one that changes the
observation shape is refused.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from agents.cli import bench
from agents.rl2 import runs
from agents.rl2.training import CONFIG_DIR, train

EVAL = ["eval_num_tasks=8", "eval_seeds=[0,1]", "tune_tasks=4", "env.num_envs=8"]


def _train(out_dir: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["budget=smoke", f"out_dir={out_dir}", *EVAL, *overrides])
    return dict(train(cfg))


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("lr_run")
    return out_dir, _train(out_dir)


def _bench(tmp_path: Path, *argv: str) -> dict:
    """``metaopt-bench`` on the trainer's tasks; the report as written to ``results.json``."""
    bench.main(
        ["--families", "quadratic", "--num-tasks", "8", "--seeds", "0,1", "--tune-tasks", "4"]
        + ["--out-dir", str(tmp_path / "bench"), *argv]
    )
    return json.loads((tmp_path / "bench" / "results.json").read_text())


def test_the_run_records_its_spec_in_the_zip_and_beside_it(lr_run: tuple[Path, dict]) -> None:
    out_dir, result = lr_run
    beside = json.loads((out_dir / "spec.json").read_text())
    with zipfile.ZipFile(out_dir / "model.zip") as archive:
        inside = json.loads(archive.read(runs.SPEC_ENTRY))
    assert inside == beside
    assert beside["env"] == {
        "id": "MetaOpt-LR-v0",
        "kwargs": {"task_family": "quadratic", "inner_optimizer": "sgd", "horizon": 50, "action_mode": "relative"},
        "num_envs": 8,
        "episodes_per_trial": 2,
    }
    assert beside["agent"]["algo"] == "fast_recurrent_ppo" and beside["agent"]["policy"] == "MlpLstmPolicy"
    assert beside["agent"]["hyperparameters"]["n_steps"] == 100  # resolved: 2 episodes x 50 decisions
    assert beside["seed"] == 0 and len(beside["commit"]) in (40, len("unknown"))
    assert set(beside["versions"]) >= {"torch", "stable-baselines3", "sb3-contrib", "gymnasium", "metaopt-envs"}
    assert beside["budget"] == {"total_timesteps": 800, "num_timesteps": result["num_timesteps"]}
    assert beside["observation_space"]["shape"] == [11]


def test_bench_on_the_run_dir_reproduces_the_trainers_evaluation(
    lr_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir, _ = lr_run
    trained = json.loads((out_dir / "results.json").read_text())["summaries"]["RL² (fast_recurrent_ppo)"]
    for agent in (str(out_dir), str(out_dir / "model.zip")):  # no model flags: the run's spec
        row = _bench(tmp_path, "--agents", f"baselines,{agent}")["families"]["quadratic"]["summaries"][agent]
        assert {**row, "name": trained["name"]} == trained
    assert "overriding" not in capsys.readouterr().out  # the recorded value, so nothing is overridden


def test_a_copied_model_zip_still_carries_its_spec(lr_run: tuple[Path, dict], tmp_path: Path) -> None:
    out_dir, _ = lr_run
    copy = tmp_path / "elsewhere.zip"
    copy.write_bytes((out_dir / "model.zip").read_bytes())
    agent = runs.load_trained(copy)
    assert agent.episodes_per_trial == 2 and agent.env_kwargs["action_mode"] == "relative"
    assert "task_family" not in agent.env_kwargs  # the evaluation chooses the tasks


def test_explicit_overrides_are_printed_and_shape_changes_refused(
    lr_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir, _ = lr_run
    agent = runs.load_trained(out_dir)
    overridden = agent.with_overrides({"action_mode": "absolute"}, None, "run")
    assert overridden.action_mode == "absolute" and overridden.episodes_per_trial == 2
    assert "run: overriding its training spec {'action_mode': 'relative'} with {'action_mode': 'absolute'}" in (
        capsys.readouterr().out
    )
    assert agent.with_overrides({"action_mode": "relative"}, 2) is agent  # the recorded values: no override
    with pytest.raises(ValueError, match="observe_validation"):
        agent.with_overrides({"observe_validation": True})  # one more observation: 12, not 11
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # the CLI checks it before any tuning: one line, exit 2
        _bench(tmp_path, "--agents", str(out_dir), "--model-env-kwargs", '{"observe_validation": true}')
    assert exit_info.value.code == 2 and "observe_validation" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--env-id MetaOpt-LR-v0"):
        _bench(tmp_path, "--env-id", "MetaOpt-HPO-v0", "--families", "branin", "--agents", str(out_dir))


def test_an_hpo_run_loads_without_max_dim_flags(tmp_path: Path) -> None:
    out_dir = tmp_path / "hpo"
    _train(out_dir, "env=hpo", "evaluate=false", "env.kwargs.budget=8")
    assert json.loads((out_dir / "spec.json").read_text())["env"]["kwargs"]["max_dim"] == 6
    report = bench.main(
        ["--env-id", "MetaOpt-HPO-v0", "--families", "branin", "--agents", f"baseline:random,{out_dir}"]
        + ["--num-tasks", "4", "--seeds", "0", "--tune-tasks", "2", "--out-dir", str(tmp_path / "bench")]
    )
    assert str(out_dir) in report["families"]["branin"]["summaries"]


def test_runs_share_the_problem_settings_they_agree_on(lr_run: tuple[Path, dict]) -> None:
    spec = runs.read_spec(lr_run[0])
    assert spec is not None
    problem = {"inner_optimizer": "sgd", "horizon": 50}
    assert runs.shared_setting([spec, spec], "MetaOpt-LR-v0", ["quadratic"]) == (problem, 2)
    assert runs.setting_disagreements([spec, spec], "MetaOpt-LR-v0") == []
    other = {**spec, "env": {**spec["env"], "kwargs": {**spec["env"]["kwargs"], "horizon": 20}}}
    assert runs.shared_setting([spec, other], "MetaOpt-LR-v0") == ({"inner_optimizer": "sgd"}, 2)
    assert runs.setting_disagreements([spec, other], "MetaOpt-LR-v0") == ["horizon"]
    # a kwarg only one run sets is not shared either (the other ran with the env's default); the horizon still is
    penalty = {
        **spec,
        "env": {
            **spec["env"],
            "episodes_per_trial": 3,
            "kwargs": {**spec["env"]["kwargs"], "divergence_penalty": 50.0},
        },
    }
    assert runs.shared_setting([spec, penalty], "MetaOpt-LR-v0") == (problem, None)
    assert runs.setting_disagreements([spec, penalty], "MetaOpt-LR-v0") == ["divergence_penalty", "episodes_per_trial"]
    with_family = {**spec, "env": {**spec["env"], "kwargs": {**spec["env"]["kwargs"], "task_family_kwargs": {"a": 1}}}}
    assert runs.shared_setting([with_family], "MetaOpt-LR-v0", ["quadratic"])[0] == {
        **problem,
        "task_family_kwargs": {"a": 1},
    }
    assert runs.shared_setting([with_family], "MetaOpt-LR-v0", ["quadratic", "logistic"])[0] == problem
