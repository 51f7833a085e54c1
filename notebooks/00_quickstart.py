# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Quickstart: MetaOpt-LR-v0
#
# `MetaOpt-LR-v0` turns *learning-rate control* into a reinforcement-learning problem.
# Each episode wraps an **inner** optimization problem (here a noisy quadratic); the agent is the
# **outer** learner: at every decision it reads a few scale-free statistics of the inner run and
# sets the learning rate of SGD for the next step. The reward is the log-loss improvement, so the
# return of an episode telescopes to `log(L0 / LT)`: higher is better.
#
# In this notebook you will
#
# 1. make the environment, step it once and read its observation features;
# 2. run two hand-designed controllers (a constant rate and a cosine schedule) through the
#    benchmark harness on the same held-out test tasks;
# 3. plot their loss curves and learning-rate schedules.
#
# Everything runs on the CPU in a few seconds.

# %%
# %matplotlib inline
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import metaopt_envs  # noqa: F401  (registers the MetaOpt-* ids)

torch.set_num_threads(1)  # small CPU machines: one thread per process

# %% [markdown]
# ## 1. Make the environment and step it
#
# `gym.make` returns a standard Gymnasium env. We pick the `quadratic` task family, 50 inner SGD steps
# per episode and the default **absolute** action mode: the action in `[-1, 1]` is a log learning
# rate inside `lr_range = (1e-4, 10)` (`-1` is `1e-4`, `+1` is `10`). The env owns its episode
# length: `horizon=50` gives exactly 50 decisions.

# %%
HORIZON = 50
env = gym.make("MetaOpt-LR-v0", task_family="quadratic", horizon=HORIZON)
obs, info = env.reset(seed=0)
print("observation space:", env.observation_space)
print("action space:     ", env.action_space)

# One step with a learning rate of about 0.1: action = 2 (log lr - log low) / (log high - log low) - 1
low, high = np.log(1e-4), np.log(10.0)
action = np.array([2 * (np.log(0.1) - low) / (high - low) - 1], dtype=np.float32)
obs, reward, terminated, truncated, info = env.step(action)
print(f"action {action[0]:+.3f} -> lr {info['lr']:.4f}; reward {reward:+.4f}; info: {info}")

# %% [markdown]
# The observation is a vector of 8 features, all scale-free so that one agent can work across
# problems whose losses differ by orders of magnitude. Their names live on the batched core behind
# the env (`env.unwrapped.core.observation_names`); the full table with ranges is in
# `help(metaopt_envs.lr.env.MetaOptLREnv)`.

# %%
names = env.unwrapped.core.observation_names
rows = "\n".join(f"| {i} | `{name}` | {value:+.4f} |" for i, (name, value) in enumerate(zip(names, obs)))
display(Markdown("| # | feature | value after one step |\n|---|---|---:|\n" + rows))

# %% [markdown]
# What you see: after one step `progress` is `1/50 = 0.02`, `log_lr` is the rate just used (scaled
# to `[-1, 1]`), `log_loss_ratio` and `loss_change` are negative when the loss went down, and the
# gradient statistics (`grad_cosine`, `grad_noise`, `update_cosine`) tell the agent whether
# successive gradients agree (rate too small) or flip sign (rate too large).
#
# Let us finish the episode with the same constant rate and look at the return, `log(L0 / LT)`:

# %%
total = reward
while not (terminated or truncated):
    obs, reward, terminated, truncated, info = env.step(action)
    total += reward
print(f"return {total:.3f} = log(L0/LT) = {np.log(info['initial_loss'] / info['loss']):.3f}")
env.close()

# %% [markdown]
# ## 2. Two baselines through the harness
#
# Every agent — a hand-designed controller, a trained SB3 model or your own class — only needs SB3's
# `predict(observation, state, episode_start, deterministic)`. `agents.evaluation.lr.evaluate` runs all of
# them on **exactly the same** held-out test tasks (the `test` split, keyed by the seeds) with one
# batched tensor program, and summarizes per agent: mean return with a bootstrap 95% CI, the
# interquartile mean (IQM), the final `log10 LT/L0`, the win rate against a reference agent and the
# divergence rate.
#
# The controllers of `agents.controllers.lr` emit absolute-mode actions, so the env keeps
# `action_mode="absolute"`.

# %%
from agents.controllers.lr import ConstantLR, CosineLR
from agents.evaluation.lr import evaluate, markdown_table

env_kwargs = {"task_family": "quadratic", "horizon": HORIZON, "action_mode": "absolute"}
agents = {
    "constant (lr=0.2)": ConstantLR(lr=0.2),
    "cosine (lr=0.4)": CosineLR(lr=0.4),
}
summaries, records = evaluate(
    agents, "MetaOpt-LR-v0", env_kwargs, num_tasks=32, seeds=(0, 1), reference="constant (lr=0.2)"
)
display(Markdown(markdown_table(summaries, reference="constant (lr=0.2)")))

# %% [markdown]
# Each row aggregates 32 tasks x 2 seeds = 64 runs. The win rate is the share of tasks where the
# agent's final loss is lower than the reference's (the reference itself scores 50%). A run that
# diverges ends with a `-10` penalty, so a few diverged tasks pull the mean far below the IQM:
# compare the two columns before trusting a mean. These rates are hand-picked; `metaopt-bench` and
# `metaopt-train` tune every baseline's rate on the *training* split first (notebook 01).
#
# ## 3. Loss curves and learning-rate schedules
#
# `evaluate` also returns the raw records: per seed, the mean `log10(L_t / L0)` and the geometric-mean
# learning rate at each decision. (`agents.evaluation.lr.plot_curves(records, path)` writes the same two
# panels to a PNG file, as the command-line tools do; here we plot inline.)

# %%
fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4))
for name, recs in records.items():
    loss_ax.plot(np.mean([r.loss_curve for r in recs], axis=0), label=name)
    lr_ax.plot(np.exp(np.mean([np.log(r.lr_curve) for r in recs], axis=0)), label=name)
loss_ax.set(xlabel="decision", ylabel="mean log10(L_t / L_0)", title="loss (test tasks)")
lr_ax.set(xlabel="decision", ylabel="learning rate", yscale="log", title="learning-rate schedule")
loss_ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Left: how fast each controller drives the loss down (lower is better; `-2` means the loss fell
# 100-fold). The mean at each decision is over the tasks still running: a run that diverges terminates
# early and leaves the average, which is the sudden drop of the cosine curve near decision 9 (its
# large early rate, 0.4, diverged on the highest-curvature tasks). Right: the schedules themselves —
# flat for the constant, a half cosine from 0.4 towards 0 for the cosine schedule. A large early rate
# makes fast progress on well-conditioned tasks but can
# diverge on high-curvature ones; decaying it helps near the end, where gradient noise dominates.
# The best rate depends on each task's curvature and noise, which the agent can only infer from its
# observations: that is what a learned controller (notebook 01) exploits.
#
# The distribution behind the means — final `log10 LT/L0` per task:

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
finals = [np.concatenate([r.log10_final_loss for r in recs]) for recs in records.values()]
finals = [np.clip(f, -6, 2) for f in finals]  # diverged runs are recorded as +30; clip for display
ax.boxplot(finals, showmeans=True)
ax.set_xticks(range(1, len(records) + 1), list(records))
ax.set(ylabel="final log10(L_T / L_0) (clipped to [-6, 2])", title="per-task final loss")
plt.tight_layout()
plt.show()

# %% [markdown]
# Next: `01_train_rl2.ipynb` trains an RL² agent and compares it with *tuned* baselines;
# `02_custom_agent_and_problem.ipynb` plugs in your own agent and your own inner problem;
# `03_ensemble_and_hpo.ipynb` covers the ensemble-weighting and hyperparameter-search environments.
