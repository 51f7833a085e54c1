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
# # 04 · Bring your own model
#
# `ModuleFamily` turns any `torch.nn.Module` into a batched inner problem of `MetaOpt-LR-v0`: B copies of
# the model, each with its own initialization, data subset, minibatches and dropout masks drawn from its
# row key, advanced together with `torch.func` (`functional_call`, `vmap`, `grad`). This notebook
#
# 1. wraps a small model of our own and gets an env, a vector env and an SB3 VecEnv;
# 2. checks that row `i` of a batch is the single env seeded `i`;
# 3. compares constant learning rates on the held-out test split of the realistic suite's `mnist1d_mlp`.

# %%
# %matplotlib inline
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from torch import nn

import metaopt_envs
from metaopt_envs.lr.families import ModuleFamily

torch.set_num_threads(1)

# %% [markdown]
# ## 1. Your model, your data, your loss
#
# The family needs the module (or a factory), the shape of one input sample, the data as an
# `(inputs, targets)` pair of tensors (each task draws `num_train + num_val` distinct samples; a
# `test_data=` pair would be held out for the test split) and a loss `loss(outputs, targets) -> scalar`
# (default: cross-entropy). Every `nn.Dropout` becomes a keyed dropout.


# %%
class RingNet(nn.Module):
    """Classify 2-D points by the ring they lie on: 2-32-32-3 with tanh and dropout."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(2, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3)
        )

    def forward(self, x):
        return self.layers(x)


generator = torch.Generator().manual_seed(0)
points = 3 * torch.rand(1000, 2, generator=generator) - 1.5
rings = (points.norm(dim=-1) * 2).long().clamp(max=2)
family = ModuleFamily(RingNet, (2,), (points, rings), num_train=128, num_val=64, batch_size=32, name="rings")
metaopt_envs.check_task_family(family)  # the same checks every built-in family passes

kwargs = {"task_family": family, "horizon": 50, "inner_optimizer": "adam", "lr_range": (1e-4, 1.0)}
env = gym.make("MetaOpt-LR-v0", **kwargs)
envs = gym.make_vec("MetaOpt-LR-v0", num_envs=8, **kwargs)
sb3_envs = metaopt_envs.make_sb3_vec_env("MetaOpt-LR-v0", num_envs=8, seed=0, **kwargs)
print("parameters per task:", family.param_dim, "| observation:", env.observation_space)

# %% [markdown]
# ## 2. A batch row is the single env with that seed
#
# Each row draws everything from its own key, so row `i` of a vector env reset with `seed=0` replays a single
# env reset with `seed=i`. For MLPs the two are bit-equal; the README states the tolerance for convolutions.

# %%
actions = np.random.default_rng(0).uniform(-1, 1, (10, 8, 1)).astype(np.float32)
batch_obs = [envs.reset(seed=0)[0]] + [envs.step(a)[0] for a in actions]
deviation = 0.0
for i in range(8):
    single = [env.reset(seed=i)[0]] + [env.step(a[i])[0] for a in actions]
    deviation = max(deviation, float(np.abs(np.stack(single) - np.stack(batch_obs)[:, i]).max()))
print("largest difference between batch rows and single envs:", deviation)
assert deviation == 0.0

# %% [markdown]
# ## 3. Constant rates on held-out MNIST-1D signals
#
# The realistic suite is built on the same class: `mnist1d_mlp` trains a 40-64-64-10 MLP on MNIST-1D
# (generated offline by the `mnist1d` package); its test split draws from MNIST-1D's held-out test signals.
# The harness runs any agent with SB3's `predict` on the same test tasks.

# %%
from agents.controllers.lr import ConstantLR
from agents.evaluation.lr import evaluate, markdown_table

env_kwargs = {"task_family": "mnist1d_mlp", "horizon": 30, "action_mode": "absolute", "inner_optimizer": "adam"}
agents = {f"constant (lr={lr})": ConstantLR(lr=lr) for lr in (1e-3, 1e-2, 1e-1)}
summaries, records = evaluate(
    agents, "MetaOpt-LR-v0", env_kwargs, num_tasks=8, seeds=(0,), reference="constant (lr=0.01)"
)
display(Markdown(markdown_table(summaries, reference="constant (lr=0.01)")))

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name, recs in records.items():
    ax.plot(np.mean([r.loss_curve for r in recs], axis=0), label=name)
ax.set_xlabel("decision")
ax.set_ylabel("log10 L_t / L_0")
ax.set_title("mnist1d_mlp, held-out test signals, Adam")
ax.legend()
plt.show()
