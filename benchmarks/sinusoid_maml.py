"""Finn et al. (2017)'s sinusoid regression benchmark for the meta-learners in ``agents.meta``.

Tasks: y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5], from
the package's ``SinusoidMLPFamily`` (train split for meta-training, test split
for evaluation). Network 1-40-40-1 ReLU, MSE.

Training, per method and per K in ``--shots`` (a separate model per K, as in
the paper): ``--iterations`` meta-iterations of ``--meta-batch`` (25) fresh
tasks with K support and K query points, Adam with outer lr 1e-3.

* MAML (second order), FOMAML, Meta-SGD: 1 inner SGD step, inner lr 0.01
  (Meta-SGD's per-parameter lrs start at 0.01 and are learned);
* Reptile: ``--reptile-steps`` (5) inner SGD steps at lr 0.01 on the support
  set, meta-gradient theta - mean(phi) fed to Adam;
* CAVIA: 5 context inputs adapted with lr 1.0 (Zintgraf et al. 2019's
  sinusoid setting), 1 inner step;
* Pretrained: one network fit jointly to all training tasks, no adaptation.

Evaluation: the same ``--test-tasks`` (1000) test-split tasks for every method,
K support points (the first K of 20, so supports are nested) and
``--query-points`` (100) query points per task; query MSE after 0..10 SGD steps
with lr 0.01 (CAVIA: its context lr 1.0; Meta-SGD: its learned lrs). Reported:
mean query MSE over tasks with a percentile-bootstrap 95% CI (resampling tasks),
at steps 0, 1, 5, 10, beside the published 5-shot values.

The default ``--iterations`` is sized to run all 18 (method, K) trainings in
about ten minutes on one CPU thread; ``--iterations 70000`` is the paper's budget.

    python benchmarks/sinusoid_maml.py                      # ~10 min
    python benchmarks/sinusoid_maml.py --iterations 70000   # the paper's budget (hours)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agents.evaluation.report import git_commit  # noqa: E402
from agents.evaluation.stats import bootstrap_ci  # noqa: E402
from agents.meta import LEARNERS, SinusoidTasks  # noqa: E402

# Reference 5-shot query MSE (steps -> value), as given for Finn et al. (2017).
PUBLISHED_5SHOT = {"maml": {1: 0.67, 5: 0.38, 10: 0.35}, "pretrained": {1: 2.41, 5: 2.23, 10: 2.19}}
REPORT_STEPS = (0, 1, 5, 10)
METHOD_LABEL = {
    "maml": "MAML",
    "fomaml": "FOMAML",
    "reptile": "Reptile",
    "metasgd": "Meta-SGD",
    "cavia": "CAVIA",
    "pretrained": "Pretrained",
}


def method_settings(name: str, args: argparse.Namespace) -> dict:
    inner_lr = args.cavia_lr if name == "cavia" else args.inner_lr
    return {
        "inner_steps": args.reptile_steps if name == "reptile" else args.inner_steps,
        "inner_lr": inner_lr,
        "eval_lr": args.cavia_lr if name == "cavia" else args.eval_lr,
        "outer_lr": args.outer_lr,
        "meta_batch_size": args.meta_batch,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=3000, help="meta-iterations per (method, K); paper: 70000")
    p.add_argument("--methods", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    p.add_argument("--shots", nargs="+", type=int, default=[5, 10, 20])
    p.add_argument("--meta-batch", type=int, default=25)
    p.add_argument("--inner-steps", type=int, default=1)
    p.add_argument("--inner-lr", type=float, default=0.01)
    p.add_argument("--outer-lr", type=float, default=1e-3)
    p.add_argument("--reptile-steps", type=int, default=5)
    p.add_argument("--cavia-lr", type=float, default=1.0)
    p.add_argument("--test-tasks", type=int, default=1000)
    p.add_argument("--query-points", type=int, default=100)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--eval-lr", type=float, default=0.01)
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    sampler = SinusoidTasks()
    test_tasks = sampler.sample(args.test_tasks, max(args.shots), args.query_points, "test", seed=args.seed + 1000)
    started = time.perf_counter()
    results: dict = {}
    for name in args.methods:
        settings = method_settings(name, args)
        results[name] = {"settings": settings, "shots": {}}
        for shots in args.shots:
            learner = LEARNERS[name](seed=args.seed, inner_lr=settings["inner_lr"])
            log = learner.meta_train(
                args.iterations,
                settings["meta_batch_size"],
                shots,
                settings["inner_steps"],
                settings["inner_lr"],
                settings["outer_lr"],
                seed=args.seed,
                log_every=args.log_every,
            )
            t0 = time.perf_counter()
            mse = (
                learner.adapt_and_evaluate(test_tasks, shots, args.eval_steps, lr=settings["eval_lr"]).double().numpy()
            )
            eval_s = time.perf_counter() - t0
            tail = log["losses"][-min(100, len(log["losses"])) :]
            per_step = {}
            for step in range(args.eval_steps + 1):
                col = mse[:, step]
                bad = int((~np.isfinite(col)).sum())
                if bad:  # diverged on some tasks (Meta-SGD's lrs, learned for one step, can overshoot later steps)
                    per_step[str(step)] = {"mean": None, "ci95": [None, None], "nonfinite_tasks": bad}
                    continue
                lo, hi = bootstrap_ci(col, np.mean, args.bootstrap, seed=step)
                per_step[str(step)] = {"mean": float(col.mean()), "ci95": [lo, hi], "nonfinite_tasks": 0}
            results[name]["shots"][str(shots)] = {
                "train_iterations": args.iterations,
                "train_wall_s": log["wall_s"],
                "eval_wall_s": eval_s,
                "final_meta_loss_last100": float(np.mean(tail)) if tail else None,
                "query_mse": per_step,
            }
            row = "  ".join(f"s{s}={_short(per_step[str(s)])}" for s in REPORT_STEPS if s <= args.eval_steps)
            print(f"{METHOD_LABEL[name]:10s} K={shots:2d}  train {log['wall_s']:6.1f}s  {row}", flush=True)

    meta = {
        "benchmark": "sinusoid regression (Finn et al. 2017)",
        "commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "total_wall_s": time.perf_counter() - started,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "published_5shot": PUBLISHED_5SHOT,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "sinusoid_maml.json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    (args.out_dir / "sinusoid_maml.md").write_text(render_markdown(meta, results, args))
    print(f"wrote {args.out_dir / 'sinusoid_maml.json'} and .md ({meta['total_wall_s']:.0f}s)")


def _short(entry: dict) -> str:
    return "diverged" if entry["mean"] is None else f"{entry['mean']:.3f}"


def _cell(entry: dict) -> str:
    if entry["mean"] is None:
        return f"diverged ({entry['nonfinite_tasks']} tasks non-finite)"
    lo, hi = entry["ci95"]
    return f"{entry['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def render_markdown(meta: dict, results: dict, args: argparse.Namespace) -> str:
    steps = [s for s in REPORT_STEPS if s <= args.eval_steps]
    lines = [
        "# Sinusoid regression (Finn et al., 2017): MAML and other meta-learners",
        "",
        f"commit `{meta['commit']}` (uncommitted changes not reflected), torch {meta['torch']}, "
        f"{meta['threads']} torch thread(s), {meta['cpu_count']} CPUs; total wall {meta['total_wall_s']:.0f} s.",
        "",
        f"**Training budget: {args.iterations} meta-iterations** per (method, K) of {args.meta_batch} tasks "
        f"(the paper: 70,000), Adam outer lr {args.outer_lr}. Evaluation: {args.test_tasks} test-split tasks, "
        f"{args.query_points} query points each, SGD lr {args.eval_lr} (CAVIA: context lr {args.cavia_lr}; "
        "Meta-SGD: its learned lrs, meta-trained for one step, so later steps can diverge). "
        "Cells: mean query MSE over tasks [bootstrap 95% CI]. The published values are the paper's "
        "70,000-iteration results; compare only at that budget.",
        "",
        "## 5-shot, beside the published values",
        "",
        "| method | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
    ]
    for name, res in results.items():
        if "5" not in res["shots"]:
            continue
        cells = []
        for s in steps:
            cell = _cell(res["shots"]["5"]["query_mse"][str(s)])
            if s in PUBLISHED_5SHOT.get(name, {}):
                cell += f" (paper {PUBLISHED_5SHOT[name][s]:.2f})"
            cells.append(cell)
        lines.append(f"| {METHOD_LABEL[name]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## All methods and shots",
        "",
        "| method | K | iterations | train s | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---" * (len(steps) + 4) + "|",
    ]
    for name, res in results.items():
        for shots, r in res["shots"].items():
            cells = [_cell(r["query_mse"][str(s)]) for s in steps]
            lines.append(
                f"| {METHOD_LABEL[name]} | {shots} | {r['train_iterations']} | {r['train_wall_s']:.1f} | "
                + " | ".join(cells)
                + " |"
            )
    lines += [
        "",
        "Per-method settings: "
        + "; ".join(
            f"{METHOD_LABEL[n]}: {r['settings']['inner_steps']} inner step(s) at lr {r['settings']['inner_lr']}"
            for n, r in results.items()
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
