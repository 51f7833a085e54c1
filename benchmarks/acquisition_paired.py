"""Paired comparison of acquisition functions against GP-EI, objective by objective (issue 15, item 3).

    python benchmarks/acquisition_paired.py --num-tasks 128 --seeds 0,1
    python benchmarks/acquisition_paired.py --models runs/acq-design --episodes-per-trial 2

Every agent searches the same held-out objectives (``--num-tasks`` x ``--seeds`` per family) with the same
budget: GP-EI (the suite's baseline, on MetaOpt-HPO-v0, its own 5-point Sobol design) and, on
MetaOpt-Acquisition-v0 with ``--env-kwargs``, ``acq_ei`` (Expected Improvement over the env's candidates,
the untrained residual policy's prior) and the given models. The bench's median log10 simple regret has wide
CIs over objectives (and moves by up to 0.4 when only the candidates' randomness changes, e.g. scoring the
second episode of a trial); this script pairs each agent with GP-EI on each objective: the median and mean of
``log10 regret_agent - log10 regret_GP-EI`` with bootstrap 95% CIs and the win rate (lower regret wins, ties
half). With models, every agent runs RL² trials of ``--episodes-per-trial`` (the last search scored), as
``metaopt-bench`` does. Writes ``<out>.json`` and ``<out>.md`` with the commit, CPU and command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.evaluation.hpo import ACQUISITION_SUITE
from agents.evaluation.metrics import win_rate
from agents.evaluation.report import write_benchmark
from agents.evaluation.stats import bootstrap_ci

ENV_KWARGS = {
    "budget": 32,
    "reward_mode": "log_regret",
    "max_dim": 6,
    "num_candidates": 32,
    "num_local": 8,
    "fit_steps": 20,
    "candidate_pool": 1024,
    "num_initial": 5,
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="branin,hartmann3,hartmann6")
    p.add_argument("--agents", default="baseline:acq_ei", help="comma-separated acquisition agents beside GP-EI")
    p.add_argument("--models", default="", help="comma-separated run directories or model.zip files")
    p.add_argument("--env-kwargs", default=json.dumps(ENV_KWARGS), help="JSON of MetaOpt-Acquisition-v0 arguments")
    p.add_argument(
        "--model-env-kwargs",
        default=None,
        help="JSON of env arguments the models run with instead of their training spec's (e.g. a larger pool)",
    )
    p.add_argument("--num-tasks", type=int, default=128)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--episodes-per-trial", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/acquisition_design/paired")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    env_kwargs = json.loads(args.env_kwargs)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    specs = ["baseline:gp_ei", *[a for a in args.agents.split(",") if a], *[m for m in args.models.split(",") if m]]
    reference = "gp_ei"
    payload: dict = {"env_kwargs": env_kwargs, "seeds": list(seeds), "num_tasks": args.num_tasks, "families": {}}
    lines = [
        f"# Acquisition functions paired with GP-EI ({args.num_tasks} held-out objectives x seeds {list(seeds)} "
        f"per family, budget {env_kwargs.get('budget', 32)})",
        "",
        f"Env kwargs of the acquisition agents: `{json.dumps(env_kwargs)}` (models: their training spec's"
        f"{', with `' + args.model_env_kwargs + '`' if args.model_env_kwargs else ''}); episodes per trial: "
        f"{args.episodes_per_trial or 1} (the last search scored). Regret: log10 normalized simple regret "
        "(floored at 1e-6); differences agent - GP-EI per objective (negative: the agent found the better point).",
    ]
    for family in args.families.split(","):
        started = time.perf_counter()
        kwargs = {**env_kwargs, "task_family": family}
        agents = {ACQUISITION_SUITE.display_name(s): ACQUISITION_SUITE.load_agent(s, kwargs) for s in specs}
        if args.model_env_kwargs:  # the models on another env setting (a saved model declares its own)
            overrides = json.loads(args.model_env_kwargs)
            agents = {
                name: agent.with_overrides(overrides, None, name) if hasattr(agent, "with_overrides") else agent
                for name, agent in agents.items()
            }
        _, records = ACQUISITION_SUITE.evaluate(agents, kwargs, args.num_tasks, seeds, args.episodes_per_trial)
        regret = {name: np.concatenate([r.log10_regret for r in recs]) for name, recs in records.items()}
        ref = regret[reference]
        rows = [
            "",
            f"## {family}",
            "",
            "| agent | median [95% CI] | mean | median of (agent - GP-EI) [95% CI] | mean of (agent - GP-EI) [95% CI] "
            "| win rate vs GP-EI |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        entries = {}
        for name, values in regret.items():
            diff = values - ref
            entry = {
                "median": float(np.median(values)),
                "median_ci": bootstrap_ci(values, np.median),
                "mean": float(values.mean()),
                "diff_median": float(np.median(diff)),
                "diff_median_ci": bootstrap_ci(diff, np.median),
                "diff_mean": float(diff.mean()),
                "diff_mean_ci": bootstrap_ci(diff, np.mean),
                "win_rate": win_rate(values, ref),
                "num_runs": int(values.size),
            }
            entries[name] = entry
            rows.append(
                f"| {name} | {entry['median']:.2f} [{entry['median_ci'][0]:.2f}, {entry['median_ci'][1]:.2f}] | "
                f"{entry['mean']:.2f} | {entry['diff_median']:+.3f} [{entry['diff_median_ci'][0]:+.3f}, "
                f"{entry['diff_median_ci'][1]:+.3f}] | {entry['diff_mean']:+.3f} [{entry['diff_mean_ci'][0]:+.3f}, "
                f"{entry['diff_mean_ci'][1]:+.3f}] | {100 * entry['win_rate']:.0f}% |"
            )
        payload["families"][family] = {"agents": entries, "seconds": time.perf_counter() - started}
        lines += rows
        print("\n".join(rows), flush=True)
    write_benchmark(Path(args.out), lines, payload)


if __name__ == "__main__":
    main()
