"""The benchmark entry point runs, writes JSON and markdown with the machine's facts, and marks GPU rows
``unmeasured`` where there is no GPU (benchmarks/env_throughput.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("env_throughput", ROOT / "benchmarks" / "env_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tiny_run_writes_the_facts_and_a_table(tmp_path):
    bench = _module()
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{bench.README_START}\nold table\n{bench.README_END}\nafter\n")
    argv = ["--envs", "lr,hpo", "--families", "sinusoid,branin", "--batch-sizes", "2", "--seconds", "0.05"]
    argv += ["--windows", "1", "--sync-envs", "2", "--reset-batch", "4", "--vmap-batch", "4"]
    report = bench.main([*argv, "--out", str(tmp_path / "out"), "--readme", str(readme)])
    saved = json.loads((tmp_path / "out.json").read_text())
    facts = saved["facts"]
    for name in ("commit", "cpu_model", "matmul_peak_gflops", "threads", "loadavg_start", "loadavg_end"):
        assert facts[name] is not None, name
    assert [(row["env"], row["family"]) for row in report["rows"]] == [
        ("MetaOpt-LR-v0", "sinusoid"),
        ("MetaOpt-HPO-v0", "branin"),
    ]
    assert report["rows"][0]["fraction_of_peak"] > 0 and report["rows"][0]["ratio"] > 0
    assert len(saved["reset_cost"]) == 5 and saved["vmap"]["core_speedup"] > 0
    text = readme.read_text()
    assert "old table" not in text and "| LR | sinusoid | 2 |" in text and text.endswith(f"{bench.README_END}\nafter\n")
    markdown = (tmp_path / "out.md").read_text()
    assert facts["cpu_model"] in markdown and "matmul peak" in markdown


def test_gpu_rows_without_a_gpu_are_unmeasured(tmp_path):
    if torch.cuda.is_available():
        return  # measured for real where there is a GPU
    bench = _module()
    argv = ["--envs", "lr", "--families", "quadratic", "--batch-sizes", "2", "--device", "cuda", "--seconds", "0.05"]
    report = bench.main([*argv, "--windows", "1", "--out", str(tmp_path / "gpu")])
    assert report["rows"][0]["status"].startswith("unmeasured")
    assert all(row["status"].startswith("unmeasured") for row in report["reset_cost"])
    assert "unmeasured" in (tmp_path / "gpu.md").read_text()


def test_compiled_flag_times_the_mlp_families_beside_eager(tmp_path):
    """``--compiled``: the MLP rows carry the compiled figures and a table of them (B=2 is not a compiled
    shape, so this runs eager on both sides and compiles nothing)."""
    bench = _module()
    argv = ["--envs", "lr", "--families", "sinusoid", "--batch-sizes", "2", "--seconds", "0.05", "--windows", "1"]
    report = bench.main([*argv, "--sync-envs", "2", "--no-extras", "--compiled", "--out", str(tmp_path / "c")])
    row = report["rows"][0]
    assert row["compiled_steps_per_s"] > 0 and row["compiled_ratio"] > 0 and row["compiled_fraction_of_peak"] > 0
    assert "compiled / eager" in (tmp_path / "c.md").read_text()
