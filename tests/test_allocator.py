"""The cores keep freed memory in the heap (``metaopt_envs.core.allocator``): no page faults per step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from metaopt_envs.core import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _run(code: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.ENV_VAR}
    environ.update(env, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# A core's decisions in a fresh process, their minor page faults counted after a warm-up.
STEPS = """
import json, resource, torch
from metaopt_envs import make_core
from metaopt_envs.core import allocator
core = make_core("MetaOpt-LR-v0", num_envs=64, task_family="sklearn", horizon=10**6)
actions = torch.zeros(64, 1)
for _ in range(10):
    core.step(actions)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    core.step(actions)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
print(json.dumps({"applied": allocator.applied(), "faults": faults}))
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_a_core_keeps_freed_memory_and_its_steps_take_no_page_faults():
    # glibc's defaults: ~1,500 faults per decision of this core (benchmarks/malloc_retain.py).
    result = _run(STEPS)
    assert result["applied"] == {
        "mmap_threshold": allocator.DEFAULT_MMAP_THRESHOLD,
        "trim_threshold": allocator.DEFAULT_TRIM_THRESHOLD,
    }
    assert result["faults"] < 50


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
@pytest.mark.parametrize("env", [{allocator.ENV_VAR: "0"}, {"MALLOC_TRIM_THRESHOLD_": "1000000"}])
def test_the_opt_out_and_glibcs_own_settings_are_left_alone(env):
    assert _run(STEPS, **env)["applied"] is None


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_retain_freed_memory_takes_other_thresholds():
    code = """
    import json
    from metaopt_envs.core import allocator
    ok = allocator.retain_freed_memory(mmap_threshold=2**24, trim_threshold=2**27)
    print(json.dumps({"ok": ok, "applied": allocator.applied()}))
    """
    assert _run(code) == {"ok": True, "applied": {"mmap_threshold": 2**24, "trim_threshold": 2**27}}


@pytest.mark.parametrize("name", ["mmap_threshold", "trim_threshold"])
@pytest.mark.parametrize("value", [0, -1, 2**31, 1.5, True, "1"])
def test_bad_thresholds_name_the_parameter_and_the_range(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be an int in \(0, 2\*\*31\) bytes, got {value!r}"):
        allocator.retain_freed_memory(**{name: value})


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_the_benchmark_runs_both_settings_in_fresh_processes_and_writes_its_table(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "malloc_retain.py"
    spec = importlib.util.spec_from_file_location("malloc_retain", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "m"
    report = bench.main(
        ["--cells", "lr:quadratic:8", "--rounds", "1", "--steps", "5", "--warmup", "2", "--out", str(out)]
    )
    (row,) = report["cores"]
    # Each worker checked that it ran with the setting it was given (run_worker raises otherwise).
    assert (row["family"], row["num_envs"]) == ("quadratic", 8)
    assert row["glibc_seconds"] > 0 and row["retained_seconds"] > 0
    assert row["speedup"] == pytest.approx(row["glibc_seconds"] / row["retained_seconds"])
    assert json.loads(out.with_suffix(".json").read_text())["cores"][0]["family"] == "quadratic"
    table = out.with_suffix(".md").read_text()
    assert "| lr quadratic | 8 |" in table and report["cpu_model"] in table
