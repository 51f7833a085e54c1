"""benchmarks/rl2_family_probe.py: the observations of a mixture task tell its family (the bound the
probe reports), and the agent probe runs a trained model's whole trial and writes JSON and markdown."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from test_resume import _config

from agents.rl2.training import train

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("rl2_family_probe", ROOT / "benchmarks" / "rl2_family_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_first_observations_tell_logistic_from_sinusoid_tasks():
    rows = _module().observation_bound(128, ["logistic", "sinusoid"], (1,), 10_000)
    assert [(r["action"], r["decisions"]) for r in rows] == [(0.0, 1), (0.5, 1)]
    assert all(r["accuracy"] > 0.75 and r["tasks"] > 40 for r in rows), rows  # chance is about 0.5


def test_the_probe_writes_its_tables(tmp_path):
    run = tmp_path / "run"
    train(_config(run, "env=lr_mixture", "env.kwargs.horizon=10", "budget.total_timesteps=160"))
    out = tmp_path / "probe"
    _module().main([str(run), "--num-tasks", "64", "--out", str(out)])
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["families"] == ["logistic", "sinusoid"] and len(payload["observation_bound"]) == 8
    decisions = [r["decision"] for r in payload["agent_probe"]]
    assert decisions == [1, 3, 6, 11]  # a trial of 2 x 10 decisions: the probed ones inside it
    assert set(payload["agent_probe"][0]["mean_action"]) == {"logistic", "sinusoid"}
    assert "| decision of the trial |" in out.with_suffix(".md").read_text()
