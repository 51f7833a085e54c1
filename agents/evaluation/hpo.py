"""Benchmark harness of MetaOpt-HPO-v0: simple regret against evaluations, and time per suggestion.

Every agent runs on exactly the same test objectives (keyed by the seeds): the
search baselines of :mod:`agents.controllers.hpo` (random search, Sobol, GP-EI,
TPE), a saved SB3 model (RL²), or a user's ``module:Class``. Per agent and over
every (seed, objective), on the last inner episode:

- the final simple regret as ``log10`` of the normalized regret of the best
  configuration found (floored at the env's ``regret_floor``): median, IQM and
  mean with bootstrap 95% CIs;
- the win rate against random search (share of objectives with a lower final regret);
- the wall time per suggestion (the agent's ``predict`` time per objective);
- curves: median and mean ``log10`` best regret against the number of evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import metaopt_envs
from agents.evaluation.lr import bootstrap_ci, iqm
from agents.evaluation.rollout import rollout

ENV_ID = "MetaOpt-HPO-v0"


@dataclass
class HPORecord:
    """Per-objective results of one agent on one batch of objectives."""

    log10_regret: np.ndarray  # (n,) final log10 normalized simple regret of the last inner episode
    curves: np.ndarray  # (n, budget) log10 best regret after each evaluation
    family: np.ndarray  # (n,)
    seconds_per_suggestion: float


def run_hpo_agent(agent: Any, core: Any, seed: int, deterministic: bool = True) -> HPORecord:
    """Run ``agent`` for one trial on each of ``core``'s objectives (reset with ``seed``)."""
    from agents.controllers.hpo import HPOController

    base = getattr(core, "core", core)
    n, budget = core.num_envs, base.budget
    curves = np.zeros((n, budget))

    def accumulate(info: dict[str, np.ndarray], reward: np.ndarray, last: np.ndarray) -> None:
        rows = np.flatnonzero(last)
        curves[rows, info["evaluation"][rows] - 1] = np.log10(np.maximum(info["best_regret"][rows], base.regret_floor))

    out = rollout(agent, core, seed, accumulate, isinstance(agent, HPOController), deterministic)
    return HPORecord(curves[:, -1].copy(), curves, out["family"], out["seconds_per_suggestion"])


def load_hpo_agent(spec: str) -> Any:
    """``"baseline:NAME"`` (``?key=value`` arguments), ``module:Class`` or a ``.zip`` SB3 model."""
    from agents.evaluation.lr import load_agent
    from agents.controllers.hpo import HPO_BASELINES

    if spec.startswith("baseline:"):
        name, _, query = spec[len("baseline:") :].partition("?")
        if name not in HPO_BASELINES:
            raise ValueError(f"unknown HPO baseline {name!r}; choose from {sorted(HPO_BASELINES)}")
        kwargs = {key: _number(value) for key, _, value in (part.partition("=") for part in filter(None, query.split("&")))}
        return HPO_BASELINES[name](**kwargs)
    return load_agent(spec)


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


@dataclass
class HPOSummary:
    """Statistics of one agent over every (seed, objective) pair."""

    name: str
    num_runs: int
    median: float
    median_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]
    mean: float
    win_rate: float | None
    seconds_per_suggestion: float
    per_family_median: dict[str, float]
    median_curve: list[float]


def summarize_hpo(name: str, records: list[HPORecord], reference: list[HPORecord] | None, families: tuple[str, ...]) -> HPOSummary:
    final = np.concatenate([r.log10_regret for r in records])
    family = np.concatenate([r.family for r in records])
    win = None
    if reference is not None:
        ref = np.concatenate([r.log10_regret for r in reference])
        win = float(np.mean(final < ref) + 0.5 * np.mean(final == ref))
    curves = np.concatenate([r.curves for r in records])
    return HPOSummary(
        name=name,
        num_runs=len(final),
        median=float(np.median(final)),
        median_ci=bootstrap_ci(final, np.median),
        iqm=iqm(final),
        iqm_ci=bootstrap_ci(final, iqm),
        mean=float(final.mean()),
        win_rate=win,
        seconds_per_suggestion=float(np.mean([r.seconds_per_suggestion for r in records])),
        per_family_median={f: float(np.median(final[family == i])) for i, f in enumerate(families) if (family == i).any()},
        median_curve=[float(v) for v in np.median(curves, axis=0)],
    )


def evaluate_hpo(
    agents: dict[str, Any],
    env_kwargs: dict[str, Any] | None = None,
    num_tasks: int = 100,
    seeds: tuple[int, ...] = (0,),
    episodes_per_trial: int | None = None,
    reference: str | None = "random",
    agent_env_kwargs: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, HPOSummary], dict[str, list[HPORecord]]]:
    """Every agent on the same ``num_tasks`` test objectives per seed; summaries and raw records."""
    env_kwargs = {**(env_kwargs or {}), "split": (env_kwargs or {}).get("split", "test")}
    records: dict[str, list[HPORecord]] = {}
    families: tuple[str, ...] = ()
    for name, agent in agents.items():
        kwargs = {**env_kwargs, **(agent_env_kwargs or {}).get(name, {})}
        core = metaopt_envs.make_core(ENV_ID, num_envs=num_tasks, episodes_per_trial=episodes_per_trial, **kwargs)
        families = getattr(core, "core", core).family.families()
        records[name] = [run_hpo_agent(agent, core, 10_000 + seed) for seed in seeds]
    ref = records.get(reference) if reference else None
    return {name: summarize_hpo(name, recs, ref, families) for name, recs in records.items()}, records


def markdown_table(summaries: dict[str, HPOSummary], reference: str | None = "random") -> str:
    lines = [
        "| agent | log10 simple regret: median [95% CI] | IQM [95% CI] | mean | win rate vs "
        + (reference or "reference") + " | ms per suggestion |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in sorted(summaries.values(), key=lambda s: s.median):
        win = "-" if s.win_rate is None else f"{100 * s.win_rate:.0f}%"
        lines.append(
            f"| {s.name} | {s.median:.2f} [{s.median_ci[0]:.2f}, {s.median_ci[1]:.2f}] | "
            f"{s.iqm:.2f} [{s.iqm_ci[0]:.2f}, {s.iqm_ci[1]:.2f}] | {s.mean:.2f} | {win} | "
            f"{1000 * s.seconds_per_suggestion:.2f} |"
        )
    return "\n".join(lines)


def plot_hpo_curves(records: dict[str, list[HPORecord]], path: str, title: str = "") -> None:
    """Median and mean log10 best regret of each agent against evaluations (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) is left alone

    figure = Figure(figsize=(11, 4))
    (median_axis, mean_axis) = figure.subplots(1, 2)
    for name, recs in records.items():
        curves = np.concatenate([r.curves for r in recs])
        steps = np.arange(1, curves.shape[1] + 1)
        median_axis.plot(steps, np.median(curves, axis=0), label=name)
        mean_axis.plot(steps, curves.mean(axis=0), label=name)
    median_axis.set(xlabel="evaluations", ylabel="median log10 simple regret", title=f"median {title}")
    mean_axis.set(xlabel="evaluations", ylabel="mean log10 simple regret", title=f"mean {title}")
    median_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def build_hpo_agents(specs: list[str]) -> dict[str, Any]:
    """Agents by display name; ``"baselines"`` expands to every search baseline."""
    from agents.controllers.hpo import HPO_BASELINES

    agents: dict[str, Any] = {}
    for spec in specs:
        if spec == "baselines":
            agents.update({name: cls() for name, cls in HPO_BASELINES.items()})
        else:
            agents[spec.removeprefix("baseline:")] = load_hpo_agent(spec)
    return agents


__all__ = [
    "HPORecord", "HPOSummary", "build_hpo_agents", "evaluate_hpo", "markdown_table", "plot_hpo_curves",
    "run_hpo_agent",
]
