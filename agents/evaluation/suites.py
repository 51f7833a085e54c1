"""One evaluation Suite per environment family, found by env id.

A :class:`Suite` bundles, for one env id, the default task families, the agents it
builds from specs (:mod:`agents.evaluation.specs`; baselines with hyperparameters are
tuned on the *training* split), the evaluator (every agent on the same held-out tasks,
through the one loop :func:`agents.evaluation.rollout.rollout`) with its reference
agents, the table and the plot. ``metaopt-bench`` and ``metaopt-train`` never branch on
the env id: they call :func:`get_suite`.

    suite = get_suite("MetaOpt-LR-v0")
    agents, tuning = suite.build_agents(["baselines"], {"task_family": "quadratic"}, tune_tasks=32)
    result = suite.run(agents, {"task_family": "quadratic"}, num_tasks=64, seeds=(0, 1), plot_path="curves.png")
    print(result.table)

The family's own part (its record of one run, summary, table and plot) lives in
:mod:`agents.evaluation.lr`, :mod:`agents.evaluation.ensemble` and :mod:`agents.evaluation.hpo`.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

import metaopt_envs
from agents.evaluation import specs as agent_specs
from agents.evaluation.metrics import TUNE_SEED, evaluation_seed

SUITES: dict[str, str] = {
    "MetaOpt-LR-v0": "agents.evaluation.lr:LR_SUITE",
    "MetaOpt-Ensemble-v0": "agents.evaluation.ensemble:ENSEMBLE_SUITE",
    "MetaOpt-HPO-v0": "agents.evaluation.hpo:HPO_SUITE",
    "MetaOpt-Acquisition-v0": "agents.evaluation.hpo:ACQUISITION_SUITE",
}
"""Env id -> entry point of its suite (imported when first asked for)."""


def progress_bar(total: int, desc: str) -> tqdm:
    """A tqdm bar of ``total`` runs (a tuning grid, an evaluation) on stderr, shown only when stderr is a
    terminal: in tests, CI logs and redirected runs the stage lines of
    :func:`agents.evaluation.report.progress` say the same without filling the log with redraws."""
    return tqdm(total=total, desc=desc, unit="run", leave=False, disable=not sys.stderr.isatty(), file=sys.stderr)


def get_suite(env_id: str) -> Suite:
    """The suite of ``env_id``; ValueError naming the ids that have one."""
    if env_id not in SUITES:
        raise ValueError(f"no evaluation suite for env id {env_id!r}; choose from {sorted(SUITES)}")
    module, _, name = SUITES[env_id].partition(":")
    return getattr(importlib.import_module(module), name)


class SuiteResult(NamedTuple):
    """What :meth:`Suite.run` returns: JSON-ready summaries, the raw records and the markdown table."""

    summaries: dict[str, dict[str, Any]]
    records: dict[str, list[Any]]
    table: str


class Suite:
    """Base of the per-family suites: building agents, tuning, evaluating, tabulating, plotting.

    A family sets the class attributes and implements :meth:`run_agent` (one record of one agent on
    one core), :meth:`summarize`, :meth:`table`, :meth:`plot` and :meth:`references`; the rest is shared.
    """

    env_id: str
    kind = ""  # the task-family kind of the id ("lr", "ensemble", "hpo"): its registry of families
    family_argument = "task_family"  # the env argument that selects a task family
    default_families: tuple[str, ...] = ()
    description = ""  # what the table reports, for results.md
    family_name = ""  # in error messages: "unknown LR baseline"
    baselines: Mapping[str, type] = {}
    plot_prefix = "curves"
    sample_trained_models = False  # metaopt-train also reports the trained model with sampled actions

    # ----------------------------------------------------------------- the family's part
    def run_agent(self, agent: Any, core: Any, seed: int, deterministic: bool = True) -> Any:
        """One record of ``agent`` on every row of ``core`` (reset with ``seed``), through :func:`rollout`."""
        raise NotImplementedError

    def summarize(
        self, name: str, records: list[Any], references: dict[str, list[Any] | None], families: tuple[str, ...]
    ) -> Any:
        """Statistics of one agent over its records; ``references`` maps a role to its agent's records."""
        raise NotImplementedError

    def table(self, summaries: dict[str, Any], references: dict[str, str | None]) -> str:
        raise NotImplementedError

    def plot(self, records: dict[str, list[Any]], path: str, title: str = "") -> None:
        raise NotImplementedError

    def references(self, agents: Mapping[str, Any]) -> dict[str, str | None]:
        """The role (``"reference"``, ``"oracle"``) -> the agent name it is played by, among ``agents``."""
        return {}

    # ----------------------------------------------------------------- agents from specs
    def baseline_defaults(self, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments a baseline takes from the env (the LR family's ``lr_range``)."""
        return {}

    def load_agent(self, spec: str, env_kwargs: Mapping[str, Any] | None = None, trust_model: bool = False) -> Any:
        """The agent ``spec`` names (:func:`agents.evaluation.specs.load_agent` with this family's baselines;
        ``trust_model``: a saved model loads with SB3's own, unpickling loader)."""
        return agent_specs.load_agent(
            spec,
            self.baselines,
            self.family_name,
            trust_model=trust_model,
            **self.baseline_defaults(env_kwargs or {}),
        )

    def check_spec(self, spec: str) -> None:
        """ValueError (naming the spec and the allowed forms or names) unless ``spec`` can be built here."""
        if spec == "baselines":
            return
        parsed = agent_specs.parse_agent_spec(spec)
        if parsed.kind == "baseline" and parsed.name not in self.baselines:
            raise ValueError(
                f"agent spec {spec!r}: unknown {self.family_name} baseline {parsed.name!r}; "
                f"choose from {sorted(self.baselines)}"
            )

    def display_name(self, spec: str) -> str:
        """The result name of an agent built from ``spec`` (not a tuned baseline)."""
        return spec

    def default_baselines(self, env_kwargs: Mapping[str, Any]) -> list[str]:
        """The baselines ``"baselines"`` expands to."""
        return list(self.baselines)

    def expands(self, name: str) -> bool:
        """Whether ``baseline:NAME`` without arguments is built as in ``"baselines"`` (tuned)."""
        return False

    def baseline_entries(self, name: str, env_kwargs: Mapping[str, Any], tune_tasks: int) -> tuple[dict[str, Any], Any]:
        """The agents (by result name) baseline ``name`` contributes, and its tuning record (or None)."""
        return {name: self.baselines[name]()}, None

    def build_agents(
        self, specs: Sequence[str], env_kwargs: Mapping[str, Any], tune_tasks: int, trust_model: bool = False
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Agents by result name, and the tuning record (a dict) of every tuned baseline.

        ``"baselines"`` expands to every baseline of the family (tuned on the training split where
        it has hyperparameters); other specs are loaded by :meth:`load_agent` (saved models with
        ``trust_model``).
        """
        agents: dict[str, Any] = {}
        tuning: dict[str, Any] = {}
        for spec in specs:
            if spec == "baselines":
                names = self.default_baselines(env_kwargs)
            else:
                parsed = agent_specs.parse_agent_spec(spec)
                if parsed.kind == "class" and len(agent_specs.grid_points(parsed.kwargs)) > 1:
                    name, agent, record = self.tune_user_agent(parsed, env_kwargs, tune_tasks)
                    agents[name] = agent
                    tuning[spec] = record
                    continue
                plain = parsed.kind == "baseline" and not parsed.kwargs and "?" not in spec
                if not (plain and self.expands(parsed.name)):
                    agents[self.display_name(spec)] = self.load_agent(spec, env_kwargs, trust_model)
                    continue
                names = [parsed.name]
            for name in names:
                entries, record = self.baseline_entries(name, env_kwargs, tune_tasks)
                agents.update(entries)
                if record is not None:
                    tuning[name] = dataclasses.asdict(record)
        return agents, tuning

    def tune_score(self, record: Any) -> float:
        """The score (higher is better) a user agent's grid is tuned by: the mean return (LR), minus the
        mean normalized MSE (Ensemble), minus the mean final log10 regret (HPO)."""
        for attribute, sign in (("returns", 1.0), ("mse", -1.0), ("log10_regret", -1.0)):
            if hasattr(record, attribute):
                return sign * float(np.mean(getattr(record, attribute)))
        raise ValueError(f"{self.env_id}: no tuning score for a record {type(record).__name__}")

    def tune_user_agent(
        self, spec: agent_specs.AgentSpec, env_kwargs: Mapping[str, Any], tune_tasks: int
    ) -> tuple[str, Any, dict[str, Any]]:
        """Grid search of a user agent's ``grid(...)`` arguments on the *training* split, as for the baselines:
        its result name (the spec with the best values), the agent, and the tuning record."""
        defaults = self.baseline_defaults(env_kwargs)
        points = agent_specs.grid_points(spec.kwargs)
        scores = self.grid_search(
            lambda point: agent_specs.build_user_agent(spec, point, **defaults),
            points,
            env_kwargs,
            tune_tasks,
            self.tune_score,
            label=spec.text,
        )
        best = points[int(np.argmax(scores))]
        chosen = ", ".join(
            f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}" for key, value in best.items()
        )
        base = spec.text.partition("?")[0]
        fixed = "&".join(f"{k}={v}" for k, v in spec.kwargs.items() if not isinstance(v, agent_specs.Grid))
        name = f"{base}{'?' + fixed if fixed else ''} (tuned {chosen})"
        record = {
            "name": spec.text,
            "best": best,
            "grid": points,
            "scores": scores,
            "num_tasks": tune_tasks,
            "budget_episodes": tune_tasks * len(points),
        }
        return name, agent_specs.build_user_agent(spec, best, **defaults), record

    # ----------------------------------------------------------------- cores and tuning
    def make_core(
        self,
        agent: Any,
        env_kwargs: Mapping[str, Any],
        num_tasks: int,
        episodes_per_trial: int | None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Any:
        """A core of ``num_tasks`` rows for ``agent``: ``env_kwargs``, the agent's ``action_mode`` if it
        declares one, then ``overrides`` (arguments that do not change the tasks)."""
        return metaopt_envs.make_core(
            self.env_id,
            num_envs=num_tasks,
            episodes_per_trial=episodes_per_trial,
            **self.core_kwargs(agent, env_kwargs, overrides),
        )

    @staticmethod
    def core_kwargs(
        agent: Any, env_kwargs: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        kwargs = dict(env_kwargs)
        declared = getattr(agent, "env_kwargs", None)  # a model with its run spec: the env it was trained on
        if isinstance(declared, Mapping):
            kwargs.update(declared)
        mode = getattr(agent, "action_mode", None)
        if isinstance(mode, str):
            kwargs["action_mode"] = mode
        kwargs.update(overrides or {})
        return kwargs

    def agent_env(self, agent: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The env id and arguments ``agent`` is evaluated on: this suite's id here; a suite comparing agents
        of related ids on the same tasks (MetaOpt-Acquisition-v0 beside the HPO searches) overrides it."""
        return self.env_id, kwargs

    def grid_search(
        self,
        make_agent: Callable[[dict[str, Any]], Any],
        points: list[dict[str, Any]],
        env_kwargs: Mapping[str, Any],
        num_tasks: int,
        score: Callable[[Any], float],
        seed: int = TUNE_SEED,
        label: str = "",
    ) -> list[float]:
        """``score`` of the record of ``make_agent(point)`` for every point, on ``num_tasks`` *training* tasks
        (with a progress bar named ``label`` on a terminal)."""
        core = self.make_core(make_agent(points[0]), {**env_kwargs, "split": "train"}, num_tasks, None)
        scores = []
        with progress_bar(len(points), f"tuning {label}".strip()) as bar:
            for point in points:
                scores.append(float(score(self.run_agent(make_agent(point), core, seed))))
                bar.update()
        return scores

    # ----------------------------------------------------------------- evaluation
    def evaluate(
        self,
        agents: Mapping[str, Any],
        env_kwargs: Mapping[str, Any] | None = None,
        num_tasks: int = 64,
        seeds: Sequence[int] = (0, 1, 2),
        episodes_per_trial: int | None = None,
        agent_env_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        references: Mapping[str, str | None] | None = None,
    ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """Every agent on the same ``num_tasks`` test tasks per seed; summaries and raw records.

        Tasks are keyed by the seeds (:func:`agents.evaluation.metrics.evaluation_seed`), so every agent
        sees the same problems whatever its action mode. ``episodes_per_trial`` runs RL² trials (the
        last inner episode is scored); an agent that declares its own (a model with its run spec,
        :func:`agent_trial`) runs with that. ``agent_env_kwargs`` overrides env arguments per agent that do
        not change the tasks (``action_mode`` for a model trained that way). ``references`` maps a
        role to the agent that plays it (default: :meth:`references`).
        """
        env_kwargs = {**(env_kwargs or {}), "split": (env_kwargs or {}).get("split", "test")}
        references = dict(self.references(agents) if references is None else references)
        cores: dict[str, Any] = {}
        records: dict[str, list[Any]] = {}
        core = None
        bar = progress_bar(len(agents) * len(seeds), "evaluating")
        for name, agent in agents.items():
            env_id, kwargs = self.agent_env(
                agent, self.core_kwargs(agent, env_kwargs, (agent_env_kwargs or {}).get(name))
            )
            trial = agent_trial(agent, episodes_per_trial)
            key = repr((env_id, trial, sorted(kwargs.items())))
            if key not in cores:  # tasks are keyed by the seeds: agents with the same arguments share a core
                cores[key] = metaopt_envs.make_core(env_id, num_envs=num_tasks, episodes_per_trial=trial, **kwargs)
            core = cores[key]
            check_observation_shape(name, agent, core, env_id, trial)
            bar.set_postfix_str(name)
            records[name] = []
            for seed in seeds:
                records[name].append(self.run_agent(agent, core, evaluation_seed(seed)))
                bar.update()
        bar.close()
        families = core.unwrapped.family.families() if core is not None else ()
        roles = {role: records.get(name) if name else None for role, name in references.items()}
        summaries = {name: self.summarize(name, recs, roles, families) for name, recs in records.items()}
        return summaries, records

    def run(
        self,
        agents: Mapping[str, Any],
        env_kwargs: Mapping[str, Any],
        num_tasks: int,
        seeds: Sequence[int],
        episodes_per_trial: int | None = None,
        agent_env_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        plot_path: str | None = None,
        title: str = "",
    ) -> SuiteResult:
        """Evaluate, tabulate and (with ``plot_path``) plot; what ``metaopt-bench`` and ``metaopt-train`` report."""
        references = self.references(agents)
        summaries, records = self.evaluate(
            agents, env_kwargs, num_tasks, seeds, episodes_per_trial, agent_env_kwargs, references
        )
        if plot_path is not None:
            self.plot(records, plot_path, title)
        table = self.table(summaries, references)
        return SuiteResult({name: dataclasses.asdict(s) for name, s in summaries.items()}, records, table)


def agent_trial(agent: Any, default: int | None) -> int | None:
    """The inner episodes per trial ``agent`` runs with: the one it declares (``episodes_per_trial``, as a
    model with its run spec does), else ``default``."""
    declared: Any = getattr(agent, "episodes_per_trial", _UNDECLARED)
    return default if declared is _UNDECLARED else declared


_UNDECLARED = object()


def find(agents: Mapping[str, Any], prefix: str) -> str | None:
    """The first agent name starting with ``prefix``."""
    return next((name for name in agents if name.startswith(prefix)), None)


def check_observation_shape(name: str, agent: Any, core: Any, env_id: str, trial: int | None) -> None:
    """ValueError unless an agent that declares an observation space (an SB3 model) gets that shape from ``core``."""
    space = getattr(agent, "observation_space", None)
    shape = getattr(space, "shape", None)
    given = tuple(core.single_observation_space.shape)
    if shape is not None and tuple(shape) != given:
        raise ValueError(
            f"agent spec {name!r}: the model observes shape {tuple(shape)}, but {env_id} with episodes_per_trial="
            f"{trial} gives {given}; give the trial length and env arguments it was trained with "
            "(--episodes-per-trial, --model-env-kwargs), or a model saved by metaopt-train (its run spec has them)"
        )


__all__ = ["SUITES", "Suite", "SuiteResult", "agent_trial", "check_observation_shape", "find", "get_suite"]
