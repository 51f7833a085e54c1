"""Generate the tutorial notebooks (clean, without outputs).

    python notebooks/make_notebooks.py

Edit the cells here, not in the .ipynb files, then run this script again.
``tests/test_notebooks.py`` executes every notebook top to bottom.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
%matplotlib inline
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch
import matplotlib.pyplot as plt
from IPython.display import Markdown, Image, display

import gymnasium as gym
import metaopt_envs  # registers the MetaOpt-* ids

torch.set_num_threads(1)  # small CPU machines: one thread per process"""


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


# --------------------------------------------------------------------------- 00 quickstart
QUICKSTART = [
    md("""
# 00 · Quickstart: MetaOpt-LR-v0

`MetaOpt-LR-v0` turns *learning-rate control* into a reinforcement-learning problem.
Each episode wraps an **inner** optimization problem (here a noisy quadratic); the agent is the
**outer** learner: at every decision it reads a few scale-free statistics of the inner run and
sets the learning rate of SGD for the next step. The reward is the log-loss improvement, so the
return of an episode telescopes to `log(L0 / LT)`: higher is better.

In this notebook you will

1. make the environment, step it once and read its observation features;
2. run two hand-designed controllers (a constant rate and a cosine schedule) through the
   benchmark harness on the same held-out test tasks;
3. plot their loss curves and learning-rate schedules.

Everything runs on the CPU in a few seconds.
"""),
    code(SETUP),
    md("""
## 1. Make the environment and step it

`gym.make` returns a standard Gymnasium env. We pick the `quadratic` task family, 50 inner SGD steps
per episode and the default **absolute** action mode: the action in `[-1, 1]` is a log learning
rate inside `lr_range = (1e-4, 10)` (`-1` is `1e-4`, `+1` is `10`). With a non-default `horizon`,
pass `max_episode_steps` too (the registered `TimeLimit` is 100 steps).
"""),
    code("""
HORIZON = 50
env = gym.make("MetaOpt-LR-v0", task_family="quadratic", horizon=HORIZON, max_episode_steps=HORIZON)
obs, info = env.reset(seed=0)
print("observation space:", env.observation_space)
print("action space:     ", env.action_space)

# One step with a learning rate of about 0.1: action = 2 (log lr - log low) / (log high - log low) - 1
low, high = np.log(1e-4), np.log(10.0)
action = np.array([2 * (np.log(0.1) - low) / (high - low) - 1], dtype=np.float32)
obs, reward, terminated, truncated, info = env.step(action)
print(f"action {action[0]:+.3f} -> lr {info['lr']:.4f}; reward {reward:+.4f}; info: {info}")
"""),
    md("""
The observation is a vector of 8 features, all scale-free so that one agent can work across
problems whose losses differ by orders of magnitude. Their names live on the batched core behind
the env (`env.unwrapped.core.observation_names`); the full table with ranges is in
`help(metaopt_envs.lr.env.MetaOptLREnv)`.
"""),
    code("""
names = env.unwrapped.core.observation_names
rows = "\\n".join(f"| {i} | `{name}` | {value:+.4f} |" for i, (name, value) in enumerate(zip(names, obs)))
display(Markdown("| # | feature | value after one step |\\n|---|---|---:|\\n" + rows))
"""),
    md("""
What you see: after one step `progress` is `1/50 = 0.02`, `log_lr` is the rate just used (scaled
to `[-1, 1]`), `log_loss_ratio` and `loss_change` are negative when the loss went down, and the
gradient statistics (`grad_cosine`, `grad_noise`, `update_cosine`) tell the agent whether
successive gradients agree (rate too small) or flip sign (rate too large).

Let us finish the episode with the same constant rate and look at the return, `log(L0 / LT)`:
"""),
    code("""
total = reward
while not (terminated or truncated):
    obs, reward, terminated, truncated, info = env.step(action)
    total += reward
print(f"return {total:.3f} = log(L0/LT) = {np.log(info['initial_loss'] / info['loss']):.3f}")
env.close()
"""),
    md("""
## 2. Two baselines through the harness

Every agent — a hand-designed controller, a trained SB3 model or your own class — only needs SB3's
`predict(observation, state, episode_start, deterministic)`. `agents.evaluation.lr.evaluate` runs all of
them on **exactly the same** held-out test tasks (the `test` split, keyed by the seeds) with one
batched tensor program, and summarizes per agent: mean return with a bootstrap 95% CI, the
interquartile mean (IQM), the final `log10 LT/L0`, the win rate against a reference agent and the
divergence rate.

The controllers of `agents.controllers.lr` emit absolute-mode actions, so the env keeps
`action_mode="absolute"`.
"""),
    code("""
from agents.controllers.lr import ConstantLR, CosineLR
from agents.evaluation.lr import evaluate, markdown_table

env_kwargs = {"task_family": "quadratic", "horizon": HORIZON, "action_mode": "absolute"}
agents = {
    "constant (lr=0.2)": ConstantLR(lr=0.2),
    "cosine (lr=0.4)": CosineLR(lr=0.4),
}
summaries, records = evaluate(agents, "MetaOpt-LR-v0", env_kwargs, num_tasks=32, seeds=(0, 1),
                              reference="constant (lr=0.2)")
display(Markdown(markdown_table(summaries, reference="constant (lr=0.2)")))
"""),
    md("""
Each row aggregates 32 tasks x 2 seeds = 64 runs. The win rate is the share of tasks where the
agent's final loss is lower than the reference's (the reference itself scores 50%). A run that
diverges ends with a `-10` penalty, so a few diverged tasks pull the mean far below the IQM:
compare the two columns before trusting a mean. These rates are hand-picked; `metaopt-bench` and
`metaopt-train` tune every baseline's rate on the *training* split first (notebook 01).

## 3. Loss curves and learning-rate schedules

`evaluate` also returns the raw records: per seed, the mean `log10(L_t / L0)` and the geometric-mean
learning rate at each decision. (`agents.evaluation.lr.plot_curves(records, path)` writes the same two
panels to a PNG file, as the command-line tools do; here we plot inline.)
"""),
    code("""
fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4))
for name, recs in records.items():
    loss_ax.plot(np.mean([r.loss_curve for r in recs], axis=0), label=name)
    lr_ax.plot(np.exp(np.mean([np.log(r.lr_curve) for r in recs], axis=0)), label=name)
loss_ax.set(xlabel="decision", ylabel="mean log10(L_t / L_0)", title="loss (test tasks)")
lr_ax.set(xlabel="decision", ylabel="learning rate", yscale="log", title="learning-rate schedule")
loss_ax.legend()
plt.tight_layout()
plt.show()
"""),
    md("""
Left: how fast each controller drives the loss down (lower is better; `-2` means the loss fell
100-fold). The mean at each decision is over the tasks still running: a run that diverges terminates
early and leaves the average, which is the sudden drop of the cosine curve near decision 9 (its
large early rate, 0.4, diverged on the highest-curvature tasks). Right: the schedules themselves — flat for the constant, a half cosine from 0.4 towards 0
for the cosine schedule. A large early rate makes fast progress on well-conditioned tasks but can
diverge on high-curvature ones; decaying it helps near the end, where gradient noise dominates.
The best rate depends on each task's curvature and noise, which the agent can only infer from its
observations: that is what a learned controller (notebook 01) exploits.

The distribution behind the means — final `log10 LT/L0` per task:
"""),
    code("""
fig, ax = plt.subplots(figsize=(6, 3.5))
finals = [np.concatenate([r.log10_final_loss for r in recs]) for recs in records.values()]
finals = [np.clip(f, -6, 2) for f in finals]  # diverged runs are recorded as +30; clip for display
ax.boxplot(finals, showmeans=True)
ax.set_xticks(range(1, len(records) + 1), list(records))
ax.set(ylabel="final log10(L_T / L_0) (clipped to [-6, 2])", title="per-task final loss")
plt.tight_layout()
plt.show()
"""),
    md("""
Next: `01_train_rl2.ipynb` trains an RL² agent and compares it with *tuned* baselines;
`02_custom_agent_and_problem.ipynb` plugs in your own agent and your own inner problem;
`03_ensemble_and_hpo.ipynb` covers the ensemble-weighting and hyperparameter-search environments.
"""),
]

# --------------------------------------------------------------------------- 01 train RL²
TRAIN = [
    md("""
# 01 · Train an RL² agent with `metaopt-train`

RL² ("reinforcement learning as meta-learning") trains a **recurrent** policy with plain RL over
*trials*: a trial presents `episodes_per_trial` inner episodes of one sampled task, and the LSTM
keeps its memory across them, so the agent can learn to identify the task (its curvature and noise)
and adapt the learning rate within the run.

`metaopt-train` is a Hydra application (`configs/train.yaml` composes `configs/{env,agent,budget}`).
Its `train(cfg)` function is importable, so we compose the same config in code with Hydra's compose
API, shrink it to a CPU budget of well under a minute, train, and let the trainer compare the agent
with the **tuned** baselines on held-out test tasks (`evaluate=true`, the default).

The command-line equivalent is

```bash
metaopt-train budget.total_timesteps=24000 env.num_envs=16 env.kwargs.horizon=20 ...
```
"""),
    code(SETUP),
    md("""
## 1. Compose a config

The defaults are RL² (`agent=rl2`: sb3-contrib's `RecurrentPPO` with a fast LSTM path) on noisy
quadratics (`env=lr_quadratic`: trials of 2 inner episodes, **relative** action mode, where an
action multiplies the current rate by at most 2x per decision). We override the budget and sizes:
16 parallel tasks, 20 SGD steps per inner episode, 24k environment steps, and a small evaluation
(32 test tasks, one seed; baselines tuned on 16 training tasks). Outputs go to a temporary directory.
"""),
    code("""
import tempfile
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from agents.cli.train import CONFIG_DIR, train

out_dir = tempfile.mkdtemp(prefix="metaopt-rl2-")
overrides = [
    f"out_dir={out_dir}",
    "budget.total_timesteps=24000",
    "budget.checkpoint_every=24000",
    "env.num_envs=16",
    "env.kwargs.horizon=20",
    "agent.hyperparameters.batch_size=320",  # one rollout = 16 envs x 2 episodes x 20 decisions = 640 steps
    "eval_num_tasks=32",
    "eval_seeds=[0]",
    "tune_tasks=16",
]
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    cfg = compose("train", overrides=overrides)
print(OmegaConf.to_yaml(cfg))
"""),
    md("""
## 2. Train and evaluate

`train(cfg)` builds the batched SB3 `VecEnv`, trains, writes checkpoints (a second call with the
same `out_dir` resumes from the latest one), TensorBoard logs and `model.zip`, then tunes every
baseline's learning rate on the training split (13-point log grid) and runs all agents on the same
test tasks. With this tiny budget it takes about half a minute on one core.
"""),
    code("""
import time

started = time.perf_counter()
result = train(cfg)
print(f"trained {result['num_timesteps']} steps and evaluated in {time.perf_counter() - started:.1f} s")
print("model:", result["model"])
"""),
    md("""
## 3. The results table

The trainer printed the table above and also wrote it to `<out_dir>/results.md` (with
`results.json`, which adds the tuning grids and their scores). Rows are sorted by mean return
`log(L0/LT)`; the win rate is against the tuned constant. The *oracle* row reads each quadratic's
true curvature and noise and uses the analytic optimal constant rate — no agent can see that, so it
is an upper reference for constant schedules, not a competitor.
"""),
    code("""
from pathlib import Path

display(Markdown((Path(out_dir) / "results.md").read_text()))
"""),
    md("""
What to expect: with these short episodes (20 SGD steps) even 24k steps of training are enough for
RL² to beat the tuned constant and the tuned schedules on most tasks (in our run: return about 3.6
against 2.3 for the tuned constant, no divergence), while staying below tuned hypergradient descent
and the oracle. Exact numbers depend on the torch version and the machine; the run is deterministic
for a given seed on one setup. The README's demo budget (plain `metaopt-train`, 300k steps, 50-step
episodes, about a minute) and reference budget (1M steps) give the numbers quoted there.
Confidence intervals are wide with 32 tasks; use `eval_seeds=[0,1]` and `eval_num_tasks=64` for
real comparisons.

The tuning that the baselines received is part of the report, so the comparison's budget is on record:
"""),
    code("""
tuning = result["evaluation"]["tuning"]
for name, tune in tuning.items():
    if isinstance(tune, dict) and "best_lr" in tune:
        print(f"{name:>18}: best lr {tune['best_lr']:.4g} ({tune['budget_episodes']} training episodes searched)")
"""),
    md("""
## 4. Curves

`curves.png` (written by `agents.evaluation.lr.plot_curves`) shows the mean normalized loss and the
learning-rate schedule of each agent on the test tasks. RL²'s schedule is whatever the policy chose
from its observations: in relative mode it starts at the env's `initial_lr` and moves the rate
multiplicatively — here it learned a warm-up to a large rate followed by a decay, a schedule nobody
wrote down.
"""),
    code("""
display(Image(filename=str(Path(out_dir) / "curves.png")))
"""),
    md("""
## 5. Use the trained model yourself

`model.zip` is an ordinary sb3 model. Load it with the trainer's algorithm class and evaluate it with
the harness on other tasks; pass the env arguments it was trained with (`action_mode="relative"`,
the horizon) through `agent_env_kwargs` so that the tasks stay the same for every agent.
"""),
    code("""
from agents.rl2.fast_recurrent import FastRecurrentPPO
from agents.evaluation.lr import evaluate, markdown_table
from agents.controllers.lr import ConstantLR

model = FastRecurrentPPO.load(result["model"], device="cpu")
trained_kwargs = OmegaConf.to_container(cfg.env.kwargs)
env_kwargs = {**trained_kwargs, "action_mode": "absolute"}
best_constant = tuning["constant"]["best_lr"] if "constant" in tuning else 0.2
summaries, records = evaluate(
    {"RL²": model, "constant (tuned)": ConstantLR(lr=best_constant)},
    "MetaOpt-LR-v0", env_kwargs, num_tasks=32, seeds=(5,), episodes_per_trial=2,
    reference="constant (tuned)", agent_env_kwargs={"RL²": trained_kwargs},
)
display(Markdown(markdown_table(summaries, reference="constant (tuned)")))
"""),
]

# --------------------------------------------------------------------------- 02 custom agent and problem
CUSTOM = [
    md("""
# 02 · Your own agent and your own inner problem

Two extension points:

1. **An agent** is any object with SB3's `predict(observation, state=None, episode_start=None,
   deterministic=True) -> (actions, state)` on a batch of observations. The harness (and
   `metaopt-bench --agents my_module:MyAgent`) evaluates it like a baseline or a trained model.
2. **An inner problem** is a `TaskFamily`: batched tensor code over a leading dimension of `n`
   problems. Pass an instance as `task_family=` to `gym.make("MetaOpt-LR-v0", ...)`, `gym.make_vec`
   or `metaopt_envs.make_sb3_vec_env`; the gradients come from autograd.
"""),
    code(SETUP),
    md("""
## 1. A user's agent: "bold driver"

A classic heuristic: grow the learning rate by 5% while the loss keeps falling, halve it when the
loss goes up. It reads three features of the observation (by name, from the env's core) and answers
absolute-mode actions. It keeps no memory of its own — the rate in force is in the observation
(`log_lr`) — so `state` passes through unchanged.
"""),
    code("""
from metaopt_envs.lr.core import LR_FEATURES

FEATURE = {name: i for i, (name, _, _) in enumerate(LR_FEATURES)}


class BoldDriver:
    \"\"\"Multiply the rate by `grow` after a loss decrease, by `shrink` after an increase.\"\"\"

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
"""),
    md("""
Compare it with a constant rate **tuned on the training split** (`tune_baseline` searches a 13-point
log grid by mean return, on tasks disjoint from the test tasks) and with hypergradient descent, on the
same 32 x 2 test quadratics:
"""),
    code("""
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
summaries, records = evaluate(agents, "MetaOpt-LR-v0", env_kwargs, num_tasks=32, seeds=(0, 1),
                              reference="constant (tuned)")
display(Markdown(markdown_table(summaries, reference="constant (tuned)")))
"""),
    code("""
fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4))
for name, recs in records.items():
    loss_ax.plot(np.mean([r.loss_curve for r in recs], axis=0), label=name)
    lr_ax.plot(np.exp(np.mean([np.log(r.lr_curve) for r in recs], axis=0)), label=name)
loss_ax.set(xlabel="decision", ylabel="mean log10(L_t / L_0)", title="loss (test quadratics)")
lr_ax.set(xlabel="decision", ylabel="learning rate (geometric mean)", yscale="log", title="schedules")
loss_ax.legend()
plt.tight_layout()
plt.show()
"""),
    md("""
The bold driver loses here: with minibatch gradient noise the full loss goes up now and then even
at a good rate, and each increase halves the rate, so it stalls around 0.1, half the tuned constant.
Hypergradient descent, which reads the agreement of successive gradients instead of loss changes,
grows its rate steadily and wins on most tasks. A heuristic that looks reasonable can lose to a
tuned constant: the harness's win rate and IQM make that visible.

The same class works from the command line if it lives in an importable module:
`metaopt-bench --agents baselines,my_module:BoldDriver ...`.

## 2. A user's inner problem: batched least squares

Subclass `TaskFamily` and implement four methods with tensor operations over the leading dimension
(`n` problems at once):

- `sample(keys, split)`: task data from int64 keys (one per problem) — all randomness must come from
  the keys (`metaopt_envs.core.rng`), so a batched run equals `n` single runs;
- `init_params(tasks, keys)`: the `(n, P)` starting parameters;
- `loss(params, tasks, split)`: the full-data loss `(n,)`;
- `minibatch_loss(params, tasks, keys)`: one minibatch loss per problem (its autograd gradient is
  what SGD uses).

Here: `1/2 mean((X w - y)^2)` with 5 features and 64 noisy samples per task; the `test` split draws
true weights shifted by +3, so train and test tasks differ.
"""),
    code("""
from metaopt_envs.core import rng
from metaopt_envs.lr.families import TaskFamily


class LeastSquares(TaskFamily):
    \"\"\"Batched linear least squares with its own random data per task.\"\"\"

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
"""),
    md("""
Turn it into an environment exactly like a built-in family. One episode of 30 SGD steps at a
constant rate of 0.3:
"""),
    code("""
H = 30
env = gym.make("MetaOpt-LR-v0", task_family=LeastSquares(), horizon=H, max_episode_steps=H)
obs, info = env.reset(seed=0)
low, high = np.log(1e-4), np.log(10.0)
action = np.array([2 * (np.log(0.3) - low) / (high - low) - 1], dtype=np.float32)
losses, total = [], 0.0
for t in range(H):
    obs, reward, terminated, truncated, info = env.step(action)
    losses.append(info["loss"])
    total += reward
print(f"L0 = {info['initial_loss']:.3f}, LT = {info['loss']:.4f}, return log(L0/LT) = {total:.2f}, truncated={truncated}")
"""),
    md("""
The batched forms work too: `gym.make_vec` gives one tensor program over 16 different least-squares
problems (row `i` of a reset with `seed=s` is the single env's problem of `seed=s + i`):
"""),
    code("""
envs = gym.make_vec("MetaOpt-LR-v0", num_envs=16, task_family=LeastSquares(), horizon=H)
obs, _ = envs.reset(seed=0)
curves = []
for t in range(H):
    obs, rewards, terminated, truncated, infos = envs.step(np.repeat(action[None], 16, axis=0))
    curves.append(np.log10(infos["loss"] / infos["initial_loss"]))
envs.close()

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, H + 1), np.array(curves), color="tab:blue", alpha=0.4)
ax.plot(np.arange(1, H + 1), np.log10(np.array(losses) / info["initial_loss"]), color="k", lw=2, ls="--",
        label="single env (seed 0)")
ax.set(xlabel="SGD step", ylabel="log10(L_t / L_0)", title="16 least-squares problems, lr = 0.3")
ax.legend()
plt.tight_layout()
plt.show()
"""),
    md("""
Each thin line is one problem of the batch; the black line is the single env above, which is exactly
row 0 of the batch (same seed). The loss flattens at the noise floor of each problem.

Finally, the harness accepts the family instance in `env_kwargs`, so every agent — including the
bold driver — can be benchmarked on *your* problem, on its `test` split:
"""),
    code("""
ls_kwargs = {"task_family": LeastSquares(), "horizon": H, "action_mode": "absolute"}
tuned_ls = tune_baseline("constant", "MetaOpt-LR-v0", ls_kwargs, num_tasks=16)
agents = {
    "bold driver (mine)": BoldDriver(),
    "constant (tuned)": ConstantLR(lr=tuned_ls.best_lr),
    "constant (lr=0.01)": ConstantLR(lr=0.01),
}
summaries, records = evaluate(agents, "MetaOpt-LR-v0", ls_kwargs, num_tasks=16, seeds=(0,),
                              reference="constant (tuned)")
print(f"tuned constant on least squares: {tuned_ls.best_lr:.3g}")
display(Markdown(markdown_table(summaries, reference="constant (tuned)")))
"""),
]

# --------------------------------------------------------------------------- 03 ensemble and HPO
ENSEMBLE_HPO = [
    md("""
# 03 · MetaOpt-Ensemble-v0 and MetaOpt-HPO-v0

Two more environment families share the batched-core design and the harness conventions:

- **MetaOpt-Ensemble-v0**: weight a pool of forecasters on a changing time series. The reward is
  minus the squared error of the weighted forecast, normalized by the warm-up's scale.
- **MetaOpt-HPO-v0**: sequential hyperparameter search. Each action is the next configuration in
  `[-1, 1]^d`; the return is `-log10` of the final normalized simple regret.

Both come with classic baselines that have SB3's `predict`, and a harness that runs every agent on
the same held-out tasks. Sizes here are small so that the notebook runs in seconds.
"""),
    code(SETUP),
    md("""
## Part 1 · Ensemble weighting on switching streams

`task_family="switching_ar"` draws AR(2) processes that switch between 4 regimes;
`forecasters=("expert0", ..., "expert3")` gives a pool of each regime's *true* AR(2) model, so the
right weight changes abruptly at every switch. The online-learning baselines of
`agents.controllers.ensemble` run in `action_mode="simplex"` (the action is the weight vector).
We use 120 decisions per stream after a 50-step warm-up.
"""),
    code("""
from agents.controllers.ensemble import (ExponentiatedGradient, FixedShare, Hedge, RegimeOracle, Uniform)
from agents.evaluation.ensemble import evaluate_ensemble, markdown_table as ensemble_table

ens_kwargs = {
    "task_family": "switching_ar",
    "forecasters": ("expert0", "expert1", "expert2", "expert3"),
    "horizon": 120,
    "action_mode": "simplex",
}
ens_agents = {
    "uniform": Uniform(),
    "Hedge (anytime rate)": Hedge(),
    "Fixed-Share (eta=1, alpha=0.01)": FixedShare(eta=1.0, alpha=0.01),
    "exponentiated gradient (eta=0.1)": ExponentiatedGradient(eta=0.1),
    "regime oracle (reads the regimes)": RegimeOracle(),
}
ens_summaries, ens_records = evaluate_ensemble(
    ens_agents, ens_kwargs, num_tasks=16, seeds=(0,),
    reference="Fixed-Share (eta=1, alpha=0.01)", oracle="regime oracle (reads the regimes)",
)
display(Markdown(ensemble_table(ens_summaries, "Fixed-Share (eta=1, alpha=0.01)", "regime oracle (reads the regimes)")))
"""),
    md("""
The table is sorted by normalized MSE (lower is better). *Gap closed* is how much of the distance
between the reference (Fixed-Share) and the regime oracle an agent covers: the oracle is 100%, an
agent worse than Fixed-Share is negative. The oracle reads the stream's regime labels, which no
online agent can; it marks how much there is to gain by tracking switches.
"""),
    code("""
fig, (loss_ax, entropy_ax) = plt.subplots(1, 2, figsize=(11, 4))
for name, recs in ens_records.items():
    loss_ax.plot(np.mean([r.cumulative_loss for r in recs], axis=0), label=name)
    entropy_ax.plot(np.mean([r.weight_entropy for r in recs], axis=0), label=name)
loss_ax.set(xlabel="decision", ylabel="mean cumulative normalized loss", title="cumulative loss (test streams)")
entropy_ax.set(xlabel="decision", ylabel="weight entropy (nats)", title="how spread the weights are")
loss_ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
"""),
    md("""
Left: the slopes are the per-step losses; a curve that steepens after a regime switch belongs to
an agent that is slow to move its weight. Right: uniform weighting stays at `ln 4 = 1.39` nats and the
oracle puts all weight on one expert (0 nats). Fixed-Share concentrates quickly on the expert of the
current regime but keeps sharing a little weight with the others (`alpha`), so it can follow a switch;
Hedge with its conservative anytime rate and exponentiated gradient with a small rate stay spread out,
and pay for it in cumulative loss.

To *see* the weights, step the vector env directly with Fixed-Share on one stream and color the
regime in force (`info["regime"]`):
"""),
    code("""
from agents.controllers.ensemble import FixedShare

envs = gym.make_vec("MetaOpt-Ensemble-v0", num_envs=1, split="test", **ens_kwargs)
obs, _ = envs.reset(seed=8)  # a test stream with three regime switches
agent = FixedShare(eta=1.0, alpha=0.01)
start, weights, regimes, losses = np.ones(1, bool), [], [], []
for t in range(ens_kwargs["horizon"]):
    actions, _ = agent.predict(obs, episode_start=start)
    obs, rewards, terminated, truncated, infos = envs.step(actions)
    weights.append(infos["weights"][0]); regimes.append(infos["regime"][0]); losses.append(infos["loss"][0])
    start = terminated | truncated
envs.close()
weights, regimes = np.array(weights), np.array(regimes)

fig, (w_ax, l_ax) = plt.subplots(2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
w_ax.stackplot(np.arange(len(weights)), weights.T, labels=[f"expert{k}" for k in range(weights.shape[1])], alpha=0.8)
for t in np.flatnonzero(np.diff(regimes)) + 1:
    w_ax.axvline(t, color="k", ls="--", lw=1)
w_ax.set(ylabel="Fixed-Share weight", title="weights on one test stream (dashed: regime switches; true regime = expert index)")
w_ax.legend(loc="upper left", fontsize=7, ncol=4)
smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")  # 10-step moving average
l_ax.plot(np.arange(9, len(losses)), smooth, color="tab:red")
for t in np.flatnonzero(np.diff(regimes)) + 1:
    l_ax.axvline(t, color="k", ls="--", lw=1)
l_ax.set(xlabel="decision", ylabel="sq. error (10-step mean)")
plt.tight_layout()
plt.show()
print("regime sequence:", [int(r) for r in regimes[np.r_[0, np.flatnonzero(np.diff(regimes)) + 1]]])
"""),
    md("""
After a dashed line the weight mass moves to the new regime's expert (same color as the expert
index printed above) — sometimes within a few steps, sometimes slowly, when the new regime's AR(2)
model forecasts much like the old one's and the evidence accumulates slowly. The lower panel is the
ensemble's error, smoothed: bumps after a switch are the cost of that lag. An RL² agent (`metaopt-train
env=ensemble_experts`) tries to learn a faster switch detector from many streams.

## Part 2 · Hyperparameter search on Branin

Each HPO episode is one objective (here a randomly translated and scaled Branin function in 2
dimensions) and a budget of evaluations. Random search is the reference every method must beat;
GP-EI is sequential model-based optimization with a Matérn-5/2 Gaussian process and Expected
Improvement, batched in torch across problems.
"""),
    code("""
from agents.controllers.hpo import GPEI, RandomSearch, Sobol
from agents.evaluation.hpo import evaluate_hpo, markdown_table as hpo_table

hpo_kwargs = {"task_family": "branin", "budget": 16}
hpo_agents = {"random": RandomSearch(), "sobol": Sobol(), "gp_ei": GPEI()}
hpo_summaries, hpo_records = evaluate_hpo(hpo_agents, hpo_kwargs, num_tasks=12, seeds=(0,), reference="random")
display(Markdown(hpo_table(hpo_summaries, reference="random")))
"""),
    md("""
The regret is normalized per objective: `(f_best - f_opt) / (f_ref - f_opt)`, with `f_ref` the median
of 256 random points, so `-2` means the best point found is 100 times closer to the optimum than a
typical random point. The last column is the wall time per suggestion: GP-EI fits a GP and
optimizes the acquisition at every step, orders of magnitude slower than random search (still
milliseconds, negligible when an evaluation trains a model).
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 4))
for name, recs in hpo_records.items():
    curves = np.concatenate([r.curves for r in recs])  # (objectives, evaluations) log10 best regret
    steps = np.arange(1, curves.shape[1] + 1)
    median = np.median(curves, axis=0)
    q25, q75 = np.percentile(curves, [25, 75], axis=0)
    ax.plot(steps, median, label=name)
    ax.fill_between(steps, q25, q75, alpha=0.2)
ax.set(xlabel="evaluations", ylabel="log10 simple regret (median, IQR band)", title="Branin (test objectives)")
ax.legend()
plt.tight_layout()
plt.show()
"""),
    md("""
For the first few evaluations all methods are equally lucky (GP-EI starts with a Sobol design);
then GP-EI's model locates one of Branin's optima and its regret falls about ten times lower than
random search's within 16 evaluations, while random search and Sobol improve slowly. The bands are
wide with 12 objectives. The README's reference table runs 100 objectives
per family with 32 evaluations (`metaopt-bench --env-id MetaOpt-HPO-v0 ...`), where an RL² searcher
is also compared.
"""),
]

NOTEBOOKS = {
    "00_quickstart.ipynb": QUICKSTART,
    "01_train_rl2.ipynb": TRAIN,
    "02_custom_agent_and_problem.ipynb": CUSTOM,
    "03_ensemble_and_hpo.ipynb": ENSEMBLE_HPO,
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
