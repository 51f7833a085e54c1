"""The LR family's evaluation (MetaOpt-LR-v0): every agent on exactly the same held-out tasks.

An agent is anything with SB3's ``predict(observation, state, episode_start,
deterministic)``: a hand-designed controller (:mod:`agents.controllers.lr`), a saved
SB3 / sb3-contrib model, or a user's class given as ``module:Class``. The
evaluator (:data:`LR_SUITE`, through the one loop :func:`agents.evaluation.rollout.rollout`)
runs them on one batched core of ``num_tasks`` test tasks per seed (the same seeds for every
agent, so the same tasks), one RL² trial of ``episodes_per_trial`` inner episodes per task,
and reports per agent:

- the return of the last inner episode, ``log(L0 / LT)``;
- the final normalized loss ``LT / L0`` (as ``log10``), per task;
- mean, interquartile mean (IQM) and bootstrap 95% confidence intervals of both;
- the win rate against a reference agent (by default the best tuned constant):
  the fraction of tasks where the agent's final loss is lower;
- divergence rate; and mean curves of the normalized loss and the learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.controllers.lr import BASELINES, TUNABLE, TUNED
from agents.evaluation.metrics import TUNE_SEED, diverged_percent, per_family, win_rate
from agents.evaluation.rollout import Step, rollout
from agents.evaluation.stats import bootstrap_ci, iqm
from agents.evaluation.suites import Suite, find

ENV_ID = "MetaOpt-LR-v0"
DEFAULT_LR_RANGE = (1e-4, 10.0)
DIVERGED_LOG10 = math.log10(1e30)
"""The final ``log10(LT / L0)`` of a diverged run."""


@dataclass
class RunRecord:
    """Per-task results of one agent on one batch of tasks (arrays over tasks)."""

    returns: np.ndarray  # (n,) return of the last inner episode
    log10_final_loss: np.ndarray  # (n,) log10(LT / L0) of the last inner episode
    diverged: np.ndarray  # (n,) bool, any inner episode diverged
    family: np.ndarray  # (n,) family index
    loss_curve: np.ndarray  # (T,) mean log10(L_t / L0) over the tasks at decision t of the last inner episode
    lr_curve: np.ndarray  # (T,) geometric-mean learning rate over the tasks at decision t (NaN where none ran)


def run_agent(agent: Any, core: Any, seed: int, deterministic: bool = True) -> RunRecord:
    """Run ``agent`` for one trial on each of ``core``'s tasks (reset with ``seed``)."""
    base = core.unwrapped
    n, decisions = core.num_envs, base.num_decisions
    returns, final = np.zeros(n), np.zeros(n)
    diverged = np.zeros(n, dtype=bool)
    # Curves are indexed by each task's own decision count, so tasks whose last inner episode
    # started at different times (an earlier one diverged) line up.
    loss_sum, log_lr_sum, count = np.zeros(decisions), np.zeros(decisions), np.zeros(decisions)

    def accumulate(step: Step) -> None:
        nonlocal returns, final
        info, scored = step.info, step.scored
        returns = np.where(scored, returns + step.reward, returns)
        diverged[:] |= step.live & info["diverged"]
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            ratio = np.log10(np.clip(info["loss"] / np.maximum(info["initial_loss"], 1e-30), 1e-30, 1e30))
        if scored.any():
            position = info["inner_step"][scored] // base.action_every - 1
            np.add.at(loss_sum, position, ratio[scored])
            np.add.at(log_lr_sum, position, np.log(info["lr"][scored]))
            np.add.at(count, position, 1.0)
        ended = scored & step.inner_done
        final = np.where(ended, np.where(info["diverged"], DIVERGED_LOG10, ratio), final)

    out = rollout(agent, core, seed, accumulate, deterministic=deterministic)
    with np.errstate(all="ignore"):
        loss_curve = loss_sum / count
        lr_curve = np.exp(log_lr_sum / count)
    return RunRecord(returns, final, diverged, out["family"], loss_curve, lr_curve)


def load_agent(spec: str, env_kwargs: dict[str, Any] | None = None) -> Any:
    """An agent from a spec (:mod:`agents.evaluation.specs`); baselines are those of :mod:`agents.controllers.lr`,
    built with the env's ``lr_range``."""
    return LR_SUITE.load_agent(spec, env_kwargs)


@dataclass
class TuneResult:
    """A baseline's best rate on the training split and what the search cost."""

    name: str
    best_lr: float
    grid: list[float]
    mean_returns: list[float]
    num_tasks: int
    budget_episodes: int = field(init=False)

    def __post_init__(self) -> None:
        self.budget_episodes = len(self.grid) * self.num_tasks


def default_grid(lr_range: tuple[float, float]) -> list[float]:
    """13 log-spaced rates from ``10 * low`` to ``high``."""
    return list(np.exp(np.linspace(math.log(lr_range[0] * 10), math.log(lr_range[1]), 13)))


def tune_baseline(
    name: str,
    env_id: str,
    env_kwargs: dict[str, Any],
    grid: list[float] | None = None,
    num_tasks: int = 64,
    seed: int = TUNE_SEED,
    extra: dict[str, float] | None = None,
) -> TuneResult:
    """Grid search of a baseline's ``lr`` on the *training* split, by mean return."""
    if env_id != ENV_ID:
        raise ValueError(f"tune_baseline tunes the baselines of {ENV_ID}, got env_id={env_id!r}")
    lr_range = tuple(env_kwargs.get("lr_range", DEFAULT_LR_RANGE))
    grid = default_grid(lr_range) if grid is None else grid
    scores = LR_SUITE.grid_search(
        lambda point: TUNABLE[name](lr=point["lr"], lr_range=lr_range, **(extra or {})),
        [{"lr": lr} for lr in grid],
        env_kwargs,
        num_tasks,
        lambda record: np.mean(record.returns),
        seed,  # divergence is in the return (its penalty)
        label=name,
    )
    return TuneResult(name, float(grid[int(np.argmax(scores))]), [float(g) for g in grid], scores, num_tasks)


@dataclass
class AgentSummary:
    """Statistics of one agent over every (seed, task) pair."""

    name: str
    num_runs: int
    return_mean: float
    return_iqm: float
    return_ci: tuple[float, float]
    log10_final_loss_mean: float
    log10_final_loss_iqm: float
    log10_final_loss_ci: tuple[float, float]
    win_rate: float | None
    diverged_percent: float
    per_family_log10_final_loss: dict[str, float]


def summarize(
    name: str, records: list[RunRecord], reference: list[RunRecord] | None, families: tuple[str, ...]
) -> AgentSummary:
    returns = np.concatenate([r.returns for r in records])
    final = np.concatenate([r.log10_final_loss for r in records])
    family = np.concatenate([r.family for r in records])
    win = None if reference is None else win_rate(final, np.concatenate([r.log10_final_loss for r in reference]))
    return AgentSummary(
        name=name,
        num_runs=len(returns),
        return_mean=float(returns.mean()),
        return_iqm=float(iqm(returns)),
        return_ci=bootstrap_ci(returns, np.mean),
        log10_final_loss_mean=float(final.mean()),
        log10_final_loss_iqm=float(iqm(final)),
        log10_final_loss_ci=bootstrap_ci(final, iqm),
        win_rate=win,
        diverged_percent=diverged_percent(np.concatenate([r.diverged for r in records])),
        per_family_log10_final_loss=per_family(final, family, families),
    )


def evaluate(
    agents: dict[str, Any],
    env_id: str = ENV_ID,
    env_kwargs: dict[str, Any] | None = None,
    num_tasks: int = 64,
    seeds: tuple[int, ...] = (0, 1, 2),
    episodes_per_trial: int | None = 1,
    reference: str | None = None,
    agent_env_kwargs: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, AgentSummary], dict[str, list[RunRecord]]]:
    """Every agent on the same ``num_tasks`` test tasks per seed; summaries and raw records (:meth:`Suite.evaluate`).

    ``reference`` names the agent that win rates are computed against.
    ``agent_env_kwargs`` overrides env arguments per agent that do not change the
    tasks (e.g. ``action_mode="relative"`` for an agent trained that way): tasks are
    keyed by the seeds, so every agent still sees the same problems.
    """
    if env_id != ENV_ID:
        raise ValueError(f"evaluate runs {ENV_ID}; use agents.evaluation.suites.get_suite({env_id!r}).evaluate")
    return LR_SUITE.evaluate(
        agents, env_kwargs, num_tasks, seeds, episodes_per_trial, agent_env_kwargs, {"reference": reference}
    )


def markdown_table(summaries: dict[str, AgentSummary], reference: str | None = None) -> str:
    """A results table: mean and IQM with bootstrap 95% CIs, win rate, divergence."""
    lines = [
        "| agent | return mean [95% CI] | return IQM | log10 LT/L0 IQM [95% CI] | win rate vs "
        + (reference or "reference")
        + " | diverged % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in sorted(summaries.values(), key=lambda s: -s.return_mean):
        win = "-" if s.win_rate is None else f"{100 * s.win_rate:.0f}%"
        lines.append(
            f"| {s.name} | {s.return_mean:.3f} [{s.return_ci[0]:.3f}, {s.return_ci[1]:.3f}] | {s.return_iqm:.3f} | "
            f"{s.log10_final_loss_iqm:.3f} [{s.log10_final_loss_ci[0]:.3f}, {s.log10_final_loss_ci[1]:.3f}] | "
            f"{win} | {s.diverged_percent:.1f} |"
        )
    return "\n".join(lines)


def plot_curves(records: dict[str, list[RunRecord]], path: str, title: str = "") -> None:
    """Mean normalized loss curve and median learning-rate schedule of each agent (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) is left alone

    from agents.evaluation.plotting import legend, line_styles, plot_lines

    figure = Figure(figsize=(11, 4))
    (loss_axis, lr_axis) = figure.subplots(1, 2)
    losses, rates = {}, {}
    for name, recs in records.items():
        length = min(len(r.loss_curve) for r in recs)
        losses[name] = np.mean([r.loss_curve[:length] for r in recs], axis=0)
        rates[name] = np.exp(np.mean([np.log(r.lr_curve[:length]) for r in recs], axis=0))
    plot_lines(loss_axis, losses)  # a diverging agent's curve is clipped, not the others flattened
    for (name, rate), (colour, style) in zip(rates.items(), line_styles(len(rates)), strict=True):
        lr_axis.plot(rate, label=name, color=colour, linestyle=style)  # log scale: every rate stays readable
    loss_axis.set(xlabel="decision", ylabel="mean log10(L_t / L_0)", title=f"loss {title}")
    lr_axis.set(
        xlabel="decision", ylabel="learning rate (geometric mean)", yscale="log", title=f"learning rate {title}"
    )
    legend(loss_axis, len(losses))
    figure.tight_layout()
    figure.savefig(path, dpi=110)


class LRSuite(Suite):
    """MetaOpt-LR-v0: learning-rate controllers tuned on the training split, scored by the final loss."""

    env_id = ENV_ID
    kind = "lr"
    default_families = ("quadratic", "logistic", "sinusoid", "sklearn")
    description = (
        "Return = log(L0/LT) of the last inner episode; win rate = share of tasks with a lower final loss "
        "than the tuned constant."
    )
    family_name = "LR"
    baselines = BASELINES
    plot_prefix = "curves"

    def run_agent(self, agent: Any, core: Any, seed: int, deterministic: bool = True) -> RunRecord:
        return run_agent(agent, core, seed, deterministic)

    def summarize(self, name, records, references, families) -> AgentSummary:
        return summarize(name, records, references.get("reference"), families)

    def table(self, summaries, references) -> str:
        return markdown_table(summaries, references.get("reference"))

    def plot(self, records, path, title="") -> None:
        plot_curves(records, path, title)

    def references(self, agents: Mapping[str, Any]) -> dict[str, str | None]:
        return {"reference": find(agents, "constant")}

    def baseline_defaults(self, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {"lr_range": tuple(env_kwargs.get("lr_range", DEFAULT_LR_RANGE))}

    def default_baselines(self, env_kwargs: Mapping[str, Any]) -> list[str]:
        oracle = env_kwargs.get("task_family") == "quadratic" and env_kwargs.get("inner_optimizer", "sgd") == "sgd"
        return [*TUNED, "random", *(["oracle"] if oracle else [])]

    def expands(self, name: str) -> bool:
        return name in TUNED

    def baseline_entries(self, name, env_kwargs, tune_tasks):
        defaults = self.baseline_defaults(env_kwargs)
        if name in TUNED:
            result = tune_baseline(name, ENV_ID, dict(env_kwargs), num_tasks=tune_tasks)
            return {f"{name} (tuned lr={result.best_lr:.3g})": TUNABLE[name](lr=result.best_lr, **defaults)}, result
        label = "oracle: analytic optimal constant" if name == "oracle" else name
        return {label: BASELINES[name](**defaults)}, None


LR_SUITE = LRSuite()

__all__ = [
    "LR_SUITE",
    "AgentSummary",
    "LRSuite",
    "RunRecord",
    "TuneResult",
    "bootstrap_ci",
    "evaluate",
    "iqm",
    "load_agent",
    "markdown_table",
    "plot_curves",
    "run_agent",
    "summarize",
    "tune_baseline",
]
