"""Throughput of MetaOpt-Ensemble-v0 and MetaOpt-HPO-v0: the batched core against a SyncVectorEnv of single envs.

    python benchmarks/env_throughput.py                           # Ensemble: benchmarks/results/ensemble_throughput.{json,md}
    python benchmarks/env_throughput.py --env-id MetaOpt-HPO-v0   # HPO: benchmarks/results/hpo_throughput.{json,md}
    python benchmarks/env_throughput.py --batch-sizes 1,64 --seconds 2

(``benchmarks/throughput.py`` measures MetaOpt-LR-v0, with its roofline analysis.)

Both sides run whole episodes with autoresets (a reset samples a stream and computes every
forecaster for it, so its cost is included), random actions generated beforehand, one torch thread
unless ``--threads`` says otherwise. Each cell is the best of ``--repeats`` timed windows of at
least ``--seconds``; the ratio is batched / sync at the same number of envs, measured side by side
in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import metaopt_envs  # noqa: F401  (registers the ids)
from agents.evaluation.report import git_commit

SETTINGS = {
    # env id: (family argument, default families, episode-length argument, output name)
    "MetaOpt-Ensemble-v0": ("task_family", "switching_ar,regimes,real", "horizon", "ensemble_throughput"),
    "MetaOpt-HPO-v0": ("task_family", "branin,hartmann6,gp,sklearn,mixture", "budget", "hpo_throughput"),
}


def steps_per_second(envs: Any, num_envs: int, seconds: float, repeats: int) -> float:
    envs.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(64, num_envs, envs.single_action_space.shape[0]))
    actions = actions.astype(np.float32)
    best = 0.0
    for _ in range(repeats):
        steps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            envs.step(actions[steps % 64])
            steps += 1
        best = max(best, steps * num_envs / elapsed)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="MetaOpt-Ensemble-v0", choices=sorted(SETTINGS))
    parser.add_argument("--families", default=None, help="comma-separated families (default: every family of the env)")
    parser.add_argument("--batch-sizes", default="1,64,1024")
    parser.add_argument("--sync-max-envs", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="decisions per episode, short so that resets count (Ensemble: 100; HPO: its budget, 32)",
    )
    parser.add_argument(
        "--out", default=None, help="output path without suffix (default: benchmarks/results/<env>_throughput)"
    )
    args = parser.parse_args(argv)
    family_argument, families, length_argument, name = SETTINGS[args.env_id]
    args.families = args.families or families
    args.horizon = args.horizon or (100 if length_argument == "horizon" else 32)
    args.out = args.out or f"benchmarks/results/{name}"
    torch.set_num_threads(args.threads)
    commit = git_commit()
    kwargs = {length_argument: args.horizon}
    if args.env_id == "MetaOpt-Ensemble-v0":
        kwargs["warmup"] = 50
    rows = []
    for family in args.families.split(","):
        for b in (int(x) for x in args.batch_sizes.split(",")):
            batched = gym.make_vec(args.env_id, num_envs=b, **{family_argument: family}, **kwargs)
            fast = steps_per_second(batched, b, args.seconds, args.repeats)
            sync = None
            if b <= args.sync_max_envs:
                envs = gym.vector.SyncVectorEnv(
                    [lambda: gym.make(args.env_id, **{family_argument: family}, **kwargs)] * b  # noqa: B023  (used at once)
                )
                sync = steps_per_second(envs, b, args.seconds, args.repeats)
            rows.append(
                {
                    "family": family,
                    "num_envs": b,
                    "batched_steps_per_s": fast,
                    "sync_steps_per_s": sync,
                    "ratio": fast / sync if sync else None,
                }
            )
            print(rows[-1], flush=True)
    report = {
        "commit": commit,
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "loadavg": list(os.getloadavg()),
        "env_id": args.env_id,
        "horizon": args.horizon,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# {args.env_id} throughput: batched core vs SyncVectorEnv",
        "",
        f"commit `{commit}`, torch {torch.__version__}, {args.threads} torch thread(s), {os.cpu_count()} CPUs, "
        f"episodes of {args.horizon} decisions (autoresets included, so resets count), best of "
        f"{args.repeats} windows of {args.seconds} s; load average at the end {report['loadavg']}.",
        "",
        "| family | num_envs | batched steps/s | SyncVectorEnv steps/s | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        sync = f"{row['sync_steps_per_s']:,.0f}" if row["sync_steps_per_s"] else "-"
        ratio = f"{row['ratio']:.0f}x" if row["ratio"] else "-"
        lines.append(f"| {row['family']} | {row['num_envs']} | {row['batched_steps_per_s']:,.0f} | {sync} | {ratio} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
