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
# # 02 · Your own agent and your own inner problem
#
# Two extension points:
#
# 1. **An agent** is any object with SB3's `predict(observation, state=None, episode_start=None,
#    deterministic=True) -> (actions, state)` on a batch of observations. The harness (and
#    `metaopt-bench --agents my_module:MyAgent`) evaluates it like a baseline or a trained model.
# 2. **An inner problem** is an `LRTaskFamily`: batched tensor code over a leading dimension of `n`
#    problems. Pass an instance as `task_family=` to `gym.make("MetaOpt-LR-v0", ...)`, `gym.make_vec`
#    or `metaopt_envs.make_sb3_vec_env`; the gradients come from autograd.

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
# ## 1. A user's agent: "bold driver"
#
# A classic heuristic: grow the learning rate by 5% while the loss keeps falling, halve it when the
# loss goes up. It reads three features of the observation (by name, from the env's core) and answers
# absolute-mode actions. It keeps no memory of its own — the rate in force is in the observation
# (`log_lr`) — so `state` passes through unchanged.

# %%
from metaopt_envs.lr.core import LR_FEATURES

FEATURE = {name: i for i, (name, _, _) in enumerate(LR_FEATURES)}


class BoldDriver:
    """Multiply the rate by `grow` after a loss decrease, by `shrink` after an increase."""

    def __init__(self, lr0=0.05, grow=1.05, shrink=0.5, lr_range=(1e-4, 10.0)):
        self.lr0, self.grow, self.shrink = lr0, grow, shrink
        self.low, self.high = np.log(lr_range[0]), np.log(lr_range[1])

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        obs = np.atleast_2d(observation)
        # log_lr is the rate in force, scaled from [log low, log high] to [-1, 1]
        log_lr = self.low + 0.5 * (obs[:, FEATURE["log_lr"]] + 1) * (self.high - self.low)
        factor = np.where(obs[:, FEATURE["loss_change"]] > 0, self.shrink, self.grow)
        new_log_lr = np.where(obs[:, FEATURE["progress"]] == 0, np.log(self.lr0), log_lr + np.log(factor))
        action = 2 * (new_log_lr - self.low) / (self.high - self.low) - 1
        return np.clip(action, -1, 1).astype(np.float32).reshape(-1, 1), state


# %% [markdown]
# Compare it with a constant rate **tuned on the training split** (`tune_baseline` searches a 13-point
# log grid by mean return, on tasks disjoint from the test tasks) and with hypergradient descent, on the
# same 32 x 2 test quadratics:

# %%
from agents.controllers.lr import ConstantLR, HypergradientLR
from agents.evaluation.lr import evaluate, markdown_table, tune_baseline

HORIZON = 50
env_kwargs = {"task_family": "quadratic", "horizon": HORIZON, "action_mode": "absolute"}
tuned = tune_baseline("constant", "MetaOpt-LR-v0", env_kwargs, num_tasks=32)
print(f"tuned constant rate: {tuned.best_lr:.3g} (searched {tuned.budget_episodes} training episodes)")

agents = {
    "bold driver (mine)": BoldDriver(),
    "hypergradient": HypergradientLR(lr=0.05, beta=0.1),
    "constant (tuned)": ConstantLR(lr=tuned.best_lr),
}
summaries, records = evaluate(
    agents, "MetaOpt-LR-v0", env_kwargs, num_tasks=32, seeds=(0, 1), reference="constant (tuned)"
)
display(Markdown(markdown_table(summaries, reference="constant (tuned)")))

# %%
fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4))
for name, recs in records.items():
    loss_ax.plot(np.mean([r.loss_curve for r in recs], axis=0), label=name)
    lr_ax.plot(np.exp(np.mean([np.log(r.lr_curve) for r in recs], axis=0)), label=name)
loss_ax.set(xlabel="decision", ylabel="mean log10(L_t / L_0)", title="loss (test quadratics)")
lr_ax.set(xlabel="decision", ylabel="learning rate (geometric mean)", yscale="log", title="schedules")
loss_ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The bold driver loses here: with minibatch gradient noise the full loss goes up now and then even
# at a good rate, and each increase halves the rate, so it stalls around 0.1, half the tuned constant.
# Hypergradient descent, which reads the agreement of successive gradients instead of loss changes,
# grows its rate steadily and wins on most tasks. A heuristic that looks reasonable can lose to a
# tuned constant: the harness's win rate and IQM make that visible.
#
# The same class works from the command line if it lives in an importable module:
# `metaopt-bench --agents baselines,my_module:BoldDriver ...`.
#
# ## 2. A user's inner problem: batched least squares
#
# Subclass `LRTaskFamily` and implement four methods with tensor operations over the leading dimension
# (`n` problems at once):
#
# - `sample(keys, split)`: task data from int64 keys (one per problem) — all randomness must come from
#   the keys (`metaopt_envs.core.rng`), so a batched run equals `n` single runs;
# - `init_params(tasks, keys)`: the `(n, P)` starting parameters;
# - `loss(params, tasks, split)`: the full-data loss `(n,)`;
# - `minibatch_loss(params, tasks, keys)`: one minibatch loss per problem (its autograd gradient is
#   what SGD uses).
#
# Here: `1/2 mean((X w - y)^2)` with 5 features and 64 noisy samples per task; the `test` split draws
# true weights shifted by +3, so train and test tasks differ.

# %%
from metaopt_envs.core import rng
from metaopt_envs.lr.families import LRTaskFamily


class LeastSquares(LRTaskFamily):
    """Batched linear least squares with its own random data per task."""

    name = "least_squares"

    def __init__(self, num_features=5, num_samples=64, batch_size=8, noise=0.1):
        self.num_features, self.num_samples, self.batch_size, self.noise = num_features, num_samples, batch_size, noise
        self.param_dim = num_features

    def sample(self, keys, split):
        shift = 0.0 if split == "train" else 3.0
        x = rng.normal(rng.fold(keys, 1), (self.num_samples, self.num_features))
        w = rng.normal(rng.fold(keys, 2), (self.num_features,)) + shift
        y = (x @ w.unsqueeze(-1)).squeeze(-1) + self.noise * rng.normal(rng.fold(keys, 3), (self.num_samples,))
        return {"x": x, "y": y}

    def init_params(self, tasks, keys):
        return torch.zeros(keys.shape[0], self.param_dim, device=keys.device)

    @staticmethod
    def _objective(params, x, y):
        residual = (x @ params.unsqueeze(-1)).squeeze(-1) - y
        return 0.5 * residual.square().mean(-1)

    def loss(self, params, tasks, split="train"):
        return self._objective(params, tasks["x"], tasks["y"])

    def minibatch_loss(self, params, tasks, keys):
        index = rng.randint(keys, self.num_samples, (self.batch_size,))
        x = tasks["x"].gather(1, index.unsqueeze(-1).expand(-1, -1, self.num_features))
        return self._objective(params, x, tasks["y"].gather(1, index))


# %% [markdown]
# Turn it into an environment exactly like a built-in family. One episode of 30 SGD steps at a
# constant rate of 0.3:

# %%
H = 30
env = gym.make("MetaOpt-LR-v0", task_family=LeastSquares(), horizon=H)
obs, info = env.reset(seed=0)
low, high = np.log(1e-4), np.log(10.0)
action = np.array([2 * (np.log(0.3) - low) / (high - low) - 1], dtype=np.float32)
losses, total = [], 0.0
for _ in range(H):
    obs, reward, terminated, truncated, info = env.step(action)
    losses.append(info["loss"])
    total += reward
print(
    f"L0 = {info['initial_loss']:.3f}, LT = {info['loss']:.4f}, return log(L0/LT) = {total:.2f}, truncated={truncated}"
)

# %% [markdown]
# The batched forms work too: `gym.make_vec` gives one tensor program over 16 different least-squares
# problems (row `i` of a reset with `seed=s` is the single env's problem of `seed=s + i`):

# %%
envs = gym.make_vec("MetaOpt-LR-v0", num_envs=16, task_family=LeastSquares(), horizon=H)
obs, _ = envs.reset(seed=0)
curves = []
for _ in range(H):
    obs, rewards, terminated, truncated, infos = envs.step(np.repeat(action[None], 16, axis=0))
    curves.append(np.log10(infos["loss"] / infos["initial_loss"]))
envs.close()

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, H + 1), np.array(curves), color="tab:blue", alpha=0.4)
ax.plot(
    np.arange(1, H + 1),
    np.log10(np.array(losses) / info["initial_loss"]),
    color="k",
    lw=2,
    ls="--",
    label="single env (seed 0)",
)
ax.set(xlabel="SGD step", ylabel="log10(L_t / L_0)", title="16 least-squares problems, lr = 0.3")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Each thin line is one problem of the batch; the black line is the single env above, which is exactly
# row 0 of the batch (same seed). The loss flattens at the noise floor of each problem.
#
# Finally, the harness accepts the family instance in `env_kwargs`, so every agent — including the
# bold driver — can be benchmarked on *your* problem, on its `test` split:

# %%
ls_kwargs = {"task_family": LeastSquares(), "horizon": H, "action_mode": "absolute"}
tuned_ls = tune_baseline("constant", "MetaOpt-LR-v0", ls_kwargs, num_tasks=16)
agents = {
    "bold driver (mine)": BoldDriver(),
    "constant (tuned)": ConstantLR(lr=tuned_ls.best_lr),
    "constant (lr=0.01)": ConstantLR(lr=0.01),
}
summaries, records = evaluate(
    agents, "MetaOpt-LR-v0", ls_kwargs, num_tasks=16, seeds=(0,), reference="constant (tuned)"
)
print(f"tuned constant on least squares: {tuned_ls.best_lr:.3g}")
display(Markdown(markdown_table(summaries, reference="constant (tuned)")))
