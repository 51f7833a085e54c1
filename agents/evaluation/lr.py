"""Benchmark harness: every agent on exactly the same held-out tasks, with honest statistics.

An agent is anything with SB3's ``predict(observation, state, episode_start,
deterministic)``: a hand-designed controller (:mod:`agents.controllers.lr`), a saved
SB3 / sb3-contrib model, or a user's class given as ``module:Class``. The
harness runs them on one batched core of ``num_tasks`` test tasks per seed
(the same seeds for every agent, so the same tasks), one RL² trial of
``episodes_per_trial`` inner episodes per task, and reports per agent:

- the return of the last inner episode, ``log(L0 / LT)``;
- the final normalized loss ``LT / L0`` (as ``log10``), per task;
- mean, interquartile mean (IQM) and bootstrap 95% confidence intervals of both;
- the win rate against a reference agent (by default the best tuned constant):
  the fraction of tasks where the agent's final loss is lower;
- divergence rate; and mean curves of the normalized loss and the learning rate.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import metaopt_envs
from metaopt_envs.core import seeds_to_keys


@dataclass
class RunRecord:
    """Per-task results of one agent on one batch of tasks (arrays over tasks)."""

    returns: np.ndarray  # (n,) return of the last inner episode
    log10_final_loss: np.ndarray  # (n,) log10(LT / L0) of the last inner episode
    diverged: np.ndarray  # (n,) bool, any inner episode diverged
    family: np.ndarray  # (n,) family index
    loss_curve: np.ndarray  # (T,) mean log10(L_t / L0) over the tasks at decision t of the last inner episode
    lr_curve: np.ndarray  # (T,) geometric-mean learning rate over the tasks at decision t (NaN where none ran)


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (Agarwal et al., 2021)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    n = len(values)
    low, high = int(math.floor(0.25 * n)), int(math.ceil(0.75 * n))
    return float(values[low:high].mean()) if high > low else float(values.mean())


def bootstrap_ci(
    values: np.ndarray, statistic: Callable[[np.ndarray], float], num_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95% confidence interval of ``statistic`` over tasks."""
    values = np.asarray(values, dtype=np.float64)
    generator = np.random.default_rng(seed)
    index = generator.integers(0, len(values), size=(num_resamples, len(values)))
    stats = np.array([statistic(values[row]) for row in index])
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def run_agent(agent: Any, core: Any, seed: int, deterministic: bool = True) -> RunRecord:
    """Run ``agent`` for one trial on each of ``core``'s tasks (reset with ``seed``)."""
    n = core.num_envs
    every = torch.ones(n, dtype=torch.bool, device=core.device)
    core.reset_rows(every, keys=seeds_to_keys(seed, n, core.device))
    from agents.controllers.lr import Controller

    base = getattr(core, "core", core)
    if isinstance(agent, Controller) and getattr(base, "action_mode", "absolute") != "absolute":
        raise ValueError("hand-designed controllers emit absolute-mode actions; evaluate them with action_mode='absolute'")
    if hasattr(agent, "bind_core"):  # an oracle that reads the tasks (documented as such)
        agent.bind_core(core)
    trial = getattr(core, "episodes_per_trial", 1)
    obs = core.observe().cpu().numpy()
    state, episode_start = None, np.ones(n, dtype=bool)
    done = np.zeros(n, dtype=bool)
    episode = np.zeros(n, dtype=np.int64)
    returns = np.zeros(n)
    diverged = np.zeros(n, dtype=bool)
    final = np.zeros(n)
    family = np.zeros(n, dtype=np.int64)
    decisions = base.num_decisions
    # Curves are indexed by each task's own decision count, so tasks whose last inner episode
    # started at different times (an earlier one diverged) line up.
    loss_sum, log_lr_sum, count = np.zeros(decisions), np.zeros(decisions), np.zeros(decisions)
    while not done.all():
        actions, state = agent.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        result = core.step(torch.as_tensor(np.asarray(actions, dtype=np.float32).reshape(n, -1), device=core.device))
        info = {k: v.cpu().numpy() for k, v in result.info.items()}
        reward = result.reward.cpu().numpy()
        inner_done = info.get("inner_episode_done", (result.terminated | result.truncated).cpu().numpy())
        live = ~done
        last_episode = live & (episode == trial - 1)
        returns = np.where(last_episode, returns + reward, returns)
        diverged |= live & info["diverged"]
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            ratio = np.log10(np.clip(info["loss"] / np.maximum(info["initial_loss"], 1e-30), 1e-30, 1e30))
        if last_episode.any():
            position = info["inner_step"][last_episode] // base.action_every - 1
            np.add.at(loss_sum, position, ratio[last_episode])
            np.add.at(log_lr_sum, position, np.log(info["lr"][last_episode]))
            np.add.at(count, position, 1.0)
        ended = live & inner_done
        final = np.where(ended & last_episode, np.where(info["diverged"], np.log10(1e30), ratio), final)
        family = np.where(ended, info["family"], family)
        episode += ended
        done |= live & (episode >= trial)
        obs = result.observation.cpu().numpy()
        episode_start = (result.terminated | result.truncated).cpu().numpy()
    with np.errstate(all="ignore"):
        loss_curve = loss_sum / count
        lr_curve = np.exp(log_lr_sum / count)
    return RunRecord(returns, final, diverged, family, loss_curve, lr_curve)


def load_agent(spec: str, env_kwargs: dict[str, Any] | None = None) -> Any:
    """An agent from a spec.

    - ``"baseline:NAME"`` or ``"baseline:NAME?lr=0.1&beta=0.05"``: a controller of :mod:`agents.controllers.lr`;
    - ``"module:Class"``: a user's class, constructed without arguments;
    - a path ending in ``.zip``: a saved SB3 / sb3-contrib model (the algorithm is found by trying PPO,
      RecurrentPPO and the fast RecurrentPPO).
    """
    from agents.controllers.lr import BASELINES

    env_kwargs = env_kwargs or {}
    if spec.startswith("baseline:"):
        name, _, query = spec[len("baseline:") :].partition("?")
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
        kwargs: dict[str, Any] = {}
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            kwargs[key] = float(value)
        lr_range = env_kwargs.get("lr_range", (1e-4, 10.0))
        return BASELINES[name](lr_range=tuple(lr_range), **kwargs)
    if spec.endswith(".zip"):
        from sb3_contrib import RecurrentPPO
        from stable_baselines3 import PPO

        errors = []
        for algo in (RecurrentPPO, PPO):
            try:
                return algo.load(spec, device="cpu")
            except Exception as error:  # noqa: BLE001 - try the next algorithm
                errors.append(f"{algo.__name__}: {error}")
        raise ValueError(f"could not load {spec!r} as an SB3 model: {errors}")
    if ":" in spec:
        module_name, _, class_name = spec.partition(":")
        return getattr(importlib.import_module(module_name), class_name)()
    raise ValueError(f"agent spec must be 'baseline:NAME', 'module:Class' or a .zip model path, got {spec!r}")


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


def tune_baseline(
    name: str,
    env_id: str,
    env_kwargs: dict[str, Any],
    grid: list[float] | None = None,
    num_tasks: int = 64,
    seed: int = 12345,
    extra: dict[str, float] | None = None,
) -> TuneResult:
    """Grid search of a baseline's ``lr`` on the *training* split, by mean return."""
    from agents.controllers.lr import BASELINES

    lr_range = env_kwargs.get("lr_range", (1e-4, 10.0))
    if grid is None:
        grid = list(np.exp(np.linspace(math.log(lr_range[0] * 10), math.log(lr_range[1]), 13)))
    core = metaopt_envs.make_core(env_id, num_envs=num_tasks, **{**env_kwargs, "split": "train"})
    scores = []
    for lr in grid:
        agent = BASELINES[name](lr=lr, lr_range=tuple(lr_range), **(extra or {}))
        record = run_agent(agent, core, seed)
        scores.append(float(np.mean(record.returns)))  # divergence is already in the return (its penalty)
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


def summarize(name: str, records: list[RunRecord], reference: list[RunRecord] | None, families: tuple[str, ...]) -> AgentSummary:
    returns = np.concatenate([r.returns for r in records])
    final = np.concatenate([r.log10_final_loss for r in records])
    family = np.concatenate([r.family for r in records])
    win = None
    if reference is not None:
        ref_final = np.concatenate([r.log10_final_loss for r in reference])
        win = float(np.mean(final < ref_final) + 0.5 * np.mean(final == ref_final))
    per_family = {fam: float(final[family == i].mean()) for i, fam in enumerate(families) if (family == i).any()}
    return AgentSummary(
        name=name,
        num_runs=len(returns),
        return_mean=float(returns.mean()),
        return_iqm=iqm(returns),
        return_ci=bootstrap_ci(returns, np.mean),
        log10_final_loss_mean=float(final.mean()),
        log10_final_loss_iqm=iqm(final),
        log10_final_loss_ci=bootstrap_ci(final, iqm),
        win_rate=win,
        diverged_percent=100.0 * float(np.concatenate([r.diverged for r in records]).mean()),
        per_family_log10_final_loss=per_family,
    )


def evaluate(
    agents: dict[str, Any],
    env_id: str = "MetaOpt-LR-v0",
    env_kwargs: dict[str, Any] | None = None,
    num_tasks: int = 64,
    seeds: tuple[int, ...] = (0, 1, 2),
    episodes_per_trial: int = 1,
    reference: str | None = None,
    agent_env_kwargs: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, AgentSummary], dict[str, list[RunRecord]]]:
    """Every agent on the same ``num_tasks`` test tasks per seed; summaries and raw records.

    ``reference`` names the agent that win rates are computed against.
    ``agent_env_kwargs`` overrides env arguments per agent that do not change the
    tasks (e.g. ``action_mode="relative"`` for an agent trained that way): tasks are
    keyed by the seeds, so every agent still sees the same problems.
    """
    env_kwargs = {**(env_kwargs or {}), "split": (env_kwargs or {}).get("split", "test")}
    cores: dict[str, Any] = {}

    def core_for(name: str) -> Any:
        kwargs = {**env_kwargs, **(agent_env_kwargs or {}).get(name, {})}
        key = repr(sorted(kwargs.items()))
        if key not in cores:
            cores[key] = metaopt_envs.make_core(env_id, num_envs=num_tasks, episodes_per_trial=episodes_per_trial, **kwargs)
        return cores[key]

    records = {name: [run_agent(agent, core_for(name), 10_000 + seed) for seed in seeds] for name, agent in agents.items()}
    base = next(iter(cores.values()))
    families = getattr(base, "core", base).family.families()
    ref = records.get(reference) if reference else None
    summaries = {name: summarize(name, recs, ref, families) for name, recs in records.items()}
    return summaries, records


def markdown_table(summaries: dict[str, AgentSummary], reference: str | None = None) -> str:
    """A results table: mean and IQM with bootstrap 95% CIs, win rate, divergence."""
    lines = [
        "| agent | return mean [95% CI] | return IQM | log10 LT/L0 IQM [95% CI] | win rate vs "
        + (reference or "reference") + " | diverged % |",
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

    figure = Figure(figsize=(11, 4))
    (loss_axis, lr_axis) = figure.subplots(1, 2)
    for name, recs in records.items():
        length = min(len(r.loss_curve) for r in recs)
        loss_axis.plot(np.mean([r.loss_curve[:length] for r in recs], axis=0), label=name)
        lr_axis.plot(np.exp(np.mean([np.log(r.lr_curve[:length]) for r in recs], axis=0)), label=name)
    loss_axis.set(xlabel="decision", ylabel="mean log10(L_t / L_0)", title=f"loss {title}")
    lr_axis.set(xlabel="decision", ylabel="learning rate (geometric mean)", yscale="log", title=f"learning rate {title}")
    loss_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
