"""Sweeps: every job of ``metaopt-train --multirun`` trains in a run directory of its own, on any launcher.

Hydra's basic launcher (jobs one after the other in this process), the submitit launcher in local mode
(each job in a subprocess, as on SLURM) and Hydra's Ray launcher on a local Ray instance bound to
127.0.0.1 run the same smoke-budget sweep. Each job's directory is a normal run (``config.yaml``,
``spec.json``, ``model.zip``) whose model equals, weight for weight, the one the same configuration
trains alone; rerunning a sweep resumes its runs. The submitit and Ray tests need the ``[sweep]``
extra (``bash scripts/run.sh test`` installs it) and are skipped without it.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import shlex
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from agents.cli import bench, train
from agents.rl2 import runs
from agents.rl2.training import CONFIG_DIR
from agents.rl2.training import train as train_directly

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["budget=smoke", "evaluate=false", "env.num_envs=8", "progress_bar=false"]
LR = "agent.hyperparameters.learning_rate"
SWEEP = [f"{LR}=1e-3,3e-3"]
JOB_DIRS = {f"lr_quadratic-rl2-seed0-{LR}=0.001", f"lr_quadratic-rl2-seed0-{LR}=0.003"}
"""The run directories of ``SWEEP`` under ``runs/``: the default name, then the swept key's value."""


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep's second configuration trained alone, through the same training function."""
    out_dir = tmp_path_factory.mktemp("alone") / "run"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*SMOKE, f"{LR}=3e-3", f"out_dir={out_dir}"])
    train_directly(cfg)
    return out_dir


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from ``tmp_path``; job subprocesses import this checkout (not another installed copy)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    return tmp_path


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(run_dir / "model.zip") as archive:
        return torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)


def _spec(run_dir: Path) -> dict:
    spec = json.loads((run_dir / "spec.json").read_text())
    spec.pop("saved_at")
    return spec


def assert_same_run(job_dir: Path, alone: Path) -> None:
    """``job_dir`` is a normal run of the configuration ``alone`` was trained on, with the same model."""
    assert _spec(job_dir) == _spec(alone)
    assert _spec(job_dir)["agent"]["hyperparameters"]["learning_rate"] == 0.003
    mine, theirs = _weights(job_dir), _weights(alone)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in mine), "the sweep trained another model"


def _job_dirs(where: Path) -> set[str]:
    return {p.name for p in (where / "runs").iterdir() if p.name != "multirun"}


# ----------------------------------------------------------------------------- where the jobs train
def test_a_sweep_names_each_job_dir_after_its_swept_values_only() -> None:
    added = train.sweep_overrides(["seed=0,1", f"{LR}=1e-3,3e-3", "budget=smoke", "hydra/launcher=ray"])
    assert added == [
        f"out_dir='{train.default_out_dir()}-${{hydra:job.override_dirname}}'",
        "hydra.job.config.override_dirname.exclude_keys=[budget,out_dir,seed]",
        "hydra.job.config.override_dirname.item_sep=+",
    ]
    assert train.default_out_dir() == "runs/${hydra:runtime.choices.env}-${hydra:runtime.choices.agent}-seed${seed}"
    # Swept keys the default name holds already, or an out_dir of the user's: nothing added.
    assert train.sweep_overrides(["seed=0,1,2", "agent=rl2,ppo", "env=lr_quadratic,hpo", f"{LR}=1e-3"]) == []
    assert train.sweep_overrides([f"{LR}=1e-3,3e-3", "out_dir='sweeps/lr${agent.hyperparameters.learning_rate}'"]) == []


def test_a_seed_sweep_trains_where_single_runs_do(in_tmp: Path) -> None:
    train.main(["--multirun", *SMOKE, "seed=0,1"])
    assert _job_dirs(in_tmp) == {"lr_quadratic-rl2-seed0", "lr_quadratic-rl2-seed1"}


def test_a_sweep_over_a_hyperparameter_gives_each_job_its_own_run(
    in_tmp: Path, alone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train.main(["--multirun", *SMOKE, *SWEEP])
    assert _job_dirs(in_tmp) == JOB_DIRS  # before, the second job was refused the first one's directory
    job_dir = in_tmp / "runs" / f"lr_quadratic-rl2-seed0-{LR}=0.003"
    assert_same_run(job_dir, alone)
    assert runs.read_spec(in_tmp / "runs" / f"lr_quadratic-rl2-seed0-{LR}=0.001")["agent"]["hyperparameters"][
        "learning_rate"
    ] == pytest.approx(1e-3)
    capsys.readouterr()
    train.main(["--multirun", *SMOKE, *SWEEP])  # the same sweep again: each job resumes its finished run
    assert capsys.readouterr().out.count("the run has its whole budget (800 steps): nothing more to train") == 2
    report = bench.main(  # a job's directory is a run metaopt-bench evaluates on its own spec
        ["--families", "quadratic", "--num-tasks", "2", "--seeds", "0", "--tune-tasks", "2"]
        + ["--agents", str(job_dir), "--out-dir", str(in_tmp / "bench")]
    )
    assert str(job_dir) in report["families"]["quadratic"]["summaries"]


# ----------------------------------------------------------------------------- other launchers
def test_the_submitit_local_launcher_runs_the_same_sweep(in_tmp: Path, alone: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the [sweep] extra")
    train.main(["--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *SMOKE, *SWEEP])
    assert _job_dirs(in_tmp) == JOB_DIRS
    assert len(list((in_tmp / "runs" / "multirun" / ".submitit").glob("*/*_result.pkl"))) == 2  # two jobs
    assert_same_run(in_tmp / "runs" / f"lr_quadratic-rl2-seed0-{LR}=0.003", alone)


RAY_LOCAL = [  # a Ray instance of this machine only, without a dashboard
    "hydra.launcher.ray.init.address=local",
    "+hydra.launcher.ray.init._node_ip_address=127.0.0.1",
    "+hydra.launcher.ray.init.include_dashboard=false",
    "+hydra.launcher.ray.init.num_cpus=2",
]
RAY_LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Set to 0, Ray keeps a local instance on the loopback as it does on macOS and Windows; on Linux it
otherwise listens on every interface (and turns ``_node_ip_address=127.0.0.1`` into the machine's address)."""


@pytest.fixture
def local_ray(monkeypatch: pytest.MonkeyPatch):
    """Ray (imported), held to the loopback; shut down after the test."""
    monkeypatch.setenv(RAY_LOOPBACK, "0")  # for Ray's processes, and for ray if imported below
    ray = pytest.importorskip("ray", reason="needs the [sweep] extra")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the [sweep] extra")
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # in case ray was imported before
    yield ray
    ray.shutdown()


def _listening_addresses() -> set[str]:
    """The addresses that this process and its descendants (Ray's processes) listen on."""
    import psutil  # a dependency of ray

    found = set()
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def test_the_ray_launcher_runs_the_same_sweep_on_a_local_ray(in_tmp: Path, alone: Path, local_ray) -> None:
    train.main(["--multirun", "hydra/launcher=ray", *RAY_LOCAL, *SMOKE, *SWEEP])
    assert _job_dirs(in_tmp) == JOB_DIRS
    assert_same_run(in_tmp / "runs" / f"lr_quadratic-rl2-seed0-{LR}=0.003", alone)
    assert local_ray.is_initialized()  # the launcher's instance, still up: where did it listen?
    assert {node["NodeManagerAddress"] for node in local_ray.nodes()} == {"127.0.0.1"}
    listening = _listening_addresses()
    assert len(listening) >= 1 and all(_loopback(address) for address in listening), listening


def test_the_readmes_sweep_commands_pass_the_check() -> None:
    """Every ``metaopt-train --multirun`` command of the README's Sweeps section composes and checks, on
    every launcher it names (the launcher's own keys included)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the [sweep] extra")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the [sweep] extra")
    section = (ROOT / "README.md").read_text().partition("### Sweeps")[2].partition("\n### ")[0]
    script = "\n".join(re.findall(r"```bash\n(.*?)```", section, flags=re.S)).replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in script.splitlines() if "metaopt-train" in line]
    launchers = set()
    for words in commands:
        argv = words[words.index("metaopt-train") + 1 :]
        assert argv[0] == "--multirun", words
        overrides = argv[1:]
        launchers |= {o.partition("=")[2] for o in overrides if o.startswith("hydra/launcher=")} or {"basic"}
        train.precheck([*overrides, *train.sweep_overrides(overrides)], multirun=True)
    assert launchers == {"basic", "submitit_local", "submitit_slurm", "ray"}
