"""How ``metaopt-bench`` and ``metaopt-train`` evaluate the Ensemble and HPO families.

A :class:`Suite` bundles, for one env id, the default task families, the agent
builder (baselines tuned on the training split where they have
hyperparameters), the evaluator with its reference rows, the table and the plot.
The LR family keeps its own path in :mod:`agents.cli.bench` (tuned learning rates,
absolute-mode controllers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Suite:
    env_id: str
    family_argument: str  # the env argument that selects a family
    default_families: str
    description: str
    build: Callable[[list[str], dict[str, Any], int], tuple[dict[str, Any], dict[str, Any]]]
    run: Callable[..., tuple[dict[str, Any], dict[str, Any], str]]  # -> summaries, records, markdown table
    plot: Callable[[dict[str, Any], str, str], None]
    plot_prefix: str


def _ensemble_run(agents, env_kwargs, num_tasks, seeds, episodes_per_trial, agent_env_kwargs):
    from agents.evaluation.ensemble import evaluate_ensemble, find, markdown_table

    reference, oracle = find(agents, "fixed_share"), find(agents, "regime_oracle")
    summaries, records = evaluate_ensemble(
        agents, env_kwargs, num_tasks, seeds, episodes_per_trial, reference, oracle, agent_env_kwargs
    )
    return summaries, records, markdown_table(summaries, reference, oracle)


def _ensemble_build(specs, env_kwargs, tune_tasks):
    from agents.evaluation.ensemble import build_ensemble_agents

    # The baselines run in simplex mode (their action is the weight vector) whatever the agent's mode.
    return build_ensemble_agents(specs, {k: v for k, v in env_kwargs.items() if k != "action_mode"}, tune_tasks)


def _ensemble_plot(records, path, title):
    from agents.evaluation.ensemble import plot_ensemble_curves

    plot_ensemble_curves(records, path, title)


def _hpo_run(agents, env_kwargs, num_tasks, seeds, episodes_per_trial, agent_env_kwargs):
    from agents.evaluation.hpo import evaluate_hpo, markdown_table

    summaries, records = evaluate_hpo(agents, env_kwargs, num_tasks, seeds, episodes_per_trial, "random", agent_env_kwargs)
    return summaries, records, markdown_table(summaries)


def _hpo_build(specs, env_kwargs, tune_tasks):
    from agents.evaluation.hpo import build_hpo_agents

    return build_hpo_agents(specs), {}


def _hpo_plot(records, path, title):
    from agents.evaluation.hpo import plot_hpo_curves

    plot_hpo_curves(records, path, title)


SUITES: dict[str, Suite] = {
    "MetaOpt-Ensemble-v0": Suite(
        env_id="MetaOpt-Ensemble-v0",
        family_argument="task_family",
        default_families="switching_ar,regimes,real",
        description=(
            "Normalized MSE = mean over decisions of the weighted forecast's squared error / sigma^2 "
            "(sigma: RMS one-step change in the warm-up); win rate against tuned Fixed-Share; gap closed = "
            "(MSE_FixedShare - MSE) / (MSE_FixedShare - MSE_RegimeOracle)."
        ),
        build=_ensemble_build, run=_ensemble_run, plot=_ensemble_plot, plot_prefix="ensemble_curves",
    ),
    "MetaOpt-HPO-v0": Suite(
        env_id="MetaOpt-HPO-v0",
        family_argument="task_family",
        default_families="branin,hartmann3,hartmann6,gp,sklearn",
        description=(
            "Simple regret = normalized regret (f - f_opt) / (f_ref - f_opt) of the best configuration found "
            "(f_ref: median of random points), as log10 floored at 1e-6; win rate against random search; "
            "time = the agent's predict time per objective."
        ),
        build=_hpo_build, run=_hpo_run, plot=_hpo_plot, plot_prefix="hpo_regret",
    ),
}


def evaluate_suite(
    suite: Suite, agents: dict[str, Any], env_kwargs: dict[str, Any], num_tasks: int, seeds: tuple[int, ...],
    episodes_per_trial: int | None, agent_env_kwargs: dict[str, dict[str, Any]], plot_path: str, title: str,
) -> tuple[dict[str, Any], str]:
    """Run, plot and tabulate; returns the JSON-ready summaries and the markdown table."""
    summaries, records, table = suite.run(agents, env_kwargs, num_tasks, seeds, episodes_per_trial, agent_env_kwargs)
    suite.plot(records, plot_path, title)
    return {name: dataclasses.asdict(summary) for name, summary in summaries.items()}, table
