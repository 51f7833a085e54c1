"""The command-line contract of ``metaopt-bench`` and ``metaopt-train``, and the configs in the wheel.

Every bad input ends the command before any tuning or training with exit code 2 and ONE line on
stderr that names the argument (or config key), the value and what is allowed; no traceback, no
directory written. Most cases call ``main(argv)`` in-process (fast); a few run the module in a
subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agents.cli import bench, train

ROOT = Path(__file__).resolve().parents[1]
# Small values so that a check that wrongly passes fails fast instead of benchmarking.
BENCH_SMALL = ["--num-tasks", "2", "--seeds", "0", "--tune-tasks", "2", "--families", "quadratic"]

BENCH_BAD = [
    (["--agents", "runs/nosuch/model.zip"], "--agents", "no such model file"),
    (["--agents", ":Class"], "--agents", "not one of the forms"),
    (["--agents", "a:b:c"], "--agents", "not one of the forms"),
    (["--agents", "nosuch_module_xyz:Agent"], "--agents", "cannot import module 'nosuch_module_xyz'"),
    (["--agents", "agents.evaluation.specs:NoSuchClass"], "--agents", "has no class 'NoSuchClass'"),
    (["--agents", "baseline:nosuch"], "--agents", "unknown LR baseline 'nosuch'; choose from"),
    (["--agents", "baseline:constant?nosuch=1"], "--agents", "takes no argument 'nosuch'; its arguments are"),
    (["--agents", ","], "--agents", "no agent given"),
    (["--env-kwargs", "{bad"], "--env-kwargs", "must be a JSON object, got '{bad'"),
    (["--env-kwargs", "[1, 2]"], "--env-kwargs", "must be a JSON object, got '[1, 2]'"),
    (["--env-kwargs", '{"horizon": -1}'], "--env-kwargs", "horizon must be an int >= 1"),
    (["--env-kwargs", '{"nosuch": 1}'], "--env-kwargs", "unexpected keyword argument 'nosuch'"),
    (["--env-kwargs", '{"task_family": "logistic"}'], "--env-kwargs", "contradicts --families quadratic"),
    (["--model-env-kwargs", "{bad"], "--model-env-kwargs", "must be a JSON object"),
    (["--model-env-kwargs", '{"action_mode": "nosuch"}'], "--model-env-kwargs", "action_mode"),
    (["--env-id", "MetaOpt-Nope-v0"], "--env-id", "no evaluation suite for env id 'MetaOpt-Nope-v0'; choose from"),
    (["--families", "nosuch"], "--families", "unknown MetaOpt-LR-v0 task family 'nosuch'; choose from"),
    (["--families", ","], "--families", "no family given"),
    (["--seeds", "a,b"], "--seeds", "must be comma-separated ints such as 0,1,2, got 'a,b'"),
    (["--seeds", "0,0"], "--seeds", "must not repeat a seed"),
    (["--threads", "0"], "--threads", "must be an int >= 1, got 0"),
    (["--num-tasks", "0"], "--num-tasks", "must be an int >= 1, got 0"),
    (["--num-tasks", "x"], "--num-tasks", "must be an int >= 1, got 'x'"),
    (["--tune-tasks", "0"], "--tune-tasks", "must be an int >= 1, got 0"),
    (["--episodes-per-trial", "0"], "--episodes-per-trial", "must be an int >= 1, got 0"),
    (["--nosuch"], "--nosuch", "unrecognized arguments"),
]

TRAIN_BAD = [
    (
        ["agent.algo=nosuch"],
        "agent.algo",
        "must be one of ['fast_recurrent_ppo', 'ppo', 'recurrent_ppo'], got 'nosuch'",
    ),
    (["agent=nosuch"], "agent=nosuch", "agent must be one of ['acquisition_ppo', 'ppo', 'rl2']"),
    (["env=nosuch"], "env=nosuch", "env must be one of"),
    (["agent.policy=NoPolicy"], "agent.policy", "must be one of ['CnnLstmPolicy', 'MlpLstmPolicy'"),
    (["seed=abc"], "seed", "must be an int >= 0, got 'abc'"),
    (["seed=-1"], "seed", "must be an int >= 0, got -1"),
    (["batch_size=0"], "batch_size=0", "did you mean agent.hyperparameters.batch_size?"),
    (["agent.batch_size=0"], "agent.batch_size=0", "did you mean agent.hyperparameters.batch_size?"),
    (["agent.hyperparameters.batch_size=0"], "agent.hyperparameters.batch_size", "must be an int >= 1, got 0"),
    (["agent.hyperparameters.learning_rate=-1"], "agent.hyperparameters.learning_rate", "must be a number > 0"),
    (["agent.hyperparameters.gamma=1.5"], "agent.hyperparameters.gamma", "must be a number >= 0 and <= 1, got 1.5"),
    (["agent.hyperparameters.n_epochs=0"], "agent.hyperparameters.n_epochs", "must be an int >= 1, got 0"),
    (["num_envs=0"], "num_envs=0", "did you mean env.num_envs?"),
    (["env.num_envs=0"], "env.num_envs", "must be an int >= 1, got 0"),
    (["env.episodes_per_trial=0"], "env.episodes_per_trial", "must be an int >= 1 or null, got 0"),
    (["budget.total_timesteps=-5"], "budget.total_timesteps", "must be an int >= 1, got -5"),
    (["budget.checkpoint_every=0"], "budget.checkpoint_every", "must be an int >= 1, got 0"),
    (["+agent.n_epochs=8"], "agent.n_epochs", "is not a key of agent (those are algo, hyperparameters"),
    (["+agent.hyperparameters.nosuch=1"], "agent.hyperparameters.nosuch", "takes no argument 'nosuch'"),
    (["+agent.policy_kwargs.nosuch=1"], "agent.policy_kwargs.nosuch", "takes no argument 'nosuch'"),
    (["+nosuch=1"], "nosuch", "is not a top-level key"),
    (["~eval_seeds"], "eval_seeds", "is required"),
    (
        ["env.id=nosuch"],
        "env.id",
        "must be one of ['MetaOpt-Acquisition-v0', 'MetaOpt-Ensemble-v0', 'MetaOpt-HPO-v0', 'MetaOpt-LR-v0']",
    ),
    (["env.kwargs.horizon=-1"], "env.kwargs", "horizon must be an int >= 1"),
    (["+env.kwargs.nosuch=1"], "env.kwargs", "unexpected keyword argument 'nosuch'"),
    (["eval_seeds=[a]"], "eval_seeds", "must be a non-empty list of ints"),
    (["eval_num_tasks=0"], "eval_num_tasks", "must be an int >= 1, got 0"),
    (["wandb.mode=sometimes"], "wandb.mode", "must be one of ['disabled', 'offline', 'online']"),
    (["evaluate=maybe"], "evaluate", "must be true or false, got 'maybe'"),
    (["seed=["], "seed=[", "override"),
    (["--multirun", "seed=0,abc"], "seed", "must be an int >= 0, got 'abc'"),
    (["seed=0", "-m", "seed=1"], "seed=1", "options such as --multirun go before the overrides"),
    (["--multirun", "seed=0,0"], "seed=0", "the sweep runs one configuration twice (jobs #0 and #1"),
    (["--multirun", "out_dir=x", "seed=0,1"], "out_dir=x", "all 2 jobs of the sweep would train in one run directory"),
    (["--multirun", "hydra/launcher=nosuch", "seed=0,1"], "hydra/launcher=nosuch", "hydra/launcher must be one of"),
    (["--nosuch"], "--nosuch", "unrecognized arguments"),
]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv, argument, message", BENCH_BAD, ids=[" ".join(c[0]) for c in BENCH_BAD])
def test_bench_refuses_a_bad_input_in_one_line(argv, argument, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*BENCH_SMALL, "--out-dir", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("metaopt-bench: error: ") and argument in line and message in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, key, message", TRAIN_BAD, ids=[" ".join(c[0]) for c in TRAIN_BAD])
def test_train_refuses_a_bad_input_in_one_line(argv, key, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        base = [] if argv[0].startswith("-") else ["budget=smoke", "evaluate=false"]  # options go first
        train.main([*base, *argv])
    assert exit_info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("metaopt-train: error: ") and key in line and message in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written: no run directory, no .hydra


@pytest.mark.parametrize("env", ["lr_quadratic", "lr_mixture", "ensemble", "ensemble_experts", "hpo"])
@pytest.mark.parametrize("agent", ["rl2", "ppo"])
def test_train_accepts_every_shipped_config(env, agent):
    train.precheck([f"env={env}", f"agent={agent}"])
    train.precheck([f"env={env}", f"agent={agent}", "budget=reference", "agent.hyperparameters.n_steps=10"])


def test_train_accepts_a_sweep_and_hydra_flags(tmp_path, capsys, monkeypatch):
    train.precheck(["seed=0,1", "agent=rl2,ppo"], multirun=True)
    monkeypatch.chdir(tmp_path)
    train.main(["--cfg", "job", "budget=smoke"])  # prints the config; no precheck, no run
    assert "total_timesteps: 800" in capsys.readouterr().out


def _run(module: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    return subprocess.run(
        [sys.executable, "-m", module, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "module, argv, expected",
    [
        ("agents.cli.bench", ["--agents", "baselines,runs/x/model.zip"], "metaopt-bench: error: --agents: agent spec"),
        ("agents.cli.bench", ["--seeds", "a,b"], "metaopt-bench: error: argument --seeds: must be"),
        ("agents.cli.train", ["budget.total_timesteps=-5"], "metaopt-train: error: budget.total_timesteps must be"),
        ("agents.cli.train", ["+agent.n_epochs=8"], "metaopt-train: error: agent.n_epochs is not a key of agent"),
        ("agents.cli.train", ["agent.batch_size=0"], "metaopt-train: error: agent.batch_size=0: agent.batch_size"),
    ],
)
def test_cli_errors_in_a_subprocess(module, argv, expected, tmp_path):
    completed = _run(module, *argv, cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert _one_line(completed.stderr).startswith(expected), completed.stderr
    assert list(tmp_path.iterdir()) == []


WHEEL_CHECK = """
import json, sys
site_dir, deps = sys.argv[1], json.loads(sys.argv[2])
sys.path[:0] = [site_dir, *deps]
import agents, agents.rl2.training as training
assert agents.__file__.startswith(site_dir), agents.__file__
assert training.CONFIG_DIR.startswith(site_dir), training.CONFIG_DIR
from hydra import compose, initialize_config_dir
with initialize_config_dir(config_dir=training.CONFIG_DIR, version_base="1.3"):
    cfg = compose("train", overrides=["out_dir=run", "env=hpo", "agent=ppo", "budget=smoke"])
assert cfg.env.id == "MetaOpt-HPO-v0" and cfg.agent.algo == "ppo", cfg
from agents.cli.train import precheck
precheck(["env=lr_mixture"])
print("ok", training.CONFIG_DIR)
"""


def test_the_wheel_ships_the_configs(tmp_path):
    """A wheel built from the sources carries configs/ (as agents/configs), and the installed package
    composes them with no checkout on the path."""
    pytest.importorskip("setuptools")
    pytest.importorskip("pip")
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("agents", "metaopt_envs", "configs"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", "wheel"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")  # a wheel is the site-packages layout
    shipped = {
        str(p.relative_to(ROOT)).replace("configs/", "agents/configs/", 1) for p in ROOT.glob("configs/**/*.yaml")
    }
    assert shipped and shipped <= names, sorted(shipped - names)
    # -I -S: no checkout, no PYTHONPATH, no site-packages (so no editable install); only the wheel and the deps.
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", WHEEL_CHECK, str(tmp_path / "site"), json.dumps(deps)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("ok " + str(tmp_path / "site")), completed.stdout
