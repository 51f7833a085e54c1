"""Benchmark harness of MetaOpt-Ensemble-v0: every agent on exactly the same held-out streams.

An agent is anything with SB3's ``predict``: an online-learning baseline of
:mod:`agents.controllers.ensemble` (run in ``action_mode="simplex"``, its action is
the weight vector), a saved SB3 model (run in the action mode it was trained
in), or a user's ``module:Class`` (it may set ``action_mode``). Streams are keyed
by the seeds, so every agent sees the same streams whatever its action mode.

Per agent the harness reports, over every (seed, stream) of the last inner episode:

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

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

import metaopt_envs
from agents.evaluation.lr import bootstrap_ci, iqm
from agents.evaluation.rollout import rollout

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
    from agents.controllers.ensemble import EnsembleController

    n = core.num_envs
    horizon = getattr(core, "core", core).num_decisions
    loss_sum, returns = np.zeros(n), np.zeros(n)
    step_loss, entropy, count = np.zeros(horizon), np.zeros(horizon), np.zeros(horizon)

    def accumulate(info: dict[str, np.ndarray], reward: np.ndarray, last: np.ndarray) -> None:
        loss_sum[last] += info["loss"][last]
        returns[last] += reward[last]
        if last.any():
            position = info["decision"][last]
            weights = np.clip(info["weights"][last], 1e-12, 1.0)
            np.add.at(step_loss, position, info["loss"][last])
            np.add.at(entropy, position, -(weights * np.log(weights)).sum(-1))
            np.add.at(count, position, 1.0)

    # The online-learning baselines restart at every stream; RL² keeps its memory across a trial.
    out = rollout(agent, core, seed, accumulate, isinstance(agent, EnsembleController), deterministic)
    with np.errstate(all="ignore"):
        mean_loss = step_loss / count
        entropy = entropy / count
    return EnsembleRecord(loss_sum / horizon, returns, out["family"], np.cumsum(mean_loss), entropy)


def load_ensemble_agent(spec: str) -> Any:
    """``"baseline:NAME"`` / ``"baseline:NAME?eta=0.1&alpha=0.01"``, ``module:Class`` or a ``.zip`` model."""
    from agents.controllers.ensemble import ENSEMBLE_BASELINES
    from agents.evaluation.lr import load_agent

    if spec.startswith("baseline:"):
        name, _, query = spec[len("baseline:") :].partition("?")
        if name not in ENSEMBLE_BASELINES:
            raise ValueError(f"unknown ensemble baseline {name!r}; choose from {sorted(ENSEMBLE_BASELINES)}")
        kwargs = {key: float(value) for key, _, value in (part.partition("=") for part in filter(None, query.split("&")))}
        return ENSEMBLE_BASELINES[name](**kwargs)
    return load_agent(spec)


def _make_core(agent: Any, env_kwargs: dict[str, Any], num_tasks: int, episodes_per_trial: int | None,
               agent_kwargs: dict[str, Any] | None = None) -> Any:
    kwargs = dict(env_kwargs)
    mode = getattr(agent, "action_mode", None)
    if isinstance(mode, str):
        kwargs["action_mode"] = mode
    kwargs.update(agent_kwargs or {})
    return metaopt_envs.make_core(ENV_ID, num_envs=num_tasks, episodes_per_trial=episodes_per_trial, **kwargs)


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
    name: str, env_kwargs: dict[str, Any], num_tasks: int = 64, seed: int = 12345,
    grid: dict[str, list[float]] | None = None,
) -> EnsembleTuneResult:
    """Grid search of ``name``'s hyperparameters on the *training* split, by mean normalized MSE."""
    from agents.controllers.ensemble import ENSEMBLE_BASELINES

    grid = grid if grid is not None else TUNING_GRIDS[name]
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    core = _make_core(ENSEMBLE_BASELINES[name](), {**env_kwargs, "split": "train"}, num_tasks, None)
    scores = [float(np.mean(run_ensemble_agent(ENSEMBLE_BASELINES[name](**point), core, seed).mse)) for point in points]
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
    name: str, records: list[EnsembleRecord], reference: list[EnsembleRecord] | None,
    oracle: list[EnsembleRecord] | None, families: tuple[str, ...],
) -> EnsembleSummary:
    mse = np.concatenate([r.mse for r in records])
    family = np.concatenate([r.family for r in records])
    win = gap = None
    if reference is not None:
        ref = np.concatenate([r.mse for r in reference])
        win = float(np.mean(mse < ref) + 0.5 * np.mean(mse == ref))
        if oracle is not None:
            span = ref.mean() - np.concatenate([r.mse for r in oracle]).mean()
            gap = float((ref.mean() - mse.mean()) / span) if abs(span) > 1e-12 else None
    return EnsembleSummary(
        name=name,
        num_runs=len(mse),
        mse_mean=float(mse.mean()),
        mse_ci=bootstrap_ci(mse, np.mean),
        mse_iqm=iqm(mse),
        mse_iqm_ci=bootstrap_ci(mse, iqm),
        return_mean=float(np.concatenate([r.returns for r in records]).mean()),
        win_rate=win,
        gap_closed=gap,
        per_family_mse={fam: float(mse[family == i].mean()) for i, fam in enumerate(families) if (family == i).any()},
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
    """Every agent on the same ``num_tasks`` test streams per seed; summaries and raw records.

    ``episodes_per_trial`` runs RL² trials (the last inner episode is scored; give it to every
    agent so all are scored on the same streams). ``reference`` and ``oracle`` name the agents
    that win rates and the gap closed are computed against.
    """
    env_kwargs = {**(env_kwargs or {}), "split": (env_kwargs or {}).get("split", "test")}
    records: dict[str, list[EnsembleRecord]] = {}
    families: tuple[str, ...] = ()
    for name, agent in agents.items():
        core = _make_core(agent, env_kwargs, num_tasks, episodes_per_trial, (agent_env_kwargs or {}).get(name))
        families = getattr(core, "core", core).family.families()
        records[name] = [run_ensemble_agent(agent, core, 10_000 + seed) for seed in seeds]
    ref = records.get(reference) if reference else None
    orc = records.get(oracle) if oracle else None
    summaries = {name: summarize_ensemble(name, recs, ref, orc, families) for name, recs in records.items()}
    return summaries, records


def markdown_table(summaries: dict[str, EnsembleSummary], reference: str | None = None, oracle: str | None = None) -> str:
    lines = [
        "| agent | normalized MSE mean [95% CI] | MSE IQM [95% CI] | return | win rate vs "
        + (reference or "reference") + " | gap to " + (oracle or "oracle") + " closed |",
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

    figure = Figure(figsize=(11, 4))
    (loss_axis, entropy_axis) = figure.subplots(1, 2)
    for name, recs in records.items():
        loss_axis.plot(np.mean([r.cumulative_loss for r in recs], axis=0), label=name)
        entropy_axis.plot(np.mean([r.weight_entropy for r in recs], axis=0), label=name)
    loss_axis.set(xlabel="decision", ylabel="mean cumulative normalized loss", title=f"cumulative loss {title}")
    entropy_axis.set(xlabel="decision", ylabel="weight entropy (nats)", title=f"weight entropy {title}")
    loss_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def build_ensemble_agents(specs: list[str], env_kwargs: dict[str, Any], tune_tasks: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Agents by display name (``"baselines"`` expands to every baseline, tuned where it has a grid)."""
    from agents.controllers.ensemble import ENSEMBLE_BASELINES

    agents: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    for spec in specs:
        names = list(ENSEMBLE_BASELINES) if spec == "baselines" else []
        if spec.startswith("baseline:") and "?" not in spec:
            names = [spec.split(":", 1)[1]]
        if not names:
            agents[spec] = load_ensemble_agent(spec)
            continue
        for name in names:
            if name not in ENSEMBLE_BASELINES:
                raise ValueError(f"unknown ensemble baseline {name!r}; choose from {sorted(ENSEMBLE_BASELINES)}")
            if name in TUNING_GRIDS:
                result = tune_ensemble_baseline(name, env_kwargs, tune_tasks)
                tuning[name] = dataclasses.asdict(result)
                label = ", ".join(f"{k}={v:.3g}" for k, v in result.best.items())
                agents[f"{name} (tuned {label})"] = ENSEMBLE_BASELINES[name](**result.best)
                if name == "hedge":  # the untuned anytime rate sqrt(8 ln K / t) as well
                    agents["hedge (anytime rate)"] = ENSEMBLE_BASELINES[name]()
            else:
                agents[name] = ENSEMBLE_BASELINES[name]()
    return agents, tuning


def find(agents: dict[str, Any], prefix: str) -> str | None:
    """The first agent name starting with ``prefix``."""
    return next((name for name in agents if name.startswith(prefix)), None)


__all__ = [
    "EnsembleRecord", "EnsembleSummary", "build_ensemble_agents", "evaluate_ensemble", "markdown_table",
    "plot_ensemble_curves", "run_ensemble_agent", "tune_ensemble_baseline",
]
