"""Learned optimizers on the noisy quadratics of MetaOpt-LR-v0, beside the hand-designed controllers.

* Learned LR controller (:class:`agents.meta.learned_optimizers.LearnedLRController`):
  an 8-32-1 MLP from the LR env's features to the next SGD rate, meta-trained for
  ``--lr-iterations`` meta-iterations by truncated BPTT (windows of ``--truncation`` steps)
  through unrolled SGD on fresh training-split quadratics (the env's own
  dynamics, :mod:`metaopt_envs.lr.dynamics`), keeping the best
  weights on 64 training-split validation tasks; evaluated with
  :func:`agents.evaluation.lr.evaluate` (its ``predict``) beside the constant and
  hypergradient baselines (``lr`` tuned on the training split by
  :func:`agents.evaluation.lr.tune_baseline`) and the analytic optimal constant (oracle).
* Coordinatewise LSTM optimizer (Andrychowicz et al. 2016,
  :class:`~agents.meta.learned_optimizers.CoordinatewiseLSTMOptimizer`):
  meta-trained for ``--lstm-iterations`` meta-iterations likewise, then run on exactly the
  same test tasks, initial points and minibatches (it replaces SGD itself, so
  it is scored outside the LR env, with the same metric).

Test tasks: ``--num-tasks`` (64) per seed x ``--seeds`` (0 1), horizon ``--horizon`` (50),
SGD. Metric: final ``log10(L_T / L_0)`` per task (``log10(1e30)`` if the run
diverged), mean and IQM with percentile-bootstrap 95% CIs, win rate against the
tuned constant. Writes ``<out-dir>/learned_optimizers.{json,md}``.

    python benchmarks/learned_lr_controller.py                       # ~1-2 min on one core
    python benchmarks/learned_lr_controller.py --lr-iterations 20 --lstm-iterations 10 --out-dir /tmp/lo

Budgets are meta-iterations (never seconds), so a run reproduces on one machine whatever its load.
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

from agents.controllers.lr import ConstantLR, HypergradientLR, QuadraticOracleLR  # noqa: E402
from agents.evaluation.lr import evaluate, tune_baseline  # noqa: E402
from agents.evaluation.report import git_commit  # noqa: E402
from agents.evaluation.stats import bootstrap_ci, iqm  # noqa: E402
from agents.meta.learned_optimizers import (  # noqa: E402
    CoordinatewiseLSTMOptimizer,
    LearnedLRController,
    harness_problems,
    sample_problems,
)
from metaopt_envs.core import rng  # noqa: E402
from metaopt_envs.lr.families import make_task_family  # noqa: E402


def summary(final: np.ndarray, reference: np.ndarray | None) -> dict:
    win = None if reference is None else float(np.mean(final < reference) + 0.5 * np.mean(final == reference))
    return {
        "log10_final_loss_mean": float(final.mean()),
        "log10_final_loss_mean_ci": bootstrap_ci(final, np.mean),
        "log10_final_loss_iqm": iqm(final),
        "log10_final_loss_iqm_ci": bootstrap_ci(final, iqm),
        "win_rate_vs_tuned_constant": win,
        "diverged_percent": 100.0 * float(np.mean(final >= 29.99)),
        "num_runs": int(final.size),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr-iterations", type=int, default=288, help="meta-iterations of the LR controller")
    parser.add_argument("--lstm-iterations", type=int, default=156, help="meta-iterations of the LSTM optimizer")
    parser.add_argument("--meta-tasks", type=int, default=32, help="training problems per meta-iteration")
    parser.add_argument("--truncation", type=int, default=10)
    parser.add_argument("--lr-meta-lr", type=float, default=3e-3)
    parser.add_argument("--lstm-meta-lr", type=float, default=3e-3)
    parser.add_argument("--num-tasks", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--tune-tasks", type=int, default=64)
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "benchmarks" / "results"))
    parser.add_argument("--save-dir", default=None, help="also save the trained models here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    family = make_task_family("quadratic")
    env_kwargs = {"task_family": "quadratic", "horizon": args.horizon, "inner_optimizer": "sgd"}
    validation = sample_problems(family, rng.keys_from_seeds(torch.arange(64) + 777_777), "train")
    timings: dict[str, float] = {}

    start = time.perf_counter()
    controller = LearnedLRController(horizon=args.horizon, seed=0)
    controller.meta_train(
        family,
        iterations=args.lr_iterations,
        num_tasks=args.meta_tasks,
        horizon=args.horizon,
        truncation=args.truncation,
        meta_lr=args.lr_meta_lr,
        validation=validation,
        validate_every=10,
    )
    timings["learned_lr_meta_train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    lstm = CoordinatewiseLSTMOptimizer(seed=0)
    lstm.meta_train(
        family,
        iterations=args.lstm_iterations,
        num_tasks=args.meta_tasks,
        horizon=args.horizon,
        truncation=args.truncation,
        meta_lr=args.lstm_meta_lr,
        validation=validation,
        validate_every=10,
    )
    timings["lstm_meta_train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    tuned = {
        name: tune_baseline(name, "MetaOpt-LR-v0", env_kwargs, num_tasks=args.tune_tasks)
        for name in ("constant", "hypergradient")
    }
    timings["tuning_s"] = time.perf_counter() - start
    constant_name = f"constant (tuned lr={tuned['constant'].best_lr:.3g})"
    agents = {
        constant_name: ConstantLR(lr=tuned["constant"].best_lr),
        f"hypergradient (tuned lr={tuned['hypergradient'].best_lr:.3g})": HypergradientLR(
            lr=tuned["hypergradient"].best_lr
        ),
        "oracle: analytic optimal constant": QuadraticOracleLR(),
        "learned LR controller (MLP, meta-trained)": controller,
    }
    start = time.perf_counter()
    _, records = evaluate(
        agents, env_kwargs=env_kwargs, num_tasks=args.num_tasks, seeds=tuple(args.seeds), reference=constant_name
    )
    finals = {name: np.concatenate([r.log10_final_loss for r in recs]) for name, recs in records.items()}
    lstm_curves = []
    lstm_final = []
    for seed in args.seeds:
        curves, final = lstm.optimize(harness_problems(family, args.num_tasks, seed), args.horizon, family)
        lstm_curves.append(curves)
        lstm_final.append(final)
    finals["LSTM optimizer (Andrychowicz et al. 2016, meta-trained)"] = np.concatenate(lstm_final)
    timings["evaluation_s"] = time.perf_counter() - start
    reference = finals[constant_name]
    results = {name: summary(final, reference) for name, final in finals.items()}
    curves = {name: np.mean([r.loss_curve for r in recs], axis=0).tolist() for name, recs in records.items()}
    with np.errstate(divide="ignore"):
        lstm_ratio = np.log10(np.clip(np.concatenate(lstm_curves) / np.concatenate(lstm_curves)[:, :1], 1e-30, 1e30))
    curves["LSTM optimizer (Andrychowicz et al. 2016, meta-trained)"] = lstm_ratio[:, 1:].mean(0).tolist()

    report = {
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "env_kwargs": env_kwargs,
        "test": {"num_tasks": args.num_tasks, "seeds": args.seeds, "split": "test"},
        "budget": {
            "learned_lr": {
                "iterations": len(controller.history),
                "meta_tasks": args.meta_tasks,
                "truncation": args.truncation,
                "meta_lr": args.lr_meta_lr,
                "inner_steps": len(controller.history) * args.meta_tasks * args.horizon,
            },
            "lstm": {
                "iterations": len(lstm.history),
                "meta_tasks": args.meta_tasks,
                "truncation": args.truncation,
                "meta_lr": args.lstm_meta_lr,
                "inner_steps": len(lstm.history) * args.meta_tasks * args.horizon,
            },
            "tuning": {
                name: {"best_lr": t.best_lr, "grid_size": len(t.grid), "num_tasks": t.num_tasks}
                for name, t in tuned.items()
            },
        },
        "timings_s": timings,
        "results": results,
        "mean_log10_loss_curves": curves,
        "meta_training_history": {"learned_lr": controller.history, "lstm": lstm.history},
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learned_optimizers.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# Learned optimizers on noisy quadratics (MetaOpt-LR-v0, SGD)",
        "",
        f"Commit `{report['commit']}`; python {report['python']}, torch {report['torch']}, {report['torch_threads']} thread(s).",
        f"Test: {args.num_tasks} test-split tasks x seeds {args.seeds}, horizon {args.horizon}. "
        f"Learned LR controller: {len(controller.history)} meta-iterations in {timings['learned_lr_meta_train_s']:.0f} s "
        f"({args.meta_tasks} tasks each, truncation {args.truncation}); LSTM optimizer: {len(lstm.history)} "
        f"meta-iterations in {timings['lstm_meta_train_s']:.0f} s. Baselines' lr tuned on the train split "
        f"({args.tune_tasks} tasks, 13-point grid). Metric: final log10(L_T / L_0) (lower is better; 30 if diverged).",
        "",
        "| agent | log10 LT/L0 mean [95% CI] | IQM [95% CI] | win rate vs tuned constant | diverged % |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in sorted(results.items(), key=lambda item: item[1]["log10_final_loss_mean"]):
        win = "-" if s["win_rate_vs_tuned_constant"] is None else f"{100 * s['win_rate_vs_tuned_constant']:.0f}%"
        lines.append(
            f"| {name} | {s['log10_final_loss_mean']:.3f} [{s['log10_final_loss_mean_ci'][0]:.3f}, {s['log10_final_loss_mean_ci'][1]:.3f}] "
            f"| {s['log10_final_loss_iqm']:.3f} [{s['log10_final_loss_iqm_ci'][0]:.3f}, {s['log10_final_loss_iqm_ci'][1]:.3f}] "
            f"| {win} | {s['diverged_percent']:.1f} |"
        )
    lines += [
        "",
        "The LSTM optimizer replaces SGD (it is not an LR controller); it runs on the same tasks, initial points "
        "and minibatch gradients as the LR env, scored with the same metric.",
        "",
    ]
    (out / "learned_optimizers.md").write_text("\n".join(lines))
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        controller.save(str(Path(args.save_dir) / "learned_lr_controller.pt"))
        lstm.save(str(Path(args.save_dir) / "lstm_optimizer.pt"))
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
