"""Does an RL² agent on the LR mixture know which family a task is from, and does it act on it?

    python benchmarks/rl2_family_probe.py runs/lr-mixture-rs --families logistic,sinusoid

Two measurements on held-out test tasks of the mixture (``--num-tasks``, split "test", one batch):

1. What the observations tell: a random forest (scikit-learn, 4-fold cross-validation) predicts the
   family from the first ``k`` observations, with every row holding its rate (action 0) or raising it
   by x2^0.5 per decision (action 0.5): an upper bound on what any policy could know after ``k``
   decisions without probing harder.
2. What the agent knows and does: the agent runs its trials (deterministic actions); at chosen
   decisions a logistic regression (4-fold) predicts the family from the actor LSTM's hidden state,
   beside each family's mean action at that decision.

Only the tasks of ``--families`` (two or more) are classified. Writes ``<out>.json`` and ``<out>.md``
with the commit, CPU and command (one torch thread).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import metaopt_envs
from agents.controllers.base import core_of
from agents.evaluation.report import write_benchmark
from agents.rl2.runs import load_trained
from metaopt_envs.core import rng

STEPS = (0, 2, 5, 10, 49, 50, 52, 55, 60, 99)
"""Decisions (of the whole trial of 2 x 50) at which the agent's memory is probed."""


def observation_bound(num_tasks: int, families: list[str], ks: tuple[int, ...], seed: int) -> list[dict]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    rows = []
    for action in (0.0, 0.5):
        for k in ks:
            core = metaopt_envs.make_core(
                "MetaOpt-LR-v0", num_envs=num_tasks, task_family="mixture", split="test", horizon=50,
                action_mode="relative",
            )  # fmt: skip
            core.reset_rows(torch.ones(num_tasks, dtype=torch.bool), keys=rng.keys_from_seeds(
                [seed + i for i in range(num_tasks)]))  # fmt: skip
            names = core.family.families()
            family = core.family.family_index(core.tasks).numpy().copy()
            features = []
            for _ in range(k):
                features.append(core.observe().numpy())
                core.step(torch.full((num_tasks, 1), action))
            features.append(core.observe().numpy())
            keep = np.isin(family, [names.index(f) for f in families])
            x = np.concatenate(features, axis=1)[keep]
            forest = RandomForestClassifier(n_estimators=200, random_state=0)
            accuracy = float(cross_val_score(forest, x, family[keep], cv=4).mean())
            rows.append({"action": action, "decisions": k, "accuracy": accuracy, "tasks": int(keep.sum())})
    return rows


def agent_probe(run: str, num_tasks: int, families: list[str], seed: int) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    trained = load_trained(run)
    kwargs = {**trained.env_kwargs, "task_family": "mixture", "split": "test"}
    env = metaopt_envs.make_sb3_vec_env(
        "MetaOpt-LR-v0", num_envs=num_tasks, seed=seed, episodes_per_trial=trained.episodes_per_trial, **kwargs
    )
    core = core_of(env)
    names = core.family.families()
    obs, state, start = env.reset(), None, np.ones(num_tasks, dtype=bool)
    family = core.family.family_index(core.tasks).numpy().copy()
    keep = np.isin(family, [names.index(f) for f in families])
    hidden, actions = {}, {}
    decisions = (trained.episodes_per_trial or 1) * core.num_decisions
    for t in range(decisions):
        action, state = trained.model.predict(obs, state=state, episode_start=start, deterministic=True)
        hidden[t], actions[t] = state[0][0].copy(), np.clip(action[:, 0], -1.0, 1.0)  # the actor's h after obs t
        obs, _, start, _ = env.step(action)
    rows = []
    for t in (s for s in STEPS if s < decisions):
        probe = LogisticRegression(max_iter=2000)
        accuracy = float(cross_val_score(probe, hidden[t][keep], family[keep], cv=4).mean())
        means = {f: float(actions[t][family == names.index(f)].mean()) for f in families}
        rows.append({"decision": t + 1, "accuracy": accuracy, "mean_action": means})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="an RL² run directory (or model.zip with its run spec) trained on the LR mixture")
    p.add_argument("--families", default="logistic,sinusoid")
    p.add_argument("--num-tasks", type=int, default=512)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    families = [f for f in args.families.split(",") if f]
    if len(families) < 2:
        raise SystemExit(f"metaopt: --families must name two or more families, got {args.families!r}")
    bound = observation_bound(args.num_tasks, families, (0, 1, 5, 10), 10_000 + args.seed)
    probe = agent_probe(args.run, args.num_tasks, families, args.seed)
    vs = " vs ".join(families)
    lines = [
        f"# Family probe of `{args.run}`: {vs} ({args.num_tasks} test tasks of the mixture)",
        "",
        "What the observations tell (random forest on the first k observations, 4-fold accuracy):",
        "",
        "| rows' action | decisions k | accuracy |",
        "|---:|---:|---:|",
        *(f"| {r['action']} | {r['decisions']} | {r['accuracy']:.3f} |" for r in bound),
        "",
        "What the agent knows (linear probe on its actor LSTM state) and does (mean action, deterministic):",
        "",
        f"| decision of the trial | probe accuracy | {' | '.join(f'mean action {f}' for f in families)} |",
        "|---:|---:|" + "---:|" * len(families),
        *(f"| {r['decision']} | {r['accuracy']:.3f} | "
          + " | ".join(f"{r['mean_action'][f]:+.2f}" for f in families) + " |" for r in probe),
    ]  # fmt: skip
    out = Path(args.out or f"benchmarks/results/rl2_mixture/family_probe/{Path(args.run).name}")
    payload = {"run": args.run, "families": families, "num_tasks": args.num_tasks, "seed": args.seed}
    write_benchmark(out, lines, {**payload, "observation_bound": bound, "agent_probe": probe, "torch_threads": 1})


if __name__ == "__main__":
    main()
