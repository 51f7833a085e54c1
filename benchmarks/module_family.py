"""The generic ``ModuleFamily`` path against the hand-written sklearn MLP path, on the same MLP, in one process.

Both sides train the same network on the same data with the same sizes: a 64-32-10 ReLU MLP on scikit-learn's
digits (``SklearnMLPFamily(train_datasets=("digits",), test_datasets=("digits",))`` against
``ModuleFamily(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), (64,), digits)``),
``num_train=128``, ``num_val=48``, ``batch_size=32``. For each batch size ``B`` (``--batch-sizes``) it times

* **inner step**: ``family.loss_and_paired_grads`` (the full training loss and the two minibatch gradients:
  what the LR core asks of a family at every inner step);
* **env step**: ``LRCore.step`` (the inner step plus the optimizer, features and rewards), over whole episodes
  of ``--horizon`` decisions.

The two sides alternate, each in ``--windows`` windows, and the best window counts (the machine may be
shared). ``fraction of peak`` is the useful matmul FLOPs of an inner step (counted from the layer sizes: the
forward pass over the ``num_train`` samples, the forward and backward passes of the two minibatches) over the
time, divided by the single-thread fp32 ``torch.mm`` peak measured in the same run (best of large squares).

``--suite`` (default on) also times an episode of 100 inner steps at B=64 for every family of the realistic
suite (cpu preset, Adam), with the construction time (data cached per process).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/module_family.py            # ~2 min on one core
    OMP_NUM_THREADS=1 python benchmarks/module_family.py --quick    # smoke run, writes module_family_quick.*

Writes ``benchmarks/results/module_family.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.evaluation.report import cpu_model

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = {"inputs": 64, "hidden": 32, "classes": 10, "num_train": 128, "num_val": 48, "batch_size": 32}


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def matmul_peak(sizes: tuple[int, ...] = (256, 512, 1024), reps: int = 5) -> float:
    """Best fp32 ``torch.mm`` GFLOP/s over square sizes, at the current thread count."""
    best = 0.0
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=c)
        for _ in range(reps):
            start = time.perf_counter()
            torch.mm(a, b, out=c)
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def inner_step_flops(num_envs: int) -> int:
    """Useful matmul FLOPs of one inner step of ``num_envs`` MLP problems (module docstring)."""
    layers = [(SIZES["inputs"], SIZES["hidden"]), (SIZES["hidden"], SIZES["classes"])]
    per_sample = sum(2 * i * o for i, o in layers)
    forward_full = SIZES["num_train"] * per_sample
    minibatch = 2 * SIZES["batch_size"]
    backward = minibatch * (per_sample + 2 * layers[1][0] * layers[1][1])  # weight grads + input grads (layer 2)
    return num_envs * (forward_full + minibatch * per_sample + backward)


def families() -> dict[str, Any]:
    from metaopt_envs.lr.families import ModuleFamily, SklearnMLPFamily
    from metaopt_envs.lr.families.mlp import _load_sklearn

    sizes = {k: SIZES[k] for k in ("num_train", "num_val", "batch_size")}
    hand = SklearnMLPFamily(
        train_datasets=("digits",), test_datasets=("digits",), hidden_sizes=(SIZES["hidden"],), **sizes
    )
    x, y = _load_sklearn("digits")  # the same standardized features as the hand-written family
    module = nn.Sequential(
        nn.Linear(SIZES["inputs"], SIZES["hidden"]), nn.ReLU(), nn.Linear(SIZES["hidden"], SIZES["classes"])
    )
    generic = ModuleFamily(module, (SIZES["inputs"],), (torch.from_numpy(x), torch.from_numpy(y)), **sizes)
    assert hand.param_dim == generic.param_dim
    return {"hand-written (mlp.py)": hand, "generic (ModuleFamily)": generic}


def _best(fn: Callable[[], Any], calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def compare(num_envs: int, windows: int, calls: int, horizon: int) -> dict[str, Any]:
    from metaopt_envs.core import rng
    from metaopt_envs.lr.core import LRCore

    keys = rng.keys_from_seeds(list(range(num_envs)))
    sides: dict[str, dict[str, Any]] = {}
    for label, family in families().items():
        tasks = family.sample(keys, "train")
        params = family.init_params(tasks, keys)
        key_a, key_b = rng.fold(keys, 1), rng.fold(keys, 2)
        core = LRCore(num_envs=num_envs, task_family=family, horizon=horizon, lr_range=(0.01, 1.0))
        action = np.zeros((num_envs, 1), np.float32)

        def inner(family=family, params=params, tasks=tasks, key_a=key_a, key_b=key_b) -> None:
            with torch.no_grad():
                family.loss_and_paired_grads(params, tasks, key_a, key_b)

        def env_step(core=core, action=action) -> None:
            out = core.step(action)
            core.reset_rows(out.terminated | out.truncated)

        sides[label] = {"inner": inner, "env": env_step, "inner_s": [], "env_s": []}
    for _ in range(windows):  # alternate the sides: a busy neighbour slows both alike
        for side in sides.values():
            side["inner_s"].append(_best(side["inner"], calls))
            side["env_s"].append(_best(side["env"], horizon))
    flops = inner_step_flops(num_envs)
    out: dict[str, Any] = {"num_envs": num_envs, "flops_per_inner_step": flops, "sides": {}}
    for label, side in sides.items():
        out["sides"][label] = {
            "inner_step_s": min(side["inner_s"]),
            "inner_step_s_median": float(np.median(side["inner_s"])),
            "env_step_s": min(side["env_s"]),
            "env_step_s_median": float(np.median(side["env_s"])),
            "inner_gflops": flops / min(side["inner_s"]) / 1e9,
        }
    hand, generic = out["sides"].values()
    out["generic_over_hand_inner"] = generic["inner_step_s"] / hand["inner_step_s"]
    out["generic_over_hand_env"] = generic["env_step_s"] / hand["env_step_s"]
    return out


def suite_episodes(num_envs: int, horizon: int) -> list[dict[str, Any]]:
    from metaopt_envs.lr.core import LRCore
    from metaopt_envs.lr.families import REALISTIC_FAMILIES, make_task_family

    rows = []
    for name in REALISTIC_FAMILIES:
        start = time.perf_counter()
        family = make_task_family(name)
        construct = time.perf_counter() - start
        core = LRCore(num_envs=num_envs, task_family=family, horizon=horizon, inner_optimizer="adam")
        action = np.full((num_envs, 1), -0.5, np.float32)
        start = time.perf_counter()
        for _ in range(horizon):
            core.step(action)
        rows.append(
            {
                "family": name,
                "param_dim": family.param_dim,
                "construct_s": construct,
                "episode_s": time.perf_counter() - start,
                "initial_loss": float(core.state.initial_loss.mean()),
                "final_loss": float(core.state.loss.mean()),
            }
        )
    return rows


def write_markdown(report: dict[str, Any], path: Path) -> None:
    meta = report["meta"]
    lines = [
        "# ModuleFamily vs the hand-written MLP path",
        "",
        f"- date: {meta['date']}; commit `{meta['commit']}`{' (dirty tree)' if meta['dirty'] else ''}",
        f"- CPU: {meta['cpu']}; torch {meta['torch']} with {meta['threads']} thread(s); "
        f"load average before/after {meta['load_before']} / {meta['load_after']} (the machine may be shared)",
        f"- measured single-thread fp32 matmul peak: {meta['peak_gflops']:.1f} GFLOP/s (best `torch.mm` of squares)",
        "- the same 64-32-10 MLP on scikit-learn digits, num_train 128, num_val 48, minibatch 32; best of "
        f"{meta['windows']} alternating windows",
        "",
        "| B | path | inner step (ms) | env step (ms) | GFLOP/s (inner) | fraction of peak | generic / hand |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["comparison"]:
        for label, side in row["sides"].items():
            ratio = (
                f"{row['generic_over_hand_inner']:.2f}x inner, {row['generic_over_hand_env']:.2f}x env"
                if label.startswith("generic")
                else ""
            )
            lines.append(
                f"| {row['num_envs']} | {label} | {1e3 * side['inner_step_s']:.2f} | {1e3 * side['env_step_s']:.2f} "
                f"| {side['inner_gflops']:.2f} | {side['inner_gflops'] / meta['peak_gflops']:.1%} | {ratio} |"
            )
    if report.get("suite"):
        lines += [
            "",
            f"## Realistic suite: one episode of {meta['horizon']} inner steps at B={meta['suite_envs']} (cpu preset, Adam)",
            "",
            "| family | P | construction (s) | episode (s) | mean loss start -> end |",
            "|---|---:|---:|---:|---|",
        ]
        for row in report["suite"]:
            lines.append(
                f"| {row['family']} | {row['param_dim']} | {row['construct_s']:.2f} | {row['episode_s']:.1f} "
                f"| {row['initial_loss']:.3f} -> {row['final_loss']:.3f} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="64,1024", help="comma-separated B")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="inner-step calls per window")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-suite", action="store_true", help="skip the realistic suite's episode times")
    parser.add_argument("--quick", action="store_true", help="B=64, 2 windows, short episodes")
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.batch_sizes, args.windows, args.calls, args.horizon = "64", 2, 5, 10
    load_before = [round(x, 2) for x in os.getloadavg()]
    peak = matmul_peak()
    comparison = [compare(int(b), args.windows, args.calls, args.horizon) for b in args.batch_sizes.split(",")]
    suite = [] if args.no_suite else suite_episodes(64, args.horizon)
    report = {
        "meta": {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": _git("rev-parse", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "cpu": cpu_model(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "peak_gflops": peak,
            "windows": args.windows,
            "horizon": args.horizon,
            "suite_envs": 64,
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "sizes": SIZES,
        },
        "comparison": comparison,
        "suite": suite,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "module_family_quick" if args.quick else "module_family"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, out / f"{stem}.md")
    print((out / f"{stem}.md").read_text())
    return report


if __name__ == "__main__":
    main()
