"""Freed memory kept in the heap (``metaopt_envs.core.allocator``) against glibc's default, per core.

Why: a core's step makes and frees the same tensors every decision; with glibc's default
thresholds the larger ones come from a fresh ``mmap`` (or a re-grown heap) each time and fault in
page by page. The cores now raise both thresholds when they are built (``apply_default``); the
environment variable ``METAOPT_RETAIN_FREED_MEMORY=0`` keeps glibc's defaults. The setting is
per process, so every cell runs in fresh subprocesses, the two settings alternating (``--rounds``
pairs per cell, the order flipped every round, so a burst of load hits both): one decision plus
the autoreset of the ended rows (episodes of 100 decisions), timed over ``--steps`` decisions after
``--warmup``, with the minor page faults counted (``getrusage``). ``--learner`` adds RL²
end to end: FastRecurrentPPO on ``metaopt-train env=lr_mixture`` (the results' configuration), the
median seconds per round (one rollout of 6,400 env steps + one update).

Reported: medians over the rounds, and the ratio default-settings time / retained time (> 1: the
retained heap is faster), with the commit, CPU model, measured matmul peak (same thread count,
for reference: no cell here is a fraction of it), threads and load. Results are bit-identical either
way (only where ``malloc`` finds memory changes).

    OMP_NUM_THREADS=1 python benchmarks/malloc_retain.py --learner
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CELLS = [
    ("lr", family, b)
    for family, b in itertools.product(("quadratic", "logistic", "sinusoid", "sklearn", "mixture"), (64, 1024))
] + [("ensemble", "switching_ar", 1024), ("hpo", "mixture", 1024)]
SETTINGS = ("glibc", "retained")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process (the parent set the environment variable)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from metaopt_envs.core import allocator

    if spec["kind"] == "learner":
        from benchmarks.recurrent_ppo_speed import compose_config, sb3_contender

        contender, _ = sb3_contender("fast", compose_config(["env=lr_mixture"]))
        contender.learn_one()  # warm-up round
        faults, times = _faults(), []
        for _ in range(spec["steps"]):
            start = time.perf_counter()
            contender.learn_one()
            times.append(time.perf_counter() - start)
        return {
            "seconds": statistics.median(times),
            "faults": (_faults() - faults) / spec["steps"],
            "applied": allocator.applied() is not None,
        }
    from benchmarks.env_throughput import ENVS
    from benchmarks.rng_hash import core_stepper
    from metaopt_envs import make_core

    env_id, _, length_name, length, extra = ENVS[spec["env"]]
    core = make_core(env_id, num_envs=spec["num_envs"], task_family=spec["family"], **{length_name: length, **extra})
    step = core_stepper(core)
    for _ in range(spec["warmup"]):
        step()
    faults, start = _faults(), time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    seconds = (time.perf_counter() - start) / spec["steps"]
    return {
        "seconds": seconds,
        "faults": (_faults() - faults) / spec["steps"],
        "applied": allocator.applied() is not None,
    }


def run_worker(spec: dict[str, Any], setting: str) -> dict[str, Any]:
    env = dict(os.environ)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "METAOPT_RETAIN_FREED_MEMORY"):
        env.pop(name, None)
    if setting == "glibc":
        env["METAOPT_RETAIN_FREED_MEMORY"] = "0"
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["applied"] != (setting == "retained"):
        raise RuntimeError(f"the {setting} worker ran with applied={result['applied']}")
    return result


def measure(spec: dict[str, Any], rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETTINGS}
    for r in range(rounds):
        for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            runs[setting].append(run_worker(spec, setting))
    row = {k: v for k, v in spec.items() if k not in ("threads",)}
    for setting in SETTINGS:
        row[f"{setting}_seconds"] = statistics.median(x["seconds"] for x in runs[setting])
        row[f"{setting}_faults"] = statistics.median(x["faults"] for x in runs[setting])
        row[f"{setting}_all_seconds"] = [x["seconds"] for x in runs[setting]]
    row["speedup"] = row["glibc_seconds"] / row["retained_seconds"]
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of subprocesses per cell")
    parser.add_argument("--steps", type=int, default=200, help="timed decisions per subprocess")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--learner", action="store_true", help="also RL² end to end (lr_mixture, 3 rounds each)")
    parser.add_argument("--cells", help="comma list of env:family:B (default: all)")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "malloc_retain"))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return {}
    import torch

    from benchmarks.env_throughput import machine_facts, matmul_peak, write_report

    torch.set_num_threads(args.threads)
    cells = CELLS
    if args.cells:
        cells = [(e, f, int(b)) for e, f, b in (c.split(":") for c in args.cells.split(","))]
    report: dict[str, Any] = {
        **machine_facts(args.threads, "cpu"),
        "matmul_peak_gflops": matmul_peak()["gflops"],
        "command": " ".join(["python", "benchmarks/malloc_retain.py", *(argv if argv is not None else sys.argv[1:])]),
        "rounds": args.rounds,
        "steps": args.steps,
        "cores": [],
        "learner": None,
    }
    for env, family, b in cells:
        spec = {"kind": "core", "env": env, "family": family, "num_envs": b, "threads": args.threads}
        spec.update(steps=args.steps if b < 1024 else max(20, args.steps // 4), warmup=args.warmup)
        row = measure(spec, args.rounds)
        report["cores"].append(row)
        print(json.dumps(row), flush=True)
    if args.learner:
        spec = {"kind": "learner", "steps": 3, "threads": args.threads}
        report["learner"] = measure(spec, args.rounds)
        print(json.dumps(report["learner"]), flush=True)
    report["loadavg_end"] = list(os.getloadavg())
    write_report(args.out, report, render_markdown(report))
    print(f"wrote {args.out}.json and {args.out}.md")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    from benchmarks.env_throughput import made_by

    lines = [
        "# Freed memory kept in the heap vs glibc's default thresholds",
        "",
        made_by(report, f"; fp32 matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s (same threads)")
        + " Each cell: "
        f'{report["rounds"]} pairs of fresh processes, the settings alternating; medians. "glibc": '
        '`METAOPT_RETAIN_FREED_MEMORY=0`; "retained": the default since this change (`metaopt_envs.core.allocator`).',
        "",
        "| core | B | glibc ms / decision | retained ms / decision | speed-up | minor faults / decision (glibc / retained) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["cores"]:
        lines.append(
            f"| {row['env']} {row['family']} | {row['num_envs']} | {1e3 * row['glibc_seconds']:.3f} | "
            f"{1e3 * row['retained_seconds']:.3f} | {row['speedup']:.2f}x | "
            f"{row['glibc_faults']:,.0f} / {row['retained_faults']:,.0f} |"
        )
    if report.get("learner"):
        row = report["learner"]
        lines += [
            "",
            "| RL² end to end (FastRecurrentPPO, `env=lr_mixture`) | glibc s / round | retained s / round | "
            "speed-up | minor faults / round (glibc / retained) |",
            "|---|---:|---:|---:|---:|",
            f"| one rollout (6,400 env steps) + one update | {row['glibc_seconds']:.3f} | "
            f"{row['retained_seconds']:.3f} | {row['speedup']:.2f}x | {row['glibc_faults']:,.0f} / "
            f"{row['retained_faults']:,.0f} |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
