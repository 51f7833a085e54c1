"""The HPO family's evaluation (MetaOpt-HPO-v0): simple regret against evaluations, and time per suggestion.

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.controllers.acquisition import ACQUISITION_BASELINES
from agents.controllers.hpo import HPO_BASELINES, HPOController
from agents.evaluation.metrics import per_family, win_rate
from agents.evaluation.rollout import Step, rollout
from agents.evaluation.stats import bootstrap_ci, iqm
from agents.evaluation.suites import Suite

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
    base = core.unwrapped
    n, budget = core.num_envs, base.budget
    curves = np.zeros((n, budget))

    def accumulate(step: Step) -> None:
        rows = np.flatnonzero(step.scored)
        curves[rows, step.info["evaluation"][rows] - 1] = np.log10(
            np.maximum(step.info["best_regret"][rows], base.regret_floor)
        )

    out = rollout(agent, core, seed, accumulate, deterministic=deterministic)
    return HPORecord(curves[:, -1].copy(), curves, out["family"], out["seconds_per_suggestion"])


def load_hpo_agent(spec: str) -> Any:
    """``"baseline:NAME"`` (``?key=value`` arguments), ``module:Class`` or a ``.zip`` SB3 model."""
    return HPO_SUITE.load_agent(spec)


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


def summarize_hpo(
    name: str, records: list[HPORecord], reference: list[HPORecord] | None, families: tuple[str, ...]
) -> HPOSummary:
    final = np.concatenate([r.log10_regret for r in records])
    family = np.concatenate([r.family for r in records])
    win = None if reference is None else win_rate(final, np.concatenate([r.log10_regret for r in reference]))
    curves = np.concatenate([r.curves for r in records])
    return HPOSummary(
        name=name,
        num_runs=len(final),
        median=float(np.median(final)),
        median_ci=bootstrap_ci(final, np.median),
        iqm=float(iqm(final)),
        iqm_ci=bootstrap_ci(final, iqm),
        mean=float(final.mean()),
        win_rate=win,
        seconds_per_suggestion=float(np.mean([r.seconds_per_suggestion for r in records])),
        per_family_median=per_family(final, family, families, np.median),
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
    """Every agent on the same ``num_tasks`` test objectives per seed: summaries, records (:meth:`Suite.evaluate`)."""
    return HPO_SUITE.evaluate(
        agents, env_kwargs, num_tasks, seeds, episodes_per_trial, agent_env_kwargs, {"reference": reference}
    )


def markdown_table(summaries: dict[str, HPOSummary], reference: str | None = "random") -> str:
    lines = [
        "| agent | log10 simple regret: median [95% CI] | IQM [95% CI] | mean | win rate vs "
        + (reference or "reference")
        + " | ms per suggestion |",
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
    from agents.evaluation.plotting import legend, plot_lines

    curves = {name: np.concatenate([r.curves for r in recs]) for name, recs in records.items()}
    steps = {name: np.arange(1, c.shape[1] + 1) for name, c in curves.items()}
    plot_lines(median_axis, {name: np.median(c, axis=0) for name, c in curves.items()}, steps)
    plot_lines(mean_axis, {name: c.mean(axis=0) for name, c in curves.items()}, steps)
    median_axis.set(xlabel="evaluations", ylabel="median log10 simple regret", title=f"median {title}")
    mean_axis.set(xlabel="evaluations", ylabel="mean log10 simple regret", title=f"mean {title}")
    legend(median_axis, len(records))
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def build_hpo_agents(specs: list[str]) -> dict[str, Any]:
    """Agents by display name; ``"baselines"`` expands to every search baseline."""
    return HPO_SUITE.build_agents(specs, {}, 0)[0]


class HPOSuite(Suite):
    """MetaOpt-HPO-v0: search baselines with their defaults, scored by the final simple regret."""

    env_id = ENV_ID
    kind = "hpo"
    default_families = ("branin", "hartmann3", "hartmann6", "gp", "sklearn")
    description = (
        "Simple regret = normalized regret (f - f_opt) / (f_ref - f_opt) of the best configuration found "
        "(f_ref: median of random points), as log10 floored at 1e-6; win rate against random search; "
        "time = the agent's predict time per objective."
    )
    family_name = "HPO"
    baselines: Mapping[str, type] = HPO_BASELINES
    plot_prefix = "hpo_regret"
    sample_trained_models = True

    def run_agent(self, agent: Any, core: Any, seed: int, deterministic: bool = True) -> HPORecord:
        return run_hpo_agent(agent, core, seed, deterministic)

    def summarize(self, name, records, references, families) -> HPOSummary:
        return summarize_hpo(name, records, references.get("reference"), families)

    def table(self, summaries, references) -> str:
        return markdown_table(summaries, references.get("reference"))

    def plot(self, records, path, title="") -> None:
        plot_hpo_curves(records, path, title)

    def references(self, agents: Mapping[str, Any]) -> dict[str, str | None]:
        return {"reference": "random"}

    def display_name(self, spec: str) -> str:
        return spec.removeprefix("baseline:")


HPO_SUITE = HPOSuite()

ACQUISITION_ENV_ID = "MetaOpt-Acquisition-v0"
ACQUISITION_ONLY = (
    "num_candidates",
    "num_local",
    "fit_steps",
    "fit_lr",
    "y_transform",
    "candidate_pool",
    "num_initial",
)
"""MetaOpt-Acquisition-v0's arguments beyond MetaOpt-HPO-v0's (its search runs with the rest)."""


class AcquisitionSuite(HPOSuite):
    """MetaOpt-Acquisition-v0: learned and hand-designed acquisition functions over the env's GP posterior,
    beside the HPO searches (random, Sobol, GP-EI, TPE) run on MetaOpt-HPO-v0 with the same objectives
    (both ids key their objectives alike, so the same seeds give the same tasks)."""

    env_id = ACQUISITION_ENV_ID
    description = HPOSuite.description + (
        " Acquisition agents (acq_*, trained models) choose among the env's candidates scored from its GP "
        "posterior; the searches propose any point on MetaOpt-HPO-v0."
    )
    family_name = "acquisition"
    baselines: Mapping[str, type] = {**ACQUISITION_BASELINES, **HPO_BASELINES}
    plot_prefix = "acquisition_regret"

    def agent_env(self, agent: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if isinstance(agent, HPOController):
            return ENV_ID, {k: v for k, v in kwargs.items() if k not in ACQUISITION_ONLY}
        return self.env_id, kwargs


ACQUISITION_SUITE = AcquisitionSuite()

__all__ = [
    "ACQUISITION_SUITE",
    "HPO_SUITE",
    "AcquisitionSuite",
    "HPORecord",
    "HPOSuite",
    "HPOSummary",
    "build_hpo_agents",
    "evaluate_hpo",
    "load_hpo_agent",
    "markdown_table",
    "plot_hpo_curves",
    "run_hpo_agent",
]
