"""``metaopt-bench``: compare agents on held-out tasks of each task family.

For each family: tune every requested baseline's hyperparameters on the
*training* split (a grid, budget reported), then evaluate every agent on
the same test tasks (``--num-tasks`` per seed, ``--seeds``), and write
``results.json``, ``results.md`` and one PNG of curves per family to
``--out-dir``, with the commit, the config and the seeds.

    metaopt-bench --families quadratic,logistic --agents baselines --num-tasks 64 --seeds 0,1,2
    metaopt-bench --agents baselines,runs/rl2/model.zip,my_module:MyAgent \
        --episodes-per-trial 2 --model-env-kwargs '{"action_mode": "relative"}'   # an agent from metaopt-train
    metaopt-bench --env-id MetaOpt-Ensemble-v0 --families switching_ar   # or MetaOpt-HPO-v0 --families branin

Each env id has one evaluation suite (:mod:`agents.evaluation.suites`): its task
families, its baselines (learning-rate schedules; online-learning weights; search
methods), its table (final loss; normalized MSE and the gap to the regime oracle;
simple regret and time per suggestion) and its plots.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agents.evaluation.report import benchmark
from agents.evaluation.suites import SUITES, get_suite


def _json_object(parser: argparse.ArgumentParser, flag: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        parser.error(f"{flag} must be a JSON object: {error}")
    if not isinstance(value, dict):
        parser.error(f"{flag} must be a JSON object, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="MetaOpt-LR-v0", help=f"one of {', '.join(SUITES)}")
    parser.add_argument("--env-kwargs", default="{}", help="JSON of env arguments (split is set to test)")
    parser.add_argument(
        "--families",
        default=None,
        help="comma-separated task families (default: the suite's; LR: quadratic,logistic,sinusoid,sklearn; "
        "Ensemble: switching_ar,regimes,real; HPO: branin,hartmann3,hartmann6,gp,sklearn)",
    )
    parser.add_argument(
        "--agents",
        default="baselines",
        help="comma-separated: baselines, baseline:NAME[?key=value&...], model.zip, module:Class",
    )
    parser.add_argument("--num-tasks", type=int, default=64, help="test tasks per seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tune-tasks", type=int, default=64, help="training tasks per grid point when tuning")
    parser.add_argument(
        "--model-env-kwargs",
        default="{}",
        help='JSON of env arguments for saved models only, e.g. {"action_mode": "relative"} for the RL² configs',
    )
    parser.add_argument(
        "--episodes-per-trial",
        type=int,
        default=None,
        help="inner episodes per RL² trial (give a saved RL² agent its training value; default: plain episodes)",
    )
    parser.add_argument(
        "--sample-models", action="store_true", help="also evaluate every saved model with sampled (not mean) actions"
    )
    parser.add_argument("--out-dir", default="results/bench")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        suite = get_suite(args.env_id)
    except ValueError as error:
        parser.error(str(error))
    base_kwargs = _json_object(parser, "--env-kwargs", args.env_kwargs)
    model_kwargs = _json_object(parser, "--model-env-kwargs", args.model_env_kwargs)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    specs = [s for s in args.agents.split(",") if s]
    for spec in specs:
        try:
            suite.check_spec(spec)
        except ValueError as error:
            parser.error(str(error))
    families = [f for f in args.families.split(",") if f] if args.families else list(suite.default_families)

    out_dir = Path(args.out_dir)
    report = benchmark(
        suite,
        families,
        specs,
        base_kwargs,
        args.num_tasks,
        seeds,
        args.tune_tasks,
        args.episodes_per_trial,
        out_dir,
        model_kwargs,
        args.sample_models,
        args.threads,
        on_family=lambda family, table: print(f"\n## {family}\n\n{table}", flush=True),
    )
    print(f"\nwrote {out_dir / 'results.md'} and results.json ({report['wall_seconds']:.0f} s)")
    return report


def cli() -> None:
    """Console entry point (``metaopt-bench``)."""
    main()


if __name__ == "__main__":
    cli()
