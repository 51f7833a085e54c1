"""The counter RNG's NumPy hash against its torch-op hash, side by side in one process.

On the CPU, :mod:`metaopt_envs.core.rng` hashes in NumPy ``uint64`` (logical shifts, no masking,
less per call); :func:`metaopt_envs.core.rng.set_numpy_hash` switches back to the torch-op hash,
which gives the same bits. This script times both, interleaved (``env_throughput.interleaved``:
round-robin windows, medians), one torch thread unless ``--threads`` says otherwise:

* the hash alone (``rng.mix``) and the draws (``rng.uniform``, ``rng.normal``) at a few shapes,
* one decision of each env core with the autoreset of ended rows (LR families, Ensemble, HPO) at
  ``--batch-sizes``, and an LR core's ``reset_rows`` of 3 rows with new tasks at B = 64 beside its
  step (the reset / step ratio of ``env_throughput.py``, with either hash).

    OMP_NUM_THREADS=1 python benchmarks/rng_hash.py            # benchmarks/results/rng_hash.{json,md}
    OMP_NUM_THREADS=1 python benchmarks/rng_hash.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.env_throughput import ENVS, interleaved, machine_facts, made_by, write_report  # noqa: E402
from metaopt_envs import make_core  # noqa: E402
from metaopt_envs.core import rng  # noqa: E402

LR_FAMILIES = ("quadratic", "logistic", "sinusoid", "sklearn", "mixture")
HASH_SHAPES = ((3,), (64,), (64, 32), (1024, 32), (1024, 2, 64))


def with_hash(numpy: bool, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with the NumPy hash on (``numpy``) or the torch-op hash."""

    def call() -> Any:
        previous = rng.set_numpy_hash(numpy)
        try:
            return fn()
        finally:
            rng.set_numpy_hash(previous)

    return call


def pair(fn: Callable[[], Any], seconds: float, windows: int) -> dict[str, float]:
    """Median seconds per call of ``fn`` with each hash, interleaved, and the speed-up of NumPy's."""
    times = interleaved({"torch": with_hash(False, fn), "numpy": with_hash(True, fn)}, seconds, windows)
    return {
        "torch_us": 1e6 * times["torch"],
        "numpy_us": 1e6 * times["numpy"],
        "speedup": times["torch"] / times["numpy"],
    }


def core_stepper(core: Any) -> Callable[[], None]:
    """One decision of ``core`` (random actions drawn beforehand) and the reset of its ended rows."""
    generator = torch.Generator().manual_seed(0)
    actions = 2 * torch.rand((16, core.num_envs, *core.single_action_space.shape), generator=generator) - 1
    counter = itertools.count()

    def step() -> None:
        result = core.step(actions[next(counter) % 16])
        core.reset_rows(result.terminated | result.truncated)

    return step


def step_and_reset(family: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """An LR core at B = 64: one step, and the reset of its first 3 rows with new tasks."""
    core = make_core("MetaOpt-LR-v0", num_envs=64, task_family=family, horizon=10**6)
    actions = torch.zeros(64, 1)
    rows = torch.zeros(64, dtype=torch.bool)
    rows[:3] = True
    return (lambda: core.step(actions)), (lambda: core.reset_rows(rows))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="64,1024")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per cell (both hashes)")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="B = 64 only, short windows")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "rng_hash"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.seconds, args.windows = "64", 0.2, 2
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        **machine_facts(args.threads, "cpu"),
        "command": " ".join(["python", "benchmarks/rng_hash.py", *(argv if argv is not None else sys.argv[1:])]),
        "seconds_per_cell": args.seconds,
        "windows": args.windows,
        "hash": [],
        "cores": [],
        "reset": [],
    }
    keys = rng.keys_from_seeds(list(range(1024)))
    for shape in HASH_SHAPES:
        x = rng.bits(keys[:1], shape)[0]
        report["hash"].append(
            {"op": "mix", "shape": list(shape), **pair(lambda x=x: rng.mix(x), args.seconds, args.windows)}
        )
    for op, fn in (("uniform", rng.uniform), ("normal", rng.normal)):
        for b, n in ((3, 32), (1024, 64)):
            k = keys[:b]
            report["hash"].append(
                {"op": op, "shape": [b, n], **pair(lambda fn=fn, k=k, n=n: fn(k, (n,)), args.seconds, args.windows)}
            )
    for row in report["hash"]:
        print(json.dumps(row), flush=True)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cells = [("lr", family) for family in LR_FAMILIES] + [("ensemble", "switching_ar"), ("hpo", "mixture")]
    for (env, family), b in itertools.product(cells, batch_sizes):
        env_id, _, length_name, length, extra = ENVS[env]
        core = make_core(env_id, num_envs=b, task_family=family, **{length_name: length, **extra})
        row = {"env": env_id, "family": family, "num_envs": b, **pair(core_stepper(core), args.seconds, args.windows)}
        report["cores"].append(row)
        print(json.dumps(row), flush=True)
    for family in LR_FAMILIES:
        step, reset = step_and_reset(family)
        fns = {
            f"{name}_{numpy}": with_hash(numpy == "numpy", fn)
            for numpy in ("torch", "numpy")
            for name, fn in (("step", step), ("reset", reset))
        }
        times = interleaved(fns, 2 * args.seconds, args.windows)
        row = {"family": family, "num_envs": 64, **{f"{k}_us": 1e6 * v for k, v in times.items()}}
        row["reset_over_step_torch"] = times["reset_torch"] / times["step_torch"]
        row["reset_over_step_numpy"] = times["reset_numpy"] / times["step_numpy"]
        report["reset"].append(row)
        print(json.dumps(row), flush=True)
    report["loadavg_end"] = list(os.getloadavg())
    write_report(args.out, report, render_markdown(report))
    print(f"wrote {args.out}.json and {args.out}.md")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# The counter RNG: NumPy hash vs torch-op hash",
        "",
        f"{made_by(report)} Medians of "
        f"{report['windows']} interleaved windows, {report['seconds_per_cell']} s per cell; both hashes give the "
        "same bits (tests/test_rng.py).",
        "",
        "| op | shape | torch-op hash us | NumPy hash us | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for row in report["hash"]:
        shape = "x".join(map(str, row["shape"]))
        lines.append(
            f"| `{row['op']}` | {shape} | {row['torch_us']:.1f} | {row['numpy_us']:.1f} | {row['speedup']:.2f}x |"
        )
    lines += ["", "| env core: one decision + autoreset | B | torch-op hash ms | NumPy hash ms | speed-up |"]
    lines.append("|---|---:|---:|---:|---:|")
    for row in report["cores"]:
        lines.append(
            f"| {row['env']} {row['family']} | {row['num_envs']} | {row['torch_us'] / 1e3:.3f} | "
            f"{row['numpy_us'] / 1e3:.3f} | {row['speedup']:.2f}x |"
        )
    lines += [
        "",
        "| LR family, B = 64 | step ms (torch / NumPy) | reset 3 rows ms (torch / NumPy) | reset / step (torch / NumPy) |",
    ]
    lines.append("|---|---:|---:|---:|")
    for row in report["reset"]:
        lines.append(
            f"| {row['family']} | {row['step_torch_us'] / 1e3:.3f} / {row['step_numpy_us'] / 1e3:.3f} | "
            f"{row['reset_torch_us'] / 1e3:.3f} / {row['reset_numpy_us'] / 1e3:.3f} | "
            f"{row['reset_over_step_torch']:.2f} / {row['reset_over_step_numpy']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
