"""``metaopt-bench``: compare agents on held-out tasks of each task family.

For each family: tune every requested baseline's learning rate on the
*training* split (a log grid, budget reported), then evaluate every agent on
the same test tasks (``--num-tasks`` per seed, ``--seeds``), and write
``results.json``, ``results.md`` and one PNG of loss curves and learning-rate
schedules per family to ``--out-dir``, with the commit, the config and the seeds.

    metaopt-bench --families quadratic,logistic --agents baselines --num-tasks 64 --seeds 0,1,2
    metaopt-bench --agents baselines,runs/rl2/model.zip,my_module:MyAgent \
        --episodes-per-trial 2 --model-env-kwargs '{"action_mode": "relative"}'   # an agent from metaopt-train

With ``--env-id MetaOpt-Ensemble-v0`` the families are stream families
(``switching_ar,regimes,real``), the baselines are the online-learning ones of
:mod:`agents.controllers.ensemble` (tuned on the training split where they have
hyperparameters) and the table reports the normalized MSE, the win rate against
tuned Fixed-Share and the share of the gap to the regime oracle each agent closes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from agents.controllers.lr import BASELINES
from agents.evaluation.lr import evaluate, load_agent, markdown_table, plot_curves, tune_baseline

TUNED = ("constant", "cosine", "step_decay", "exponential_decay", "warmup_cosine", "hypergradient")


def git_commit() -> str:
    """HEAD's commit of this repository (the results files record it), or ``"unknown"``."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_report(report: dict[str, Any], markdown: list[str], out_dir: Path, started: float) -> dict[str, Any]:
    """``results.json`` and ``results.md`` in ``out_dir``, with the wall time since ``started``."""
    report["wall_seconds"] = time.perf_counter() - started
    (out_dir / "results.json").write_text(json.dumps(report, indent=1))
    (out_dir / "results.md").write_text("\n".join(markdown))
    print(f"\nwrote {out_dir / 'results.md'} and results.json ({report['wall_seconds']:.0f} s)")
    return report


def build_agents(specs: list[str], env_id: str, env_kwargs: dict[str, Any], tune_tasks: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Agents by display name, and the tuning record of each tuned baseline."""
    agents: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    for spec in specs:
        if spec == "baselines":
            for name in TUNED:
                result = tune_baseline(name, env_id, env_kwargs, num_tasks=tune_tasks)
                tuning[name] = dataclasses.asdict(result)
                agents[f"{name} (tuned lr={result.best_lr:.3g})"] = load_agent(f"baseline:{name}?lr={result.best_lr}", env_kwargs)
            agents["random"] = load_agent("baseline:random", env_kwargs)
            if env_kwargs.get("task_family") == "quadratic" and env_kwargs.get("inner_optimizer", "sgd") == "sgd":
                agents["oracle: analytic optimal constant"] = load_agent("baseline:oracle", env_kwargs)
        elif spec.startswith("baseline:") and "?" not in spec and spec.split(":", 1)[1] in TUNED:
            name = spec.split(":", 1)[1]
            result = tune_baseline(name, env_id, env_kwargs, num_tasks=tune_tasks)
            tuning[name] = dataclasses.asdict(result)
            agents[f"{name} (tuned lr={result.best_lr:.3g})"] = load_agent(f"{spec}?lr={result.best_lr}", env_kwargs)
        else:
            agents[spec] = load_agent(spec, env_kwargs)
    return agents, tuning


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="MetaOpt-LR-v0")
    parser.add_argument("--env-kwargs", default="{}", help="JSON of env arguments (split is set to test)")
    parser.add_argument("--families", default=None,
                        help="comma-separated task families (LR: quadratic,logistic,sinusoid,sklearn; "
                             "Ensemble: switching_ar,regimes,real)")
    parser.add_argument("--agents", default="baselines", help="comma-separated: baselines, baseline:NAME[?lr=..], model.zip, module:Class")
    parser.add_argument("--num-tasks", type=int, default=64, help="test tasks per seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tune-tasks", type=int, default=64, help="training tasks per grid point when tuning")
    parser.add_argument("--model-env-kwargs", default="{}",
                        help='JSON of env arguments for saved models only, e.g. {"action_mode": "relative"} for the RL² configs')
    parser.add_argument("--episodes-per-trial", type=int, default=1, help="inner episodes per task (RL² agents need their training value)")
    parser.add_argument("--sample-models", action="store_true",
                        help="also evaluate every saved model with sampled (not mean) actions (Ensemble and HPO)")
    parser.add_argument("--out-dir", default="results/bench")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_kwargs = json.loads(args.env_kwargs)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    specs = [s for s in args.agents.split(",") if s]
    ensemble, hpo = args.env_id == "MetaOpt-Ensemble-v0", args.env_id == "MetaOpt-HPO-v0"
    if ensemble:
        from agents.controllers.ensemble import ENSEMBLE_BASELINES as known
    elif hpo:
        from agents.controllers.hpo import HPO_BASELINES as known
    else:
        known = BASELINES
    for spec in specs:
        if spec.startswith("baseline:") and spec.split(":", 1)[1].split("?")[0] not in known:
            parser.error(f"unknown baseline in {spec!r}; choose from {sorted(known)}")
    if ensemble or hpo:
        from agents.evaluation.suites import SUITES

        families = args.families or SUITES[args.env_id].default_families
    else:
        families = args.families or "quadratic,logistic,sinusoid,sklearn"

    report: dict[str, Any] = {
        "commit": git_commit(), "env_id": args.env_id, "env_kwargs": base_kwargs, "seeds": list(seeds),
        "num_tasks": args.num_tasks, "episodes_per_trial": args.episodes_per_trial, "torch_threads": args.threads,
        "families": {},
    }
    if ensemble or hpo:
        return suite_main(args, report, out_dir, base_kwargs, seeds, specs, families, started)
    markdown = [f"# metaopt-bench: {args.env_id}", "",
                f"commit `{report['commit']}`; {args.num_tasks} test tasks x seeds {list(seeds)} per family; "
                f"env kwargs `{json.dumps(base_kwargs)}`; baselines tuned on the train split "
                f"({args.tune_tasks} tasks per grid point). Return = log(L0/LT) of the last inner episode; "
                "win rate = share of tasks with a lower final loss than the tuned constant.", ""]
    for family in [f for f in families.split(",") if f]:
        env_kwargs = {**base_kwargs, "task_family": family}
        agents, tuning = build_agents(specs, args.env_id, env_kwargs, args.tune_tasks)
        reference = next((name for name in agents if name.startswith("constant")), None)
        model_kwargs = json.loads(args.model_env_kwargs)
        per_agent = {name: model_kwargs for name in agents if name.endswith(".zip")}
        summaries, records = evaluate(
            agents, args.env_id, env_kwargs, args.num_tasks, seeds, args.episodes_per_trial, reference, per_agent
        )
        plot_path = out_dir / f"curves_{family}.png"
        plot_curves(records, str(plot_path), title=f"({family}, test split)")
        report["families"][family] = {
            "summaries": {k: dataclasses.asdict(v) for k, v in summaries.items()},
            "tuning": tuning,
            "plot": plot_path.name,
        }
        markdown += [f"## {family}", "", markdown_table(summaries, reference), "", f"![{family}]({plot_path.name})", ""]
        print(f"\n## {family}\n\n{markdown_table(summaries, reference)}", flush=True)
    return write_report(report, markdown, out_dir, started)


def suite_main(
    args: argparse.Namespace, report: dict[str, Any], out_dir: Path, base_kwargs: dict[str, Any],
    seeds: tuple[int, ...], specs: list[str], families: str, started: float,
) -> dict[str, Any]:
    """The Ensemble and HPO families (:mod:`agents.evaluation.suites`): one table and one plot per task family."""
    from agents.evaluation.suites import SUITES, evaluate_suite

    suite = SUITES[args.env_id]
    markdown = [f"# metaopt-bench: {args.env_id}", "",
                f"commit `{report['commit']}`; {args.num_tasks} test tasks x seeds {list(seeds)} per family; "
                f"env kwargs `{json.dumps(base_kwargs)}`; baselines with hyperparameters tuned on the train split "
                f"({args.tune_tasks} tasks per grid point). {suite.description}", ""]
    model_kwargs = json.loads(args.model_env_kwargs)
    trial = args.episodes_per_trial if args.episodes_per_trial > 1 else None
    for family in [f for f in families.split(",") if f]:
        env_kwargs = {**base_kwargs, suite.family_argument: family}
        agents, tuning = suite.build(specs, env_kwargs, args.tune_tasks)
        if args.sample_models:
            from agents.evaluation.rollout import SampledActions

            agents.update({f"{name} (sampled actions)": SampledActions(agent) for name, agent in list(agents.items())
                           if name.endswith(".zip")})
        per_agent = {name: model_kwargs for name in agents if ".zip" in name}
        plot_path = out_dir / f"{suite.plot_prefix}_{family}.png"
        summaries, table = evaluate_suite(
            suite, agents, env_kwargs, args.num_tasks, seeds, trial, per_agent, str(plot_path), f"({family}, test split)"
        )
        report["families"][family] = {"summaries": summaries, "tuning": tuning, "plot": plot_path.name}
        markdown += [f"## {family}", "", table, "", f"![{family}]({plot_path.name})", ""]
        print(f"\n## {family}\n\n{table}", flush=True)
    return write_report(report, markdown, out_dir, started)


def cli() -> None:
    """Console entry point (``metaopt-bench``)."""
    main()


if __name__ == "__main__":
    cli()
