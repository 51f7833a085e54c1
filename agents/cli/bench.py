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
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from agents.evaluation.suites import SUITES, Suite, get_suite

PROG = "metaopt-bench"


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is the one line ``metaopt-bench: error: ...`` (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r} ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated ints such as 0,1,2, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"must not repeat a seed, got {text!r}")
    return seeds


def _names(text: str) -> list[str]:
    """Split at the commas outside parentheses: ``a,m:A?lr=grid(0.1,1)`` -> ``["a", "m:A?lr=grid(0.1,1)"]``."""
    names, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth <= 0:
            names.append(current)
            current = ""
        else:
            current += char
    return [name for name in [*names, current] if name]


def use_cwd() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does, so that ``module:Class``
    specs (agents and task families) import the user's modules from where the command is run."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``metaopt-bench`` (types check each value on its own)."""
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="MetaOpt-LR-v0", help=f"one of {', '.join(SUITES)}")
    p.add_argument("--env-kwargs", default={}, type=_json_object, help="JSON of env arguments (split is set to test)")
    p.add_argument(
        "--families",
        default=None,
        type=_names,
        help="comma-separated task families (default: the suite's; LR: quadratic,logistic,sinusoid,sklearn; "
        "Ensemble: switching_ar,regimes,real; HPO: branin,hartmann3,hartmann6,gp,sklearn), or a user's "
        "family module:Class[?key=value&...] (a subclass of the kind's base, imported from the current "
        "directory or PYTHONPATH); a task_family in --env-kwargs is used when --families is not given",
    )
    p.add_argument(
        "--agents",
        default=["baselines"],
        type=_names,
        help="comma-separated: baselines, baseline:NAME[?key=value&...], model.zip, or a user's "
        "module:Class[?key=value&...] (imported from the current directory or PYTHONPATH; built with "
        "lr_range if it takes it, as the baselines; a value grid(v1,v2,...) is tuned on the training "
        "split, e.g. 'my_agents:MyAgent?lr=grid(0.01,0.1,1)')",
    )
    p.add_argument("--num-tasks", type=_int_at_least(1), default=64, help="test tasks per seed")
    p.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="comma-separated evaluation seeds")
    p.add_argument("--tune-tasks", type=_int_at_least(1), default=64, help="training tasks per grid point when tuning")
    p.add_argument(
        "--model-env-kwargs",
        default={},
        type=_json_object,
        help='JSON of env arguments for saved models only, e.g. {"action_mode": "relative"} for the RL² configs',
    )
    p.add_argument(
        "--episodes-per-trial",
        type=_int_at_least(1),
        default=None,
        help="inner episodes per RL² trial (give a saved RL² agent its training value; default: plain episodes)",
    )
    p.add_argument(
        "--sample-models", action="store_true", help="also evaluate every saved model with sampled (not mean) actions"
    )
    p.add_argument(
        "--trust-model",
        action="store_true",
        help="load saved models with SB3's own loader, which unpickles the file: only for models you made "
        "yourself, e.g. with custom classes in policy_kwargs (default: models load without running code "
        "from the file)",
    )
    p.add_argument("--out-dir", default="results/bench")
    p.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads")
    return p


def check_agents(
    suite: Suite,
    specs: Sequence[str],
    env_kwargs: dict[str, Any],
    trust_model: bool = False,
    episodes_per_trial: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> None:
    """ValueError, starting with ``--agents``, unless every spec names an agent that can be built:
    the form (:mod:`agents.evaluation.specs`), the baseline and its arguments, the model file, the class;
    without ``trust_model``, a model whose pickled entries cannot be rebuilt safely (naming the entry);
    a model without a run spec whose observations do not have the shape the env gives it with
    ``episodes_per_trial`` and ``model_kwargs`` (a model with a spec runs with the settings it records)."""
    from agents.evaluation.specs import parse_agent_spec
    from agents.rl2.runs import needs_trust, read_spec

    if not specs:
        raise ValueError("--agents: no agent given; give baselines, baseline:NAME, path/to/model.zip or module:Class")
    for spec in specs:
        try:
            suite.check_spec(spec)
            if spec == "baselines":
                continue
            parsed = parse_agent_spec(spec)
            if parsed.kind == "model":
                path = Path(parsed.path)
                if path.is_dir():  # a run directory: its model.zip
                    path = path / "model.zip"
                if not path.is_file():
                    raise ValueError(f"agent spec {spec!r}: no such model file ({path.resolve()})")
                if not zipfile.is_zipfile(path):
                    raise ValueError(f"agent spec {spec!r}: {path} is not a saved SB3 model (not a zip file)")
                refusal = None if trust_model else needs_trust(parsed.path)
                if refusal is not None:
                    raise ValueError(
                        f"agent spec {spec!r}: the model's data entry {refusal.entry!r} {refusal.problem}; "
                        "pass --trust-model to unpickle it (only for a model you made yourself)"
                    )
                if read_spec(parsed.path) is None:
                    _check_model_shape(
                        suite, spec, str(parsed.path), env_kwargs, trust_model, episodes_per_trial, model_kwargs or {}
                    )
            else:  # a baseline with its arguments, or a user's class: cheap to build here, before any tuning
                suite.load_agent(spec, env_kwargs)
        except (ValueError, TypeError) as error:
            raise ValueError(f"--agents: {error}") from None


def _check_model_shape(
    suite: Suite,
    spec: str,
    path: str,
    env_kwargs: dict[str, Any],
    trust_model: bool,
    episodes_per_trial: int | None,
    model_kwargs: dict[str, Any],
) -> None:
    """ValueError unless the model ``spec`` (saved without a run spec) observes the shape the env gives it."""
    import metaopt_envs
    from agents.evaluation.specs import load_model
    from agents.evaluation.suites import check_observation_shape

    kwargs = {"split": "test", **env_kwargs, **model_kwargs}
    core = metaopt_envs.make_core(suite.env_id, num_envs=1, episodes_per_trial=episodes_per_trial, **kwargs)
    check_observation_shape(spec, load_model(path, trust_model=trust_model), core, suite.env_id, episodes_per_trial)


def check_env(
    suite: Suite,
    families: Sequence[str],
    env_kwargs: dict[str, Any],
    model_kwargs: dict[str, Any],
    episodes_per_trial: int | None,
) -> None:
    """ValueError, naming the argument, unless every family is registered and a one-row core of each
    family builds from ``--env-kwargs`` (and ``--model-env-kwargs``) with ``--episodes-per-trial``."""
    import metaopt_envs
    from metaopt_envs.core.registry import is_class_spec, task_family_names

    if not families:
        raise ValueError("--families: no family given")
    kind = suite.kind
    known = task_family_names(kind)
    for family in families:
        if family not in known and not is_class_spec(family):
            raise ValueError(
                f"--families: unknown {suite.env_id} task family {family!r}; choose from {list(known)} "
                "or give a user's family as module:Class"
            )
    given = env_kwargs.get(suite.family_argument)
    if given is not None and any(
        family != given for family in families
    ):  # --families sets it: a different value would be ignored
        raise ValueError(
            f"--env-kwargs: {suite.family_argument}={given!r} contradicts --families {','.join(families)}; "
            "choose the families with --families only"
        )
    checks = [("--env-kwargs", env_kwargs)]
    if model_kwargs:
        checks.append(("--model-env-kwargs", {**env_kwargs, **model_kwargs}))
    for flag, kwargs in checks:
        for family in families:
            try:
                metaopt_envs.make_core(
                    suite.env_id,
                    num_envs=1,
                    episodes_per_trial=episodes_per_trial,
                    **{"split": "test", **kwargs, suite.family_argument: family},
                )
            except (ValueError, TypeError) as error:
                if str(error).startswith(f"{suite.family_argument} {family!r}:"):  # a user's family itself
                    raise ValueError(f"--families: {error}") from None
                raise ValueError(f"{flag}: {json.dumps(kwargs)} with task family {family!r}: {error}") from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser()
    args = p.parse_args(argv)
    use_cwd()
    try:  # every check before any tuning: a bad value fails in seconds, not after the first family
        suite = get_suite(args.env_id)
    except ValueError as error:
        p.error(f"--env-id: {error}")
    families = args.families
    if families is None:  # the family --env-kwargs names (a user's module:Class too), else the suite's
        given = args.env_kwargs.get(suite.family_argument)
        families = [given] if isinstance(given, str) else list(suite.default_families)
    try:
        check_env(suite, families, args.env_kwargs, args.model_env_kwargs, args.episodes_per_trial)
        check_agents(
            suite,
            args.agents,
            {**args.env_kwargs, suite.family_argument: families[0]},
            args.trust_model,
            args.episodes_per_trial,
            args.model_env_kwargs,
        )
    except ValueError as error:
        p.error(str(error))

    from agents.evaluation.report import benchmark

    out_dir = Path(args.out_dir)
    report = benchmark(
        suite,
        families,
        args.agents,
        args.env_kwargs,
        args.num_tasks,
        args.seeds,
        args.tune_tasks,
        args.episodes_per_trial,
        out_dir,
        args.model_env_kwargs,
        args.sample_models,
        args.threads,
        on_family=lambda family, table: print(f"\n## {family}\n\n{table}", flush=True),
        trust_model=args.trust_model,
        command=["metaopt-bench", *(sys.argv[1:] if argv is None else argv)],
    )
    print(f"\nresults: {out_dir / 'results.md'} (and results.json, plots in {out_dir}; {report['wall_seconds']:.0f} s)")
    return report


def cli() -> None:
    """Console entry point (``metaopt-bench``)."""
    main()


if __name__ == "__main__":
    cli()
