"""The env's share of a suggestion on MetaOpt-Acquisition-v0: its step (GP fit, candidates, posterior) per row.

``metaopt-bench``'s "ms per suggestion" is the agent's ``predict`` time per objective. An acquisition
agent (``acq_*``, a trained policy) only scores candidates: the GP fit is the env's, inside its step.
This script times that step beside MetaOpt-HPO-v0's (the searches' env, which fits nothing), per row
at the evaluation's batch (one core of ``--num-envs`` rows, random scores), so an acquisition agent's
full cost per suggestion is its ms plus this step's, comparable with GP-EI's and TPE's ms.

    python benchmarks/acquisition_step_time.py --out benchmarks/results/acquisition_rl/step_time
    python benchmarks/acquisition_step_time.py --candidate-pool 0,1024 --out benchmarks/results/acquisition_pool/step_time
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import metaopt_envs
from agents.evaluation.report import write_benchmark

ACQUISITION = {"budget": 32, "max_dim": 6, "num_candidates": 32, "num_local": 8, "fit_steps": 20}
"""configs/env/acquisition.yaml's kwargs (the trained run's)."""
SEARCH_ONLY = ("num_candidates", "num_local", "fit_steps", "candidate_pool")


def step_seconds_per_row(env_id: str, family: str, num_envs: int, kwargs: dict, repeats: int) -> float:
    """Median over ``repeats`` whole searches of the mean ``core.step`` time, divided by ``num_envs``."""
    core = metaopt_envs.make_core(env_id, num_envs=num_envs, task_family=family, split="test", **kwargs)
    width = core.single_action_space.shape[0]
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats):
        core.reset_rows(torch.ones(num_envs, dtype=torch.bool))
        started = time.perf_counter()
        for _ in range(core.num_decisions):
            core.step(torch.rand(num_envs, width, generator=generator) * 2 - 1)
        times.append((time.perf_counter() - started) / core.num_decisions / num_envs)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="branin,hartmann3,hartmann6")
    parser.add_argument("--num-envs", type=int, default=64, help="rows per core (metaopt-bench's --num-tasks)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--candidate-pool", default="0", help="comma-separated candidate_pool values (0: no pool), one column each"
    )
    parser.add_argument("--out", default="benchmarks/results/acquisition_rl/step_time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    search = {k: v for k, v in ACQUISITION.items() if k not in SEARCH_ONLY}
    pools = [int(p) for p in args.candidate_pool.split(",")]
    rows = []
    for family in args.families.split(","):
        row: dict = {"family": family}
        for pool in pools:
            kwargs = {**ACQUISITION, "candidate_pool": pool}
            seconds = step_seconds_per_row("MetaOpt-Acquisition-v0", family, args.num_envs, kwargs, args.repeats)
            row[f"acquisition_ms_pool{pool}" if len(pools) > 1 or pool else "acquisition_ms"] = 1000 * seconds
        row["hpo_ms"] = 1000 * step_seconds_per_row("MetaOpt-HPO-v0", family, args.num_envs, search, args.repeats)
        rows.append(row)
        print(rows[-1], flush=True)
    columns = [key for key in rows[0] if key.startswith("acquisition_ms")]
    names = [
        "MetaOpt-Acquisition-v0 step (GP fit + candidates + posterior)" + (f", candidate_pool={p}" if p else "")
        for p in pools
    ]
    lines = [
        f"Env step time per row (ms; B = {args.num_envs}, one torch thread, kwargs {ACQUISITION}; median of "
        f"{args.repeats} searches of {ACQUISITION['budget']} steps)",
        "",
        "| family | " + " | ".join(names) + " | MetaOpt-HPO-v0 step |",
        "|---|" + "---:|" * (len(columns) + 1),
        *(f"| {r['family']} | " + " | ".join(f"{r[c]:.2f}" for c in columns) + f" | {r['hpo_ms']:.3f} |" for r in rows),
    ]
    write_benchmark(Path(args.out), lines, {"args": vars(args), "kwargs": ACQUISITION, "rows": rows})


if __name__ == "__main__":
    main()
