"""``metaopt-train``: train an RL² (or PPO) agent on a batched MetaOpt env from Hydra configs.

    metaopt-train                                  # configs/train.yaml: RL² on quadratics, demo budget
    metaopt-train env=lr_mixture budget=reference  # compose other config groups
    metaopt-train agent.hyperparameters.n_epochs=8 seed=3
    metaopt-train --multirun seed=0,1,2            # a sweep (Hydra's launchers send it to a cluster)
    metaopt-train --multirun agent.hyperparameters.learning_rate=1e-3,3e-3 seed=0,1   # a run dir per job
    metaopt-train --multirun hydra/launcher=submitit_slurm hydra.launcher.partition=cpu seed=0,1,2
    metaopt-train env.kwargs.task_family=my_module:MyFamily   # a user's family, from the current directory
    metaopt-train 'env.kwargs.task_family="my_module:MyFamily?dim=8"'   # with arguments: quote the value

A user's task family ``module:Class[?key=value&...]`` (a subclass of the kind's base:
``LRTaskFamily``, ``StreamFamily``, ``ObjectiveFamily``) is imported from the current directory
(put first on ``sys.path``, as ``python -m`` does) or ``PYTHONPATH``, and passes the quick checks of
``metaopt_envs.check_task_family`` before training starts.

Checkpoints go to ``<out_dir>/checkpoints`` every ``budget.checkpoint_every``
steps; running the same command again resumes from the latest one (a killed
run continues where it stopped). TensorBoard logs go to ``<out_dir>/tb``;
``wandb.mode=offline`` adds wandb's SB3 integration without any network call.
With ``evaluate=true`` the trained agent is compared with the hand-designed
baselines (tuned on the training split) on held-out test tasks.

The composed config is checked before anything is built (:func:`check_config`): an unknown key,
an unknown algorithm, a hyperparameter the algorithm does not take, a value out of range or env
arguments the env refuses end the command with one line ``metaopt-train: error: ...`` and exit
code 2, before any directory is written.

Sweeps (``--multirun``) go through Hydra's launchers: the basic one (one job after the other), or
with ``pip install 'metaopt-envs[sweep]'`` ``hydra/launcher=submitit_local``, ``submitit_slurm`` or
``ray``. Every job trains in a run directory of its own (:func:`sweep_overrides`): a job of a sweep
over seed, env or agent only trains where the same single run would (``runs/<env>-<agent>-seed<seed>``),
one of a sweep over other keys in that name followed by its values of those keys
(``runs/lr_quadratic-rl2-seed0-agent.hyperparameters.learning_rate=0.001``). A sweep that would
train two jobs in one directory (a value given twice, or one ``out_dir=`` for every job) is refused.
With ``--config-dir`` (configs of your own) nothing is added: give each job its own ``out_dir``.

The training itself is :func:`agents.rl2.training.train` (import it from there, not from here).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, ListConfig, OmegaConf

from agents.rl2.training import CONFIG_DIR, algorithms, final_line, train

PROG = "metaopt-train"
FREE_FORM = ("env.kwargs", "agent.hyperparameters", "agent.policy_kwargs", "agent.reward_scale", "agent.kickstart")
"""Mappings whose keys are checked against the env or the algorithm, not against the shipped configs."""
SET_BY_TRAINING = {"self", "policy", "env", "seed", "device", "tensorboard_log", "policy_kwargs", "_init_setup_model"}
"""Constructor arguments of the algorithm that :func:`agents.rl2.training.build_model` sets itself."""
SET_BY_ALGORITHM = {"self", "observation_space", "action_space", "lr_schedule", "use_sde"}
"""Constructor arguments of the policy that the algorithm sets itself."""
WANDB_MODES = ("disabled", "offline", "online")
NAMED_BY_DEFAULT = ("seed", "env", "agent")
"""Overrides that the default ``out_dir`` (``runs/<env>-<agent>-seed<seed>``) names already."""
SWEEP_ITEM_SEP = "+"
"""Between the swept ``key=value`` items of a sweep job's run directory (not ``,``, which separates
``metaopt-bench --agents``)."""
SWEEP_EXTRA = "pip install 'metaopt-envs[sweep]'"
"""What installs the submitit and Ray launchers."""
_UNSET = object()


def fail(message: str) -> NoReturn:
    """The one-line error of the command-line contract: ``metaopt-train: error: ...`` on stderr, exit code 2."""
    text = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)
    sys.exit(2)


# ----------------------------------------------------------------------------- value checks
def _get(cfg: DictConfig, key: str) -> Any:
    """The resolved value at dotted ``key``, or ``_UNSET`` where it cannot be resolved here
    (``out_dir`` interpolates Hydra's runtime values, known only inside a Hydra run)."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True, default=_UNSET)
    except Exception:  # an interpolation that only resolves inside Hydra's run
        return _UNSET
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _int_at_least(minimum: int, optional: bool = False) -> Callable[[str, Any], str | None]:
    def check(key: str, value: Any) -> str | None:
        if optional and value is None:
            return None
        if not _is_int(value) or value < minimum:
            return f"{key} must be an int >= {minimum}{' or null' if optional else ''}, got {value!r}"
        return None

    return check


def _number(
    low: float, high: float | None = None, strict: bool = False, optional: bool = False
) -> Callable[[str, Any], str | None]:
    def check(key: str, value: Any) -> str | None:
        if optional and value is None:
            return None
        ok = _is_number(value) and (value > low if strict else value >= low) and (high is None or value <= high)
        if ok:
            return None
        bound = f"{'>' if strict else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        return f"{key} must be a number {bound}{' or null' if optional else ''}, got {value!r}"

    return check


def _bool(key: str, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{key} must be true or false, got {value!r}"


def _string(key: str, value: Any) -> str | None:
    return None if isinstance(value, str) and value else f"{key} must be a non-empty string, got {value!r}"


def _seeds(key: str, value: Any) -> str | None:
    if isinstance(value, ListConfig | list | tuple) and value and all(_is_int(s) and s >= 0 for s in value):
        return None
    return f"{key} must be a non-empty list of ints >= 0 such as [0,1], got {value!r}"


def _one_of(choices: Sequence[str]) -> Callable[[str, Any], str | None]:
    def check(key: str, value: Any) -> str | None:
        return None if value in choices else f"{key} must be one of {list(choices)}, got {value!r}"

    return check


TOP_LEVEL = {
    "seed": _int_at_least(0),
    "out_dir": _string,
    "progress_bar": _bool,
    "evaluate": _bool,
    "eval_num_tasks": _int_at_least(1),
    "eval_seeds": _seeds,
    "tune_tasks": _int_at_least(1),
    "wandb.mode": _one_of(WANDB_MODES),
    "wandb.project": _string,
    "env.num_envs": _int_at_least(1),
    "env.episodes_per_trial": _int_at_least(1, optional=True),
    "budget.total_timesteps": _int_at_least(1),
    "budget.checkpoint_every": _int_at_least(1),
    "agent.torch_threads": _int_at_least(1),
}
"""Checks of the shipped keys (a key the config lacks is reported by the key check, not here)."""

HYPERPARAMETERS = {
    "n_steps": _int_at_least(1, optional=True),
    "batch_size": _int_at_least(1),
    "n_epochs": _int_at_least(1),
    "learning_rate": _number(0, strict=True),
    "gamma": _number(0, 1),
    "gae_lambda": _number(0, 1),
    "clip_range": _number(0, strict=True),
    "clip_range_vf": _number(0, strict=True, optional=True),
    "ent_coef": _number(0),
    "vf_coef": _number(0),
    "max_grad_norm": _number(0, strict=True),
    "target_kl": _number(0, strict=True, optional=True),
    "normalize_advantage": _bool,
    "torch_threads": _int_at_least(1),
}
"""Checks of the PPO hyperparameters the configs set or users commonly override (from YAML: numbers, not schedules)."""


def constructor_arguments(cls: type, exclude: set[str]) -> list[str]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up the MRO
    (FastRecurrentPPO passes them on to RecurrentPPO)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names += [
            p.name
            for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in exclude and p.name not in names
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return sorted(names)


def _keys(node: Any, prefix: str = "") -> set[str]:
    """Dotted keys of a config mapping, not descending into :data:`FREE_FORM` mappings."""
    keys: set[str] = set()
    for key in node:
        path = f"{prefix}{key}"
        keys.add(path)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and path not in FREE_FORM and not child._is_missing() and not child._is_none():
            keys |= _keys(child, path + ".")
    return keys


def _hints(reference: DictConfig) -> set[str]:
    """Every dotted key of ``reference``, into the :data:`FREE_FORM` mappings too (for suggestions)."""
    keys = _keys(reference)
    for key in FREE_FORM:
        node = OmegaConf.select(reference, key, default=None)
        keys |= {f"{key}.{name!s}" for name in node} if isinstance(node, DictConfig) else set()
    return keys


def _suggestion(key: str, known: set[str]) -> str:
    leaf = key.rpartition(".")[2]
    matches = sorted(k for k in known if k.rpartition(".")[2] == leaf and k != key)
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


def check_keys(cfg: DictConfig, reference: DictConfig, hyperparameters: Sequence[str] = ()) -> None:
    """ValueError naming the first key of ``cfg`` that ``reference`` (the shipped configs with the same
    group choices) lacks, or the first one it has that ``cfg`` lacks; ``hyperparameters`` feed the suggestion."""
    given, known = _keys(cfg), _keys(reference)
    hints = _hints(reference) | {f"agent.hyperparameters.{name}" for name in hyperparameters}
    for key in sorted(given - known, key=lambda k: (k.count("."), k)):
        parent = key.rpartition(".")[0]
        siblings = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent and "." + k != key)
        where = f"a key of {parent}" if parent else "a top-level key"
        raise ValueError(f"{key} is not {where} (those are {', '.join(siblings)}){_suggestion(key, hints)}")
    for key in sorted(known - given):
        raise ValueError(f"{key} is required (the shipped configs set it), but the config has no such key")


def check_config(cfg: DictConfig, reference: DictConfig | None = None) -> int:
    """ValueError (or TypeError) naming the key, the value and what is allowed, unless ``cfg`` is a
    config :func:`agents.rl2.training.train` can run; checks everything before anything is built:
    the keys (against ``reference``, if given), the values, the algorithm, its policy and hyperparameters
    (against its constructor), and the env (a one-row core from ``env.id`` and ``env.kwargs``).
    Returns the core's decisions per episode."""
    import gymnasium as gym

    import metaopt_envs

    algos = algorithms()
    algo_name = _get(cfg, "agent.algo")
    algo = algos.get(algo_name) if isinstance(algo_name, str) else None
    allowed = constructor_arguments(algo, SET_BY_TRAINING) if algo is not None else []
    if reference is not None:
        check_keys(cfg, reference, allowed)
    for key, check in TOP_LEVEL.items():
        value = _get(cfg, key)
        if value is not _UNSET and (problem := check(key, value)):
            raise ValueError(problem)
    if algo is None:
        raise ValueError(f"agent.algo must be one of {sorted(algos)}, got {algo_name!r}")
    policy = _get(cfg, "agent.policy")
    if policy not in algo.policy_aliases:
        raise ValueError(f"agent.policy must be one of {sorted(algo.policy_aliases)} for {algo_name}, got {policy!r}")

    hyperparameters = _mapping(cfg, "agent.hyperparameters")
    for name, value in hyperparameters.items():
        key = f"agent.hyperparameters.{name}"
        if name not in allowed:
            raise ValueError(f"{key}: {algo.__name__} takes no argument {name!r}; its arguments are {allowed}")
        if name in HYPERPARAMETERS and (problem := HYPERPARAMETERS[name](key, value)):
            raise ValueError(problem)
    if hyperparameters.get("normalize_advantage", True) and hyperparameters.get("batch_size") == 1:
        raise ValueError(
            "agent.hyperparameters.batch_size must be >= 2 when normalize_advantage is true "
            "(advantages are normalized over a minibatch), got 1"
        )
    policy_arguments = constructor_arguments(algo.policy_aliases[policy], SET_BY_ALGORITHM)
    for name in _mapping(cfg, "agent.policy_kwargs"):
        if name not in policy_arguments:
            raise ValueError(
                f"agent.policy_kwargs.{name}: {policy} takes no argument {name!r}; its arguments are {policy_arguments}"
            )

    env_id = _get(cfg, "env.id")
    ids = sorted(i for i in gym.registry if str(i).startswith("MetaOpt-"))
    if env_id not in ids:
        raise ValueError(f"env.id must be one of {ids}, got {env_id!r}")
    kwargs = _mapping(cfg, "env.kwargs")
    try:
        core = metaopt_envs.make_core(
            env_id, num_envs=1, episodes_per_trial=_get(cfg, "env.episodes_per_trial"), **kwargs
        )
    except (ValueError, TypeError) as error:
        raise ValueError(f"env.kwargs {kwargs} of {env_id}: {error}") from None
    reward_scale = _mapping(cfg, "agent.reward_scale")
    if reward_scale:
        from agents.controllers.base import core_of
        from agents.rl2.reward_scale import family_scales

        family_scales(tuple(core_of(core).family.families()), reward_scale)
    decisions = int(core.num_decisions)
    if hyperparameters.get("n_steps") is None:
        n_steps = int(_get(cfg, "env.episodes_per_trial") or 1) * decisions
    else:
        n_steps = int(hyperparameters["n_steps"])
    if n_steps * int(_get(cfg, "env.num_envs")) < 2:
        raise ValueError(
            f"agent.hyperparameters.n_steps x env.num_envs must be >= 2 (the rollout buffer), got {n_steps} x "
            f"{_get(cfg, 'env.num_envs')}"
        )
    return decisions


def _mapping(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = _get(cfg, key)
    if node is None or node is _UNSET:
        return {}
    if not isinstance(node, DictConfig):
        raise ValueError(f"{key} must be a mapping, got {node!r}")
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


# ----------------------------------------------------------------------------- the command line
def _compose(overrides: list[str], config_name: str) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="train"):
            return compose(config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _composition_error(error: Exception, override: list[str], known: set[str]) -> str:
    """One line for Hydra's composition errors (its own messages span lines and suggest ``+key=``)."""
    from hydra.errors import MissingConfigException

    if isinstance(error, MissingConfigException) and error.options is not None:
        missing = error.missing_cfg_file or ""
        group = missing.rpartition("/")[0]
        given = next((o for o in override if o.lstrip("+~").partition("=")[0] == group), missing)
        where = "among Hydra's installed plugins" if group.startswith("hydra/") else f"in {CONFIG_DIR}"
        missing_launchers = group == "hydra/launcher" and not {"submitit_local", "ray"} <= set(error.options)
        extra = f" (submitit_local, submitit_slurm and ray come with {SWEEP_EXTRA})" if missing_launchers else ""
        return f"{given}: no such config {where}; {group} must be one of {sorted(error.options)}{extra}"
    text = str(error)
    if text.startswith("Could not override '"):
        key = text[len("Could not override '") :].partition("'")[0]
        given = next((o for o in override if o.partition("=")[0] == key), key)
        return f"{given}: {key} is not a key of the config{_suggestion(key, known)}"
    return text


def _split_sweeps(overrides: list[str]) -> list[list[str]]:
    """Every job's overrides of a ``--multirun`` sweep (Hydra's basic sweeper's expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def default_out_dir(config_name: str = "train") -> str:
    """The ``out_dir`` of the shipped config ``config_name``, uninterpolated."""
    container = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / f"{config_name}.yaml"), resolve=False)
    assert isinstance(container, dict)
    return str(container["out_dir"])


def sweep_overrides(overrides: list[str], config_name: str = "train") -> list[str]:
    """The overrides ``metaopt-train --multirun`` adds to ``overrides`` so that each job of the sweep
    trains in a run directory of its own.

    None when the sweep varies only :data:`NAMED_BY_DEFAULT` keys (its jobs train where the same single
    runs would) or sets ``out_dir`` itself. Otherwise each job's ``out_dir`` is the default followed by
    Hydra's ``job.override_dirname`` over the other swept keys only, e.g. ``seed=0,1
    agent.hyperparameters.learning_rate=1e-3,3e-3`` trains in
    ``runs/lr_quadratic-rl2-seed0-agent.hyperparameters.learning_rate=0.001`` and three more; items are
    joined by :data:`SWEEP_ITEM_SEP`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        task = [o for o in OverridesParser.create().parse_overrides(overrides) if not o.is_hydra_override()]
    except HydraException:  # precheck names the override that does not parse
        return []
    if any(o.key_or_group == "out_dir" for o in task):
        return []
    swept = {o.key_or_group for o in task if o.is_sweep_override()} - set(NAMED_BY_DEFAULT)
    if not swept:
        return []
    unnamed = sorted(({o.key_or_group for o in task} - swept) | {"out_dir"})
    return [
        f"out_dir='{default_out_dir(config_name)}-${{hydra:job.override_dirname}}'",
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(unnamed)}]",
        f"hydra.job.config.override_dirname.item_sep={SWEEP_ITEM_SEP}",
    ]


def check_sweep(overrides: list[str], jobs: list[list[str]]) -> None:
    """ValueError if two jobs of a sweep would train in one run directory: a configuration given twice,
    or one literal ``out_dir=`` for several jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    seen: dict[tuple[str, ...], int] = {}
    for number, job in enumerate(jobs):
        key = tuple(sorted(job))
        if key in seen:
            raise ValueError(
                f"the sweep runs one configuration twice (jobs #{seen[key]} and #{number}: {' '.join(job)}); "
                "a run directory belongs to one configuration, so give each value once"
            )
        seen[key] = number
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group == "out_dir" and not override.is_sweep_override() and len(jobs) > 1:
            value = str(override.value())
            if "${" not in value:
                raise ValueError(
                    f"{override.input_line}: all {len(jobs)} jobs of the sweep would train in one run directory; "
                    "leave out_dir out (each job then trains in a run directory named after its overrides), "
                    "sweep it too, or interpolate the swept keys (out_dir='sweeps/lr${agent.hyperparameters."
                    "learning_rate}')"
                )


def precheck(overrides: list[str], multirun: bool = False, config_name: str = "train") -> None:
    """Compose the config of every job the command runs and :func:`check_config` it; ValueError with
    one line for the first problem. Runs before Hydra creates any directory."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for override in overrides:
        try:
            OverridesParser.create().parse_overrides([override])
        except HydraException as error:
            raise ValueError(f"{override}: not a Hydra override key=value ({error})") from None
    jobs = [overrides]
    if multirun:
        try:
            jobs = _split_sweeps(overrides)
        except (HydraException, OmegaConfBaseException) as error:
            raise ValueError(str(error)) from None
        check_sweep(overrides, jobs)
    groups = {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()}
    for job in jobs:
        choices = [o for o in job if o.lstrip("+~").partition("=")[0] in groups]
        try:
            reference = _compose(choices, config_name)
        except (HydraException, OmegaConfBaseException) as error:
            raise ValueError(_composition_error(error, job, set())) from None
        try:
            cfg = _compose(job, config_name)
        except (HydraException, OmegaConfBaseException) as error:
            raise ValueError(_composition_error(error, job, _hints(reference))) from None
        check_config(cfg, reference)


_NO_JOB = ("help", "hydra_help", "cfg", "info", "shell_completion", "version", "experimental_rerun")


def _parser_error(message: str) -> NoReturn:
    unrecognized = message.partition("unrecognized arguments: ")[2].split()
    if any(not argument.startswith("-") for argument in unrecognized):
        message += " (options such as --multirun go before the overrides key=value)"
    fail(message)


def _use_cwd() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does (Hydra runs do not chdir)."""
    import os

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def main(argv: list[str] | None = None) -> None:
    """``metaopt-train ARGS``: Hydra's command line (``argv`` defaults to ``sys.argv[1:]``)."""
    import hydra
    from hydra._internal.utils import get_args_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    _use_cwd()  # user code (env.kwargs.task_family=my_module:MyFamily) imports from here, as with python -m
    parser = get_args_parser()  # Hydra's own: the same arguments, its errors in one line
    parser.error = _parser_error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    if not any(getattr(args, name, None) for name in _NO_JOB) and args.config_dir is None and args.config_path is None:
        config_name = args.config_name or "train"
        try:
            added = sweep_overrides(list(args.overrides), config_name) if args.multirun else []
            precheck([*args.overrides, *added], bool(args.multirun), config_name)
        except (ValueError, TypeError) as error:
            fail(str(error))
        argv += added  # options come first, so the added overrides go last

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def _main(cfg: DictConfig) -> None:
        try:  # again, cheaply: a run with --config-dir skipped the precheck
            check_config(cfg)
        except (ValueError, TypeError) as error:
            fail(str(error))
        result = train(cfg)
        print(final_line(result), flush=True)

    saved = sys.argv
    sys.argv = [saved[0], *argv]
    try:
        _main()
    finally:
        sys.argv = saved


def cli() -> None:
    """Console entry point (``metaopt-train``), Hydra-driven."""
    main()


if __name__ == "__main__":
    cli()
