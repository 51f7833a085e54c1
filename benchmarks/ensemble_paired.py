"""Paired comparison of Ensemble agents against tuned Fixed-Share, stream by stream (issue 15, item 2).

    python benchmarks/ensemble_paired.py --setting experts --models runs/ens-filters-D,runs/ens-filters-F
    python benchmarks/ensemble_paired.py --setting real --models runs/ens-real-R --filter 0.03,0.03

Every agent runs on the same held-out streams (``--num-tasks`` x ``--seeds``, RL² trials of 2, the last
stream scored) as ``metaopt-bench``. The bench's table gives each agent's MSE with CIs over streams, which
the streams' spread makes wide; this script pairs the agents on each stream: the mean and the median of
``MSE_agent - MSE_FixedShare`` with bootstrap 95% CIs, the win rate, and, in the experts setting, the
share of the gap between Fixed-Share and the ``bayes_filter`` bound (the best any causal agent can do in
expectation) that the agent closes. Writes ``<out>.json`` and ``<out>.md`` with the commit, CPU and command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.controllers.ensemble import BayesFilter, FixedShare, RegimeOracle, ShareFilterAgent
from agents.evaluation.ensemble import ENSEMBLE_SUITE, evaluate_ensemble, tune_ensemble_baseline
from agents.evaluation.metrics import gap_closed, win_rate
from agents.evaluation.report import write_benchmark
from agents.evaluation.stats import bootstrap_ci, iqm

SETTINGS = {
    "experts": {
        "task_family": "switching_ar",
        "task_family_kwargs": {"num_regimes": [4, 4]},
        "forecasters": ["expert0", "expert1", "expert2", "expert3"],
        "horizon": 200,
        "warmup": 50,
    },
    "real": {"task_family": "real", "horizon": 200, "warmup": 50},
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="experts")
    p.add_argument("--models", default="", help="comma-separated run directories or model.zip files")
    p.add_argument("--filter", default="1.0,0.01", help="eta,alpha of the ShareFilterAgent row (the residual prior)")
    p.add_argument("--num-tasks", type=int, default=100)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--tune-tasks", type=int, default=32)
    p.add_argument("--out", default=None, help="output path without suffix")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    env_kwargs = SETTINGS[args.setting]
    seeds = tuple(int(s) for s in args.seeds.split(","))
    eta, alpha = (float(v) for v in args.filter.split(","))
    tuned = tune_ensemble_baseline("fixed_share", env_kwargs, args.tune_tasks).best
    agents = {
        f"fixed_share (tuned eta={tuned['eta']:.3g}, alpha={tuned['alpha']:.3g})": FixedShare(**tuned),
        "regime_oracle": RegimeOracle(),
        f"share filter (eta={eta:g}, alpha={alpha:g}) from the warm-up": ShareFilterAgent(),
    }
    if args.setting == "experts":
        agents["bayes_filter"] = BayesFilter()
    for spec in [m for m in args.models.split(",") if m]:
        agents[spec] = ENSEMBLE_SUITE.load_agent(spec)
    reference = next(iter(agents))
    filter_name = list(agents)[2]
    _, records = evaluate_ensemble(
        agents,
        env_kwargs,
        args.num_tasks,
        seeds,
        episodes_per_trial=2,
        agent_env_kwargs={filter_name: {"share_filters": [[eta, alpha]]}},
    )
    mse = {name: np.concatenate([r.mse for r in recs]) for name, recs in records.items()}
    ref, bound = mse[reference], mse.get("bayes_filter")
    rows, payload = [], {"setting": args.setting, "env_kwargs": env_kwargs, "seeds": list(seeds), "agents": {}}
    header = "| agent | MSE mean | MSE IQM | mean of MSE - FS [95% CI] | median of MSE - FS [95% CI] | win rate vs FS |"
    if bound is not None:
        header += " share of the FS-to-bayes_filter gap closed (mean; IQM) |"
    rows += [header, "|" + "---|" * (header.count("|") - 1)]
    for name, values in sorted(mse.items(), key=lambda item: item[1].mean()):
        diff = values - ref
        entry = {
            "mse_mean": float(values.mean()),
            "mse_iqm": float(iqm(values)),
            "diff_mean": float(diff.mean()),
            "diff_mean_ci": bootstrap_ci(diff, np.mean),
            "diff_median": float(np.median(diff)),
            "diff_median_ci": bootstrap_ci(diff, np.median),
            "win_rate": win_rate(values, ref),
        }
        line = (
            f"| {name} | {entry['mse_mean']:.4f} | {entry['mse_iqm']:.4f} | {entry['diff_mean']:+.4f} "
            f"[{entry['diff_mean_ci'][0]:+.4f}, {entry['diff_mean_ci'][1]:+.4f}] | {entry['diff_median']:+.4f} "
            f"[{entry['diff_median_ci'][0]:+.4f}, {entry['diff_median_ci'][1]:+.4f}] | {100 * entry['win_rate']:.0f}% |"
        )
        if bound is not None:
            entry["bound_gap_closed_mean"] = gap_closed(values, ref, bound)
            entry["bound_gap_closed_iqm"] = float((iqm(ref) - iqm(values)) / (iqm(ref) - iqm(bound)))
            line += f" {100 * entry['bound_gap_closed_mean']:.0f}%; {100 * entry['bound_gap_closed_iqm']:.0f}% |"
        payload["agents"][name] = entry
        rows.append(line)
    title = f"# Ensemble agents paired with tuned Fixed-Share: {args.setting} ({args.num_tasks} test streams x seeds {list(seeds)})"
    out = Path(args.out or f"benchmarks/results/rl2_ensemble/paired_{args.setting}")
    write_benchmark(out, [title, "", *rows], payload)


if __name__ == "__main__":
    main()
