"""EI on MetaOpt-Acquisition-v0's shown candidates against GP-EI, for several ``candidate_pool`` sizes.

``acq_ei`` picks the best-EI candidate the env shows; with ``candidate_pool=P`` that is EI maximized
over the env's pool of ``P`` Sobol points, ``P // 4`` neighbours of the incumbent and ``P // 16``
refinements, against GP-EI's 2048 + 512 + 128 (``gp_ei``, run on MetaOpt-HPO-v0 with the same
objectives). One line per family and agent: median log10 simple regret after ``budget`` evaluations
[95% bootstrap CI], as ``metaopt-bench`` prints it.

    python benchmarks/acquisition_pool_sweep.py --num-tasks 64 --pools 0,512,1024,2048 \\
        --out benchmarks/results/acquisition_pool/pool_sweep
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from agents.controllers.acquisition import ExpectedImprovementScores
from agents.controllers.hpo import GPEI
from agents.evaluation.hpo import ACQUISITION_SUITE
from agents.evaluation.report import write_benchmark

ACQUISITION = {"budget": 32, "max_dim": 6, "num_candidates": 32, "num_local": 8, "fit_steps": 20}
"""configs/env/acquisition.yaml's kwargs (the trained runs')."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="branin,hartmann3,hartmann6")
    parser.add_argument("--num-tasks", type=int, default=64)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--pools", default="0,512,1024,2048", help="candidate_pool values (0: no pool)")
    parser.add_argument("--out", default="benchmarks/results/acquisition_pool/pool_sweep")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pools = [int(p) for p in args.pools.split(",")]
    seeds = tuple(int(s) for s in args.seeds.split(","))
    rows = []
    for family in args.families.split(","):
        agents = {"gp_ei": GPEI(), **{f"acq_ei, candidate_pool={p}": ExpectedImprovementScores() for p in pools}}
        overrides = {f"acq_ei, candidate_pool={p}": {"candidate_pool": p} for p in pools}
        started = time.perf_counter()
        summaries, _ = ACQUISITION_SUITE.evaluate(
            agents, {**ACQUISITION, "task_family": family}, args.num_tasks, seeds, agent_env_kwargs=overrides
        )
        for name, s in summaries.items():
            rows.append({"family": family, "agent": name, "median": s.median, "median_ci": list(s.median_ci)})
            print(rows[-1], flush=True)
        print(f"{family}: {time.perf_counter() - started:.0f} s", flush=True)
    families = list(dict.fromkeys(r["family"] for r in rows))
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    cell = {
        (r["family"], r["agent"]): f"{r['median']:.2f} [{r['median_ci'][0]:.2f}, {r['median_ci'][1]:.2f}]" for r in rows
    }
    lines = [
        f"Median log10 simple regret after {ACQUISITION['budget']} evaluations [95% bootstrap CI]; "
        f"{args.num_tasks} test objectives x seeds {list(seeds)} per family; env kwargs {ACQUISITION}",
        "",
        "| agent | " + " | ".join(families) + " |",
        "|---|" + "---:|" * len(families),
        *(f"| {a} | " + " | ".join(cell[(f, a)] for f in families) + " |" for a in agents),
    ]
    write_benchmark(Path(args.out), lines, {"args": vars(args), "kwargs": ACQUISITION, "rows": rows})


if __name__ == "__main__":
    main()
