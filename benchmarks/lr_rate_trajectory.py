"""The learning rates an LR agent sets, decision by decision, on held-out tasks of one family.

    python benchmarks/lr_rate_trajectory.py runs/lr-mixture-rs --family logistic
    python benchmarks/lr_rate_trajectory.py 'baseline:cosine?lr=0.464' --family logistic

Runs the agent (an RL² run directory or model.zip with its run spec, a ``baseline:NAME?key=value``, or a
user's ``module:Class``) as ``metaopt-bench`` does, on ``--num-tasks`` test tasks of evaluation seed
``--seed``, and writes the median and quartiles of ``info["lr"]`` and the median log10 L/L0 after every
``--every``-th decision of the whole trial (``<out>.json`` and ``<out>.md`` with the commit, CPU and command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import metaopt_envs
from agents.evaluation.metrics import evaluation_seed
from agents.evaluation.report import write_benchmark
from agents.evaluation.rollout import rollout
from agents.evaluation.suites import get_suite


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("agent")
    p.add_argument("--family", default="logistic")
    p.add_argument("--horizon", type=int, default=50)
    p.add_argument("--num-tasks", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    suite = get_suite("MetaOpt-LR-v0")
    kwargs = {"task_family": args.family, "horizon": args.horizon, "split": "test"}
    agent = suite.load_agent(args.agent, kwargs)
    own = dict(getattr(agent, "env_kwargs", None) or {})  # a model runs with its own action settings
    kwargs.update({k: v for k, v in own.items() if k in ("action_mode", "max_lr_change", "initial_lr", "horizon")})
    trial = getattr(agent, "episodes_per_trial", None)
    core = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=args.num_tasks, episodes_per_trial=trial, **kwargs)
    rates, losses = [], []

    def record(step) -> None:
        rates.append(step.info["lr"].copy())
        losses.append(np.log10(np.maximum(step.info["loss"], 1e-30) / step.info["initial_loss"]))

    rollout(agent, core, evaluation_seed(args.seed), record)
    lr, loss = np.array(rates), np.array(losses)
    decisions = sorted({*range(0, len(lr), args.every), len(lr) - 1})
    rows = [{"decision": t + 1, "lr_median": float(np.median(lr[t])), "lr_q25": float(np.quantile(lr[t], 0.25)),
             "lr_q75": float(np.quantile(lr[t], 0.75)), "log10_loss_ratio_median": float(np.median(loss[t]))}
            for t in decisions]  # fmt: skip
    lines = [
        f"# Learning rates of `{args.agent}` on {args.family} ({args.num_tasks} test tasks, evaluation seed {args.seed}, "
        f"horizon {args.horizon}, {trial or 1} inner episode(s) per trial)",
        "",
        "| decision | median lr | lr 25% - 75% | median log10 L/L0 |",
        "|---:|---:|---:|---:|",
        *(f"| {r['decision']} | {r['lr_median']:.3g} | {r['lr_q25']:.3g} - {r['lr_q75']:.3g} | "
          f"{r['log10_loss_ratio_median']:.3f} |" for r in rows),
    ]  # fmt: skip
    name = Path(args.agent.split("?")[0].removeprefix("baseline:")).name.replace(".zip", "")
    out = Path(args.out or f"benchmarks/results/lr_rates/{name}_{args.family}")
    write_benchmark(out, lines, {"agent": args.agent, "family": args.family, "env_kwargs": kwargs, "rows": rows})


if __name__ == "__main__":
    main()
