"""Learned optimizers on MetaOpt-LR-v0 task families, beside the hand-designed controllers.

By default on the noisy quadratics; ``--train-families`` / ``--eval-families`` pick others, e.g. the
realistic suite (meta-train on two architectures, evaluate on their held-out test splits and on a
third, held-out architecture).

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

Both are meta-trained on the training split of ``--train-families`` (several: cycled, one
family per meta-iteration) and evaluated on the test split of each of ``--eval-families``
(default: the training families); the baselines are tuned on each evaluated family's own
training split (``--tune-tasks`` tasks per grid point), the oracle runs on ``quadratic`` only.
Test tasks: ``--num-tasks`` (64) per seed x ``--seeds`` (0 1), horizon ``--horizon`` (50),
SGD. Metric: final ``log10(L_T / L_0)`` per task (``log10(1e30)`` if the run
diverged), mean and IQM with percentile-bootstrap 95% CIs, win rate against the
tuned constant. Writes ``<out-dir>/<--name>.{json,md}`` (``learned_optimizers``) and, with several
evaluated families, ``<out-dir>/<--name>_curves.png``.

    python benchmarks/learned_lr_controller.py                       # ~1-2 min on one core
    python benchmarks/learned_lr_controller.py --lr-iterations 20 --lstm-iterations 10 --out-dir /tmp/lo
    python benchmarks/learned_lr_controller.py --train-families digits_convnet mnist1d_mlp \
        --eval-families digits_convnet mnist1d_mlp mnist1d_conv --name learned_optimizers_realistic \
        --lr-iterations 60 --lstm-iterations 30 --meta-tasks 16 --lstm-meta-tasks 4 \
        --validation-tasks 16 --tune-tasks 16                     # ~15 min on one core

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
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agents.controllers.lr import ConstantLR, HypergradientLR, QuadraticOracleLR  # noqa: E402
from agents.evaluation.lr import evaluate, tune_baseline  # noqa: E402
from agents.evaluation.report import cpu_model, git_commit  # noqa: E402
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


LSTM_NAME = "LSTM optimizer (Andrychowicz et al. 2016, meta-trained)"
CONTROLLER_NAME = "learned LR controller (MLP, meta-trained)"


def evaluate_family(
    name: str, controller: LearnedLRController, lstm: CoordinatewiseLSTMOptimizer, args: argparse.Namespace
) -> dict[str, Any]:
    """Tuned baselines, the controller (through the harness) and the LSTM (same tasks) on ``name``'s test split."""
    family = make_task_family(name)
    env_kwargs = {"task_family": name, "horizon": args.horizon, "inner_optimizer": "sgd"}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    tuned = {
        baseline: tune_baseline(baseline, "MetaOpt-LR-v0", env_kwargs, num_tasks=args.tune_tasks)
        for baseline in ("constant", "hypergradient")
    }
    timings["tuning_s"] = time.perf_counter() - start
    constant_name = f"constant (tuned lr={tuned['constant'].best_lr:.3g})"
    agents: dict[str, Any] = {
        constant_name: ConstantLR(lr=tuned["constant"].best_lr),
        f"hypergradient (tuned lr={tuned['hypergradient'].best_lr:.3g})": HypergradientLR(
            lr=tuned["hypergradient"].best_lr
        ),
    }
    if name == "quadratic":
        agents["oracle: analytic optimal constant"] = QuadraticOracleLR()
    agents[CONTROLLER_NAME] = controller
    start = time.perf_counter()
    _, records = evaluate(
        agents, env_kwargs=env_kwargs, num_tasks=args.num_tasks, seeds=tuple(args.seeds), reference=constant_name
    )
    timings["evaluation_s"] = time.perf_counter() - start
    finals = {agent: np.concatenate([r.log10_final_loss for r in recs]) for agent, recs in records.items()}
    start = time.perf_counter()
    lstm_curves, lstm_final = [], []
    for seed in args.seeds:
        curves, final = lstm.optimize(harness_problems(family, args.num_tasks, seed), args.horizon, family)
        lstm_curves.append(curves)
        lstm_final.append(final)
    timings["lstm_evaluation_s"] = time.perf_counter() - start
    finals[LSTM_NAME] = np.concatenate(lstm_final)
    reference = finals[constant_name]
    curves_out = {agent: np.mean([r.loss_curve for r in recs], axis=0).tolist() for agent, recs in records.items()}
    with np.errstate(divide="ignore"):
        losses = np.concatenate(lstm_curves)
        lstm_ratio = np.log10(np.clip(losses / losses[:, :1], 1e-30, 1e30))
    curves_out[LSTM_NAME] = lstm_ratio[:, 1:].mean(0).tolist()
    return {
        "env_kwargs": env_kwargs,
        "held_out_architecture": name not in args.train_families,
        "tuning": {
            baseline: {"best_lr": t.best_lr, "grid_size": len(t.grid), "num_tasks": t.num_tasks}
            for baseline, t in tuned.items()
        },
        "results": {agent: summary(final, reference) for agent, final in finals.items()},
        "mean_log10_loss_curves": curves_out,
        "timings_s": timings,
    }


def plot(families: dict[str, dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    figure = Figure(figsize=(5 * len(families), 4))
    axes = np.atleast_1d(figure.subplots(1, len(families)))
    for axis, (name, report) in zip(axes, families.items()):
        for agent, curve in report["mean_log10_loss_curves"].items():
            axis.plot(np.arange(1, len(curve) + 1), np.clip(curve, -10, 3), label=agent)
        held_out = " (held-out architecture)" if report["held_out_architecture"] else ""
        axis.set(xlabel="inner step", ylabel="mean log10(L_t / L_0)", title=f"{name}{held_out}, test split")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-families", nargs="+", default=["quadratic"], help="meta-training families (cycled)")
    parser.add_argument("--eval-families", nargs="+", default=None, help="test families (default: the training ones)")
    parser.add_argument("--name", default="learned_optimizers", help="results file stem in --out-dir")
    parser.add_argument("--lr-iterations", type=int, default=288, help="meta-iterations of the LR controller")
    parser.add_argument("--lstm-iterations", type=int, default=156, help="meta-iterations of the LSTM optimizer")
    parser.add_argument("--meta-tasks", type=int, default=32, help="training problems per meta-iteration")
    parser.add_argument("--lstm-meta-tasks", type=int, default=None, help="the LSTM's (default: --meta-tasks)")
    parser.add_argument("--truncation", type=int, default=10)
    parser.add_argument("--lr-meta-lr", type=float, default=3e-3)
    parser.add_argument("--lstm-meta-lr", type=float, default=3e-3)
    parser.add_argument("--validation-tasks", type=int, default=64, help="training-split tasks per family")
    parser.add_argument("--validate-every", type=int, default=10, help="meta-iterations between validations")
    parser.add_argument("--num-tasks", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--tune-tasks", type=int, default=64)
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "benchmarks" / "results"))
    parser.add_argument("--save-dir", default=None, help="also save the trained models here")
    args = parser.parse_args(argv)
    args.eval_families = args.eval_families or list(args.train_families)
    lstm_meta_tasks = args.lstm_meta_tasks or args.meta_tasks
    torch.set_num_threads(1)
    command = "python benchmarks/learned_lr_controller.py " + " ".join(sys.argv[1:] if argv is None else argv)

    train_families = [make_task_family(name) for name in args.train_families]
    keys = rng.keys_from_seeds(torch.arange(args.validation_tasks) + 777_777)
    validation = [sample_problems(family, keys, "train") for family in train_families]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    controller = LearnedLRController(horizon=args.horizon, seed=0)
    controller.meta_train(
        train_families,
        iterations=args.lr_iterations,
        num_tasks=args.meta_tasks,
        horizon=args.horizon,
        truncation=args.truncation,
        meta_lr=args.lr_meta_lr,
        validation=validation,
        validate_every=args.validate_every,
    )
    timings["learned_lr_meta_train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    lstm = CoordinatewiseLSTMOptimizer(seed=0)
    lstm.meta_train(
        train_families,
        iterations=args.lstm_iterations,
        num_tasks=lstm_meta_tasks,
        horizon=args.horizon,
        truncation=args.truncation,
        meta_lr=args.lstm_meta_lr,
        validation=validation,
        validate_every=args.validate_every,
    )
    timings["lstm_meta_train_s"] = time.perf_counter() - start

    families = {}
    for name in args.eval_families:
        families[name] = evaluate_family(name, controller, lstm, args)
        print(f"[{name}] done: {families[name]['timings_s']}", flush=True)

    budget = {
        "learned_lr": {
            "iterations": len(controller.history),
            "meta_tasks": args.meta_tasks,
            "truncation": args.truncation,
            "meta_lr": args.lr_meta_lr,
            "inner_steps": len(controller.history) * args.meta_tasks * args.horizon,
        },
        "lstm": {
            "iterations": len(lstm.history),
            "meta_tasks": lstm_meta_tasks,
            "truncation": args.truncation,
            "meta_lr": args.lstm_meta_lr,
            "inner_steps": len(lstm.history) * lstm_meta_tasks * args.horizon,
        },
        "validation_tasks_per_family": args.validation_tasks,
    }
    report: dict[str, Any] = {
        "command": command,
        "commit": git_commit(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "train_families": args.train_families,
        "eval_families": args.eval_families,
        "test": {"num_tasks": args.num_tasks, "seeds": args.seeds, "split": "test", "horizon": args.horizon},
        "budget": budget,
        "timings_s": timings,
        "meta_training_history": {"learned_lr": controller.history, "lstm": lstm.history},
    }
    if args.eval_families == ["quadratic"]:  # the original layout of learned_optimizers.json
        only = families["quadratic"]
        report["env_kwargs"] = only["env_kwargs"]
        report["budget"]["tuning"] = only["tuning"]
        report["timings_s"].update(only["timings_s"])
        report["results"] = only["results"]
        report["mean_log10_loss_curves"] = only["mean_log10_loss_curves"]
    else:
        report["families"] = families
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    title = "noisy quadratics" if args.eval_families == ["quadratic"] else ", ".join(args.eval_families)
    lines = [
        f"# Learned optimizers on {title} (MetaOpt-LR-v0, SGD)",
        "",
        f"`{command}`",
        "",
        f"Commit `{report['commit']}`; {report['cpu']}; python {report['python']}, torch {report['torch']}, "
        f"{report['torch_threads']} thread(s).",
        f"Meta-trained on the train split of {', '.join(args.train_families)}; test: {args.num_tasks} test-split "
        f"tasks x seeds {args.seeds} per family, horizon {args.horizon}. "
        f"Learned LR controller: {len(controller.history)} meta-iterations in {timings['learned_lr_meta_train_s']:.0f} s "
        f"({args.meta_tasks} tasks each, truncation {args.truncation}); LSTM optimizer: {len(lstm.history)} "
        f"meta-iterations in {timings['lstm_meta_train_s']:.0f} s ({lstm_meta_tasks} tasks each). Baselines' lr "
        f"tuned on each family's train split ({args.tune_tasks} tasks, 13-point grid). Metric: final "
        "log10(L_T / L_0) (lower is better; 30 if diverged).",
        "",
        "| family | agent | log10 LT/L0 mean [95% CI] | IQM [95% CI] | win rate vs tuned constant | diverged % |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, family_report in families.items():
        label = f"{name} (held-out architecture)" if family_report["held_out_architecture"] else name
        results = family_report["results"]
        for agent, s in sorted(results.items(), key=lambda item: item[1]["log10_final_loss_mean"]):
            win = "-" if s["win_rate_vs_tuned_constant"] is None else f"{100 * s['win_rate_vs_tuned_constant']:.0f}%"
            lines.append(
                f"| {label} | {agent} | {s['log10_final_loss_mean']:.3f} [{s['log10_final_loss_mean_ci'][0]:.3f}, "
                f"{s['log10_final_loss_mean_ci'][1]:.3f}] | {s['log10_final_loss_iqm']:.3f} "
                f"[{s['log10_final_loss_iqm_ci'][0]:.3f}, {s['log10_final_loss_iqm_ci'][1]:.3f}] "
                f"| {win} | {s['diverged_percent']:.1f} |"
            )
    lines += [
        "",
        "The LSTM optimizer replaces SGD (it is not an LR controller); it runs on the same tasks, initial points "
        "and minibatch gradients as the LR env, scored with the same metric.",
        "",
    ]
    if len(families) > 1:
        plot(families, out / f"{args.name}_curves.png")
        lines += [f"![mean log10 loss curves]({args.name}_curves.png)", ""]
    (out / f"{args.name}.md").write_text("\n".join(lines))
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        controller.save(str(Path(args.save_dir) / "learned_lr_controller.pt"))
        lstm.save(str(Path(args.save_dir) / "lstm_optimizer.pt"))
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
