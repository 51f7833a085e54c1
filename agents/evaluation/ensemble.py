"""The Ensemble family's evaluation (MetaOpt-Ensemble-v0): every agent on exactly the same held-out streams.

An agent is anything with SB3's ``predict``: an online-learning baseline of
:mod:`agents.controllers.ensemble` (run in ``action_mode="simplex"``, its action is
the weight vector), a saved SB3 model (run in the action mode it was trained
in), or a user's ``module:Class`` (it may set ``action_mode``). Streams are keyed
by the seeds, so every agent sees the same streams whatever its action mode.

Per agent the evaluator (:data:`ENSEMBLE_SUITE`) reports, over every (seed, stream) of the last inner episode:

- the normalized MSE: the mean over decisions of ``((sum_k w_k p_k - y) / sigma)^2``
  (the cumulative loss divided by the horizon), with mean, IQM and bootstrap 95% CIs;
- the return (the clipped negative loss summed);
- the win rate against a reference agent (by default tuned Fixed-Share): the share of
  streams where the agent's MSE is lower;
- the share of the gap between the reference and the regime oracle that the agent closes,
  ``(MSE_ref - MSE_agent) / (MSE_ref - MSE_oracle)``, on mean MSEs;
- curves: mean cumulative loss and mean weight entropy against the decision index.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import metaopt_envs
from agents.controllers.ensemble import ENSEMBLE_BASELINES, BayesFilter, EnsembleController
from agents.evaluation.metrics import TUNE_SEED, gap_closed, per_family, win_rate
from agents.evaluation.rollout import Step, rollout
from agents.evaluation.stats import bootstrap_ci, iqm
from agents.evaluation.suites import Suite, find

ENV_ID = "MetaOpt-Ensemble-v0"

TUNING_GRIDS: dict[str, dict[str, list[float]]] = {
    "hedge": {"eta": [float(v) for v in np.logspace(-3, 1, 9)]},
    "fixed_share": {"eta": [float(v) for v in np.logspace(-2, 1, 7)], "alpha": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]},
    "exponentiated_gradient": {"eta": [float(v) for v in np.logspace(-3, 0, 7)]},
}
"""Hyperparameter grids searched on the *training* split (by mean normalized MSE)."""


@dataclass
class EnsembleRecord:
    """Per-stream results of one agent on one batch of streams (arrays over streams)."""

    mse: np.ndarray  # (n,) mean normalized squared error of the last inner episode
    returns: np.ndarray  # (n,) return of the last inner episode
    family: np.ndarray  # (n,) stream family index
    cumulative_loss: np.ndarray  # (T,) mean cumulative loss over streams after decision t
    weight_entropy: np.ndarray  # (T,) mean entropy (nats) of the weights at decision t


def run_ensemble_agent(agent: Any, core: Any, seed: int, deterministic: bool = True) -> EnsembleRecord:
    """Run ``agent`` for one trial on each of ``core``'s streams (reset with ``seed``)."""
    n = core.num_envs
    horizon = core.unwrapped.num_decisions
    loss_sum, returns = np.zeros(n), np.zeros(n)
    step_loss, entropy, count = np.zeros(horizon), np.zeros(horizon), np.zeros(horizon)

    def accumulate(step: Step) -> None:
        info, last = step.info, step.scored
        loss_sum[last] += info["loss"][last]
        returns[last] += step.reward[last]
        if last.any():
            position = info["decision"][last]
            weights = np.clip(info["weights"][last], 1e-12, 1.0)
            np.add.at(step_loss, position, info["loss"][last])
            np.add.at(entropy, position, -(weights * np.log(weights)).sum(-1))
            np.add.at(count, position, 1.0)

    # The online-learning baselines restart at every stream; RL² keeps its memory across a trial.
    out = rollout(agent, core, seed, accumulate, deterministic=deterministic)
    with np.errstate(all="ignore"):
        mean_loss = step_loss / count
        entropy = entropy / count
    return EnsembleRecord(loss_sum / horizon, returns, out["family"], np.cumsum(mean_loss), entropy)


def load_ensemble_agent(spec: str) -> Any:
    """``"baseline:NAME"`` / ``"baseline:NAME?eta=0.1&alpha=0.01"``, ``module:Class`` or a ``.zip`` model."""
    return ENSEMBLE_SUITE.load_agent(spec)


@dataclass
class EnsembleTuneResult:
    """A baseline's best hyperparameters on the training split and what the search cost."""

    name: str
    best: dict[str, float]
    grid: list[dict[str, float]]
    mean_mse: list[float]
    num_tasks: int
    budget_episodes: int


def tune_ensemble_baseline(
    name: str,
    env_kwargs: dict[str, Any],
    num_tasks: int = 64,
    seed: int = TUNE_SEED,
    grid: dict[str, list[float]] | None = None,
) -> EnsembleTuneResult:
    """Grid search of ``name``'s hyperparameters on the *training* split, by mean normalized MSE."""
    grid = grid if grid is not None else TUNING_GRIDS[name]
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    scores = ENSEMBLE_SUITE.grid_search(
        lambda point: ENSEMBLE_BASELINES[name](**point),
        points,
        env_kwargs,
        num_tasks,
        lambda record: np.mean(record.mse),
        seed,
        label=name,
    )
    best = points[int(np.argmin(scores))]
    return EnsembleTuneResult(name, best, points, scores, num_tasks, len(points) * num_tasks)


@dataclass
class EnsembleSummary:
    """Statistics of one agent over every (seed, stream) pair."""

    name: str
    num_runs: int
    mse_mean: float
    mse_ci: tuple[float, float]
    mse_iqm: float
    mse_iqm_ci: tuple[float, float]
    return_mean: float
    win_rate: float | None
    gap_closed: float | None
    per_family_mse: dict[str, float]


def summarize_ensemble(
    name: str,
    records: list[EnsembleRecord],
    reference: list[EnsembleRecord] | None,
    oracle: list[EnsembleRecord] | None,
    families: tuple[str, ...],
) -> EnsembleSummary:
    mse = np.concatenate([r.mse for r in records])
    family = np.concatenate([r.family for r in records])
    win = gap = None
    if reference is not None:
        ref = np.concatenate([r.mse for r in reference])
        win = win_rate(mse, ref)
        if oracle is not None:
            gap = gap_closed(mse, ref, np.concatenate([r.mse for r in oracle]))
    return EnsembleSummary(
        name=name,
        num_runs=len(mse),
        mse_mean=float(mse.mean()),
        mse_ci=bootstrap_ci(mse, np.mean),
        mse_iqm=float(iqm(mse)),
        mse_iqm_ci=bootstrap_ci(mse, iqm),
        return_mean=float(np.concatenate([r.returns for r in records]).mean()),
        win_rate=win,
        gap_closed=gap,
        per_family_mse=per_family(mse, family, families),
    )


def evaluate_ensemble(
    agents: dict[str, Any],
    env_kwargs: dict[str, Any] | None = None,
    num_tasks: int = 64,
    seeds: tuple[int, ...] = (0, 1, 2),
    episodes_per_trial: int | None = None,
    reference: str | None = None,
    oracle: str | None = None,
    agent_env_kwargs: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, EnsembleSummary], dict[str, list[EnsembleRecord]]]:
    """Every agent on the same ``num_tasks`` test streams per seed; summaries and raw records (:meth:`Suite.evaluate`).

    ``episodes_per_trial`` runs RL² trials (the last inner episode is scored; give it to every
    agent so all are scored on the same streams). ``reference`` and ``oracle`` name the agents
    that win rates and the gap closed are computed against.
    """
    return ENSEMBLE_SUITE.evaluate(
        agents,
        env_kwargs,
        num_tasks,
        seeds,
        episodes_per_trial,
        agent_env_kwargs,
        {"reference": reference, "oracle": oracle},
    )


def markdown_table(
    summaries: dict[str, EnsembleSummary], reference: str | None = None, oracle: str | None = None
) -> str:
    lines = [
        "| agent | normalized MSE mean [95% CI] | MSE IQM [95% CI] | return | win rate vs "
        + (reference or "reference")
        + " | gap to "
        + (oracle or "oracle")
        + " closed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in sorted(summaries.values(), key=lambda s: s.mse_mean):
        win = "-" if s.win_rate is None else f"{100 * s.win_rate:.0f}%"
        gap = "-" if s.gap_closed is None else f"{100 * s.gap_closed:.0f}%"
        lines.append(
            f"| {s.name} | {s.mse_mean:.3f} [{s.mse_ci[0]:.3f}, {s.mse_ci[1]:.3f}] | "
            f"{s.mse_iqm:.3f} [{s.mse_iqm_ci[0]:.3f}, {s.mse_iqm_ci[1]:.3f}] | {s.return_mean:.1f} | {win} | {gap} |"
        )
    return "\n".join(lines)


def plot_ensemble_curves(records: dict[str, list[EnsembleRecord]], path: str, title: str = "") -> None:
    """Mean cumulative loss and mean weight entropy of each agent against the decision (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) is left alone

    from agents.evaluation.plotting import legend, plot_lines

    figure = Figure(figsize=(11, 4))
    (loss_axis, entropy_axis) = figure.subplots(1, 2)
    plot_lines(loss_axis, {name: np.mean([r.cumulative_loss for r in recs], axis=0) for name, recs in records.items()})
    plot_lines(
        entropy_axis, {name: np.mean([r.weight_entropy for r in recs], axis=0) for name, recs in records.items()}
    )
    loss_axis.set(xlabel="decision", ylabel="mean cumulative normalized loss", title=f"cumulative loss {title}")
    entropy_axis.set(xlabel="decision", ylabel="weight entropy (nats)", title=f"weight entropy {title}")
    legend(loss_axis, len(records))
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def build_ensemble_agents(
    specs: list[str], env_kwargs: dict[str, Any], tune_tasks: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Agents by display name (``"baselines"`` expands to every baseline, tuned where it has a grid)."""
    return ENSEMBLE_SUITE.build_agents(specs, env_kwargs, tune_tasks)


class EnsembleSuite(Suite):
    """MetaOpt-Ensemble-v0: online-learning baselines (tuned on the training split), scored by the normalized MSE."""

    env_id = ENV_ID
    kind = "ensemble"
    default_families = ("switching_ar", "regimes", "real")
    description = (
        "Normalized MSE = mean over decisions of the weighted forecast's squared error / sigma^2 "
        "(sigma: RMS one-step change in the warm-up); win rate against tuned Fixed-Share; gap closed = "
        "(MSE_FixedShare - MSE) / (MSE_FixedShare - MSE_RegimeOracle)."
    )
    family_name = "ensemble"
    baselines = ENSEMBLE_BASELINES
    plot_prefix = "ensemble_curves"
    sample_trained_models = True

    def run_agent(self, agent: Any, core: Any, seed: int, deterministic: bool = True) -> EnsembleRecord:
        return run_ensemble_agent(agent, core, seed, deterministic)

    def summarize(self, name, records, references, families) -> EnsembleSummary:
        return summarize_ensemble(name, records, references.get("reference"), references.get("oracle"), families)

    def table(self, summaries, references) -> str:
        return markdown_table(summaries, references.get("reference"), references.get("oracle"))

    def plot(self, records, path, title="") -> None:
        plot_ensemble_curves(records, path, title)

    def references(self, agents: Mapping[str, Any]) -> dict[str, str | None]:
        return {"reference": find(agents, "fixed_share"), "oracle": find(agents, "regime_oracle")}

    def build_agents(self, specs, env_kwargs, tune_tasks, trust_model=False):
        # The baselines run in simplex mode (their action is the weight vector) whatever the agent's mode.
        kwargs = {k: v for k, v in env_kwargs.items() if k != "action_mode"}
        return super().build_agents(specs, kwargs, tune_tasks, trust_model)

    @staticmethod
    def core_kwargs(agent, env_kwargs, overrides=None):
        kwargs = Suite.core_kwargs(agent, env_kwargs, overrides)
        if isinstance(agent, EnsembleController):  # the controllers read the plain 5K + 4 observation (tuning too)
            kwargs.pop("share_filters", None)
        return kwargs

    def expands(self, name: str) -> bool:
        return name in ENSEMBLE_BASELINES

    def default_baselines(self, env_kwargs: Mapping[str, Any]) -> list[str]:
        """Every baseline; ``bayes_filter`` only where it applies (the switching-AR experts setting)."""
        names = [name for name in ENSEMBLE_BASELINES if name != "bayes_filter"]
        try:
            BayesFilter._check_setting(metaopt_envs.make_core(ENV_ID, num_envs=1, **env_kwargs))
        except ValueError:
            return names
        return [*names, "bayes_filter"]

    def baseline_entries(self, name, env_kwargs, tune_tasks):
        if name not in TUNING_GRIDS:
            return {name: ENSEMBLE_BASELINES[name]()}, None
        result = tune_ensemble_baseline(name, dict(env_kwargs), tune_tasks)
        label = ", ".join(f"{k}={v:.3g}" for k, v in result.best.items())
        entries = {f"{name} (tuned {label})": ENSEMBLE_BASELINES[name](**result.best)}
        if name == "hedge":  # the untuned anytime rate sqrt(8 ln K / t) as well
            entries["hedge (anytime rate)"] = ENSEMBLE_BASELINES[name]()
        return entries, result


ENSEMBLE_SUITE = EnsembleSuite()

__all__ = [
    "ENSEMBLE_SUITE",
    "EnsembleRecord",
    "EnsembleSuite",
    "EnsembleSummary",
    "build_ensemble_agents",
    "evaluate_ensemble",
    "find",
    "load_ensemble_agent",
    "markdown_table",
    "plot_ensemble_curves",
    "run_ensemble_agent",
    "tune_ensemble_baseline",
]
