"""RL² learner speed on the default ``metaopt-train`` configuration: stock vs fast vs torch-only.

Why: the RL² agent is sb3-contrib's ``RecurrentPPO``; ``agents.rl2.fast_recurrent.FastRecurrentPPO``
is our drop-in fast path (same hyperparameters, same losses and minibatches, outputs allclose to
stock).  This script measures, in ONE process, on the configuration ``metaopt-train`` trains by
default (``configs/train.yaml``: ``env``, ``agent=rl2``; override with ``--override``):

* ``stock``: ``sb3_contrib.RecurrentPPO``, the hyperparameters of ``configs/agent/rl2.yaml``;
* ``fast``: ``FastRecurrentPPO`` with the same hyperparameters and seed;
* ``torch-only``: :class:`TorchPPOLSTM`, a minimal PPO-LSTM written directly on the batched core
  (``metaopt_envs.make_core``; torch tensors end to end, no SB3): the same networks, rollout
  length, epochs, minibatch size and losses.  It is the floor an SB3-based agent is held to.

The three train interleaved, one rollout + update each per round, the order alternating between
rounds, so bursts of load from other processes hit all of them (reported: medians of the
per-round wall times, and their ratios).  Each SB3 model keeps its own copy of the global RNG
states.  Also recorded: the commit, the CPU model, a single-thread fp32 matmul peak measured in
the same run, torch's thread count, the load average before/after, and the time split of the fast
path (env / rollout policy / minibatch sampling / forward / backward / optimizer).

Usage::

    python benchmarks/recurrent_ppo_speed.py                 # default config, 8 rounds
    python benchmarks/recurrent_ppo_speed.py --override env=lr_mixture --name recurrent_ppo_speed_lr_mixture

Writes ``benchmarks/results/<name>.{json,md}`` (default name ``recurrent_ppo_speed``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/recurrent_ppo_speed.py`
    sys.path.insert(0, str(REPO_ROOT))

from agents.evaluation.report import cpu_model, git_commit  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
ALGOS = ("stock", "fast", "torch-only")
BEFORE: dict[str, Path] = {}  # "fast-before": a previous fast_recurrent.py (``--before``), timed beside the others


# ---------------------------------------------------------------------------
# the torch-only reference
# ---------------------------------------------------------------------------


class TorchPPOLSTM:
    """Minimal PPO with separate actor and critic LSTMs, directly on a batched core (no SB3).

    Same networks as sb3-contrib's ``MlpLstmPolicy`` with ``net_arch`` / ``lstm_hidden_size``
    (LSTM -> tanh MLP -> linear head, state-independent Gaussian log-std), the same PPO losses
    (clipped surrogate, unclipped value loss, normalized advantages, GAE, timeout bootstrap,
    clip 0.2, vf_coef 0.5, max_grad_norm 0.5) and the same amount of work per update
    (``n_epochs`` passes of minibatches of about ``batch_size`` steps, sequences cut at episode
    starts and padded, one LSTM call per minibatch).  Not bit-compatible with SB3 (its own
    minibatch order and initialization); it is a speed reference only.
    """

    def __init__(self, core: Any, hp: dict[str, Any], hidden: int, net_arch: list[int], seed: int) -> None:
        from metaopt_envs.core import seeds_to_keys

        th.manual_seed(seed)
        self.core = core
        self.gen = th.Generator().manual_seed(seed)
        self.n_steps, self.batch_size, self.n_epochs = int(hp["n_steps"]), int(hp["batch_size"]), int(hp["n_epochs"])
        self.gamma, self.gae_lambda = float(hp.get("gamma", 0.99)), float(hp.get("gae_lambda", 0.95))
        self.ent_coef = float(hp.get("ent_coef", 0.0))
        obs_dim = core.single_observation_space.shape[0]
        self.act_dim = core.single_action_space.shape[0]
        self.low = th.as_tensor(core.single_action_space.low)
        self.high = th.as_tensor(core.single_action_space.high)
        self.lstm_pi, self.lstm_vf = nn.LSTM(obs_dim, hidden), nn.LSTM(obs_dim, hidden)

        def mlp() -> nn.Sequential:
            layers: list[nn.Module] = []
            last = hidden
            for width in net_arch:
                layers += [nn.Linear(last, width), nn.Tanh()]
                last = width
            return nn.Sequential(*layers)

        self.pi_net, self.vf_net = mlp(), mlp()
        last = net_arch[-1] if net_arch else hidden
        self.action_net, self.value_net = nn.Linear(last, self.act_dim), nn.Linear(last, 1)
        self.log_std = nn.Parameter(th.zeros(self.act_dim))
        modules = [self.lstm_pi, self.lstm_vf, self.pi_net, self.vf_net, self.action_net, self.value_net]
        self.params = [p for m in modules for p in m.parameters()] + [self.log_std]
        self.opt = th.optim.Adam(self.params, lr=float(hp["learning_rate"]), eps=1e-5, fused=True)
        b = core.num_envs
        core.reset_rows(th.ones(b, dtype=th.bool), keys=seeds_to_keys(seed, b, core.device))
        self.obs = core.observe()
        self.starts = th.ones(b)
        self.state = [th.zeros(1, b, hidden) for _ in range(4)]  # h_pi, c_pi, h_vf, c_vf
        self.num_timesteps = 0

    def copy_weights(self, policy: Any) -> None:
        """Start from the weights of an sb3-contrib ``MlpLstmPolicy`` (same init, so the env sees the same behaviour)."""
        with th.no_grad():
            self.lstm_pi.load_state_dict(policy.lstm_actor.state_dict())
            self.lstm_vf.load_state_dict(policy.lstm_critic.state_dict())
            self.pi_net.load_state_dict(policy.mlp_extractor.policy_net.state_dict())
            self.vf_net.load_state_dict(policy.mlp_extractor.value_net.state_dict())
            self.action_net.load_state_dict(policy.action_net.state_dict())
            self.value_net.load_state_dict(policy.value_net.state_dict())
            self.log_std.copy_(policy.log_std)

    def _step(
        self, obs: th.Tensor, starts: th.Tensor, state: list[th.Tensor]
    ) -> tuple[th.Tensor, th.Tensor, list[th.Tensor]]:
        keep = (1.0 - starts).view(1, -1, 1)
        out_pi, (h_pi, c_pi) = self.lstm_pi(obs[None], (keep * state[0], keep * state[1]))
        out_vf, (h_vf, c_vf) = self.lstm_vf(obs[None], (keep * state[2], keep * state[3]))
        mean = self.action_net(self.pi_net(out_pi[0]))
        value = self.value_net(self.vf_net(out_vf[0]))[:, 0]
        return mean, value, [h_pi, c_pi, h_vf, c_vf]

    def collect(self) -> None:
        """One rollout of ``n_steps`` per row, then GAE (all in torch)."""
        from metaopt_envs.core.vector_env import finish_step

        t_len, b = self.n_steps, self.core.num_envs
        self.buf_obs = th.empty(t_len, b, self.obs.shape[1])
        self.buf_act = th.empty(t_len, b, self.act_dim)
        self.buf_logp, self.buf_val, self.buf_rew, self.buf_start = (th.empty(t_len, b) for _ in range(4))
        self.buf_state = [th.empty(t_len, b, s.shape[-1]) for s in self.state]
        std = self.log_std.detach().exp()
        with th.inference_mode():
            for t in range(t_len):
                self.buf_obs[t] = self.obs
                self.buf_start[t] = self.starts
                for store, s in zip(self.buf_state, self.state, strict=True):
                    store[t] = s[0]
                mean, value, self.state = self._step(self.obs, self.starts, self.state)
                action = mean + th.randn(mean.shape, generator=self.gen) * std
                self.buf_act[t] = action
                self.buf_logp[t] = (
                    -((action - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)
                ).sum(1)
                self.buf_val[t] = value
                result = self.core.step(th.minimum(th.maximum(action, self.low), self.high))
                obs, final_obs, done = finish_step(self.core, result)
                reward = result.reward.clone()
                timeout = result.truncated & ~result.terminated
                if bool(timeout.any()):
                    _, final_value, _ = self._step(final_obs, th.zeros(b), self.state)
                    reward += self.gamma * final_value * timeout
                self.buf_rew[t] = reward
                self.obs, self.starts = obs, done.float()
            _, last_value, _ = self._step(self.obs, self.starts, self.state)
            adv = th.empty(t_len, b)
            last_gae = th.zeros(b)
            for t in reversed(range(t_len)):
                if t == t_len - 1:
                    non_terminal, next_value = 1.0 - self.starts, last_value
                else:
                    non_terminal, next_value = 1.0 - self.buf_start[t + 1], self.buf_val[t + 1]
                delta = self.buf_rew[t] + self.gamma * next_value * non_terminal - self.buf_val[t]
                last_gae = delta + self.gamma * self.gae_lambda * non_terminal * last_gae
                adv[t] = last_gae
            self.buf_adv, self.buf_ret = adv, adv + self.buf_val
        self.num_timesteps += t_len * b

    def update(self) -> None:
        """``n_epochs`` passes over the rollout's sequences (cut at starts, padded), in minibatches."""
        t_len, b = self.n_steps, self.core.num_envs
        # env-major (b, t): a sequence starts at every episode start and at each env's first step
        starts = self.buf_start.T.contiguous().clone()
        starts[:, 0] = 1.0
        flat_start = starts.reshape(-1).bool()
        seq_id = th.cumsum(flat_start.long(), 0) - 1
        n_seq = int(seq_id[-1]) + 1
        start_index = th.nonzero(flat_start).flatten()
        position = th.arange(t_len * b) - start_index[seq_id]
        max_len = int(position.max()) + 1
        dest = seq_id * max_len + position

        def pad(x: th.Tensor) -> th.Tensor:  # (t, b, ...) -> (n_seq, max_len, ...)
            flat = x.transpose(0, 1).reshape(t_len * b, *x.shape[2:])
            out = th.zeros(n_seq * max_len, *x.shape[2:])
            out[dest] = flat
            return out.reshape(n_seq, max_len, *x.shape[2:])

        obs, act = pad(self.buf_obs), pad(self.buf_act)
        old_logp, adv_all, ret_all = pad(self.buf_logp), pad(self.buf_adv), pad(self.buf_ret)
        mask_all = pad(th.ones(t_len, b)) > 0.5
        head_start = pad(self.buf_start)[:, 0]
        init = [s.transpose(0, 1).reshape(t_len * b, -1)[start_index] for s in self.buf_state]
        n_minibatches = max(1, round(t_len * b / self.batch_size))
        per = -(-n_seq // n_minibatches)
        for _ in range(self.n_epochs):
            order = th.randperm(n_seq, generator=self.gen)
            for i in range(0, n_seq, per):
                idx = order[i : i + per]
                keep = (1.0 - head_start[idx]).view(1, -1, 1)
                x = obs[idx].transpose(0, 1)
                states = [keep * s[idx][None] for s in init]
                out_pi, _ = self.lstm_pi(x, (states[0], states[1]))
                out_vf, _ = self.lstm_vf(x, (states[2], states[3]))
                mean = self.action_net(self.pi_net(out_pi)).transpose(0, 1)
                value = self.value_net(self.vf_net(out_vf))[..., 0].transpose(0, 1)
                std = self.log_std.exp()
                logp = (-((act[idx] - mean) ** 2) / (2 * std**2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
                mask = mask_all[idx]
                adv = adv_all[idx][mask]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = th.exp(logp[mask] - old_logp[idx][mask])
                policy_loss = -th.min(adv * ratio, adv * th.clamp(ratio, 0.8, 1.2)).mean()
                value_loss = ((ret_all[idx][mask] - value[mask]) ** 2).mean()
                entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum()
                loss = policy_loss - self.ent_coef * entropy + 0.5 * value_loss
                self.opt.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.params, 0.5, foreach=True)
                self.opt.step()

    def learn_one(self) -> None:
        self.collect()
        self.update()


# ---------------------------------------------------------------------------
# timing harness
# ---------------------------------------------------------------------------


@dataclass
class Contender:
    """One learner being timed: one rollout + update per round."""

    algo: str
    learn_one: Callable[[], None]
    rng: tuple[Any, Any, Any] | None
    rounds: list[float] = field(default_factory=list)
    rollout: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    core_calls: list[float] = field(default_factory=list)  # seconds of each outermost env-core call
    core: list[float] = field(default_factory=list)  # seconds in the env core per round


def _rng_state() -> tuple[Any, Any, Any]:
    return th.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng_state(state: tuple[Any, Any, Any]) -> None:
    th.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def _timed_into(fn: Callable[..., Any], bucket: list[float]) -> Callable[..., Any]:
    """``fn`` whose wall time of each call is appended to ``bucket``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - t0)

    return wrapper


def time_core(core: Any, bucket: list[float]) -> None:
    """Time the env core's ``step`` / ``reset_rows`` / ``observe`` (outermost calls only) into ``bucket``.

    Why: the learners' env work is not identical (torch-only draws other noise, so its inner runs
    diverge and reset at other times); the time outside the core is the agent's own cost.
    """
    depth = [0]

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    bucket.append(time.perf_counter() - t0)

        return wrapper

    for name in ("step", "reset_rows", "observe"):
        setattr(core, name, wrap(getattr(core, name)))


def matmul_peak_gflops(n: int = 512, repeats: int = 20) -> float:
    """Single-thread fp32 matmul throughput (best of ``repeats``), GFLOP/s: the machine's yardstick."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    a, b = th.randn(n, n), th.randn(n, n)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    th.set_num_threads(threads)
    return 2 * n**3 / best / 1e9


def compose_config(overrides: list[str]) -> Any:
    """The ``metaopt-train`` config (``configs/train.yaml``) with ``overrides``, as Hydra composes it."""
    from hydra import compose, initialize_config_dir

    from agents.rl2.training import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["out_dir=/tmp/recurrent_ppo_speed", *overrides])


def build_sb3(algo: str, cfg: Any) -> Any:
    """``RecurrentPPO`` or ``FastRecurrentPPO`` exactly as ``metaopt-train`` builds it (no logging)."""
    from sb3_contrib import RecurrentPPO

    from agents.rl2.fast_recurrent import FastRecurrentPPO
    from agents.rl2.training import config_dict, make_env, n_steps

    env = make_env(cfg)
    hyperparameters = config_dict(cfg.agent.hyperparameters)
    hyperparameters["n_steps"] = n_steps(cfg, env)
    cls: Any = FastRecurrentPPO if algo in ("fast", "fast-fused-adam", "fast-on-demand") else RecurrentPPO
    policy_kwargs = config_dict(cfg.agent.policy_kwargs)
    if algo == "fast-fused-adam":  # the opt-in: fused Adam with the eps SB3 gives Adam by default
        policy_kwargs["optimizer_kwargs"] = {"fused": True, "eps": 1e-5}
    if algo == "fast-before":
        import importlib.util

        spec = importlib.util.spec_from_file_location("fast_recurrent_before", BEFORE[algo])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cls = module.FastRecurrentPPO
    return cls(
        cfg.agent.policy,
        env,
        seed=cfg.seed,
        device="cpu",
        policy_kwargs=policy_kwargs,
        **hyperparameters,
    )


def build_torch_only(cfg: Any) -> TorchPPOLSTM:
    import metaopt_envs
    from agents.rl2.training import config_dict

    core = metaopt_envs.make_core(
        cfg.env.id, cfg.env.num_envs, cfg.env.get("episodes_per_trial"), **config_dict(cfg.env.kwargs)
    )
    hp = config_dict(cfg.agent.hyperparameters)
    if hp.get("n_steps") is None:
        hp["n_steps"] = int(cfg.env.get("episodes_per_trial") or 1) * int(core.num_decisions)
    policy_kwargs = config_dict(cfg.agent.policy_kwargs)
    agent = TorchPPOLSTM(
        core,
        hp,
        int(policy_kwargs.get("lstm_hidden_size", 256)),
        list(policy_kwargs.get("net_arch", [64, 64])),
        cfg.seed,
    )
    # SB3's initialization (orthogonal, small action head): the same behaviour at the start, so the
    # env does the same work (diverging inner runs reset, which costs the core more)
    agent.copy_weights(build_sb3("stock", cfg).policy)
    return agent


def sb3_contender(algo: str, cfg: Any) -> tuple[Contender, Any]:
    model = build_sb3(algo, cfg)
    rollout = int(model.n_steps) * int(model.n_envs)
    c = Contender(algo, lambda: None, _rng_state())
    model.collect_rollouts = _timed_into(model.collect_rollouts, c.rollout)  # type: ignore[method-assign]
    model.train = _timed_into(model.train, c.train)  # type: ignore[method-assign]
    core = model.get_env().unwrapped.core  # VecMonitor -> CoreSB3VecEnv -> core
    if algo == "fast-on-demand":
        core.unwrapped.reset_lookahead = False
    time_core(core, c.core_calls)
    first = [True]

    def learn_one() -> None:
        model.learn(total_timesteps=rollout, reset_num_timesteps=first[0])
        first[0] = False

    c.learn_one = learn_one
    return c, model


def torch_only_contender(cfg: Any) -> tuple[Contender, TorchPPOLSTM]:
    agent = build_torch_only(cfg)
    c = Contender("torch-only", lambda: None, None)
    agent.collect = _timed_into(agent.collect, c.rollout)  # type: ignore[method-assign]
    agent.update = _timed_into(agent.update, c.train)  # type: ignore[method-assign]
    time_core(agent.core, c.core_calls)
    c.learn_one = agent.learn_one
    return c, agent


@contextmanager
def _patched(owner: Any, name: str, bucket: list[float]) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, _timed_into(original, bucket))
    try:
        yield
    finally:
        setattr(owner, name, original)


def fast_time_split(cfg: Any, rounds: int) -> dict[str, float]:
    """Median seconds per rollout + update of ``FastRecurrentPPO``, split by phase (a separate instrumented run)."""
    c, model = sb3_contender("fast", cfg)
    venv = model.get_env()
    buckets: dict[str, list[float]] = {
        k: []
        for k in (
            *("env", "partial_resets", "partial_reset_rows", "full_resets"),
            *("sampling", "forward", "backward", "optimizer", "round", "rollout", "train"),
        )
    }
    per_round: dict[str, list[float]] = {k: [] for k in [*buckets, "partial_reset_calls"]}
    policy = model.policy
    # The family core's resets of some rows during a step (inner episodes that diverged or ended, trials
    # that ended): a part of "env". Counted per call that resets at least one row.
    family_core = venv.unwrapped.core.unwrapped  # VecMonitor -> CoreSB3VecEnv -> (RL² trial) -> family core
    original_reset = family_core.reset_rows

    def timed_reset(rows: th.Tensor, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        original_reset(rows, *args, **kwargs)
        elapsed, count = time.perf_counter() - t0, int(rows.sum())
        if count == rows.numel():
            buckets["full_resets"].append(elapsed)
        elif count:
            buckets["partial_resets"].append(elapsed)
            buckets["partial_reset_rows"].append(float(count))

    # the first round builds the optimizer state and warms caches: not timed
    c.learn_one()
    family_core.reset_rows = timed_reset
    with (
        _patched(venv, "step", buckets["env"]),
        _patched(th.Tensor, "backward", buckets["backward"]),
        _patched(th.nn.utils, "clip_grad_norm_", buckets["optimizer"]),
        _patched(policy.optimizer, "step", buckets["optimizer"]),
        _patched(policy.optimizer, "zero_grad", buckets["optimizer"]),
        _patched(policy, "evaluate_actions", buckets["forward"]),
    ):
        original_get = model.rollout_buffer.get

        def timed_get(*args: Any, **kwargs: Any) -> Iterator[Any]:
            iterator = original_get(*args, **kwargs)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    buckets["sampling"].append(time.perf_counter() - t0)
                    return
                buckets["sampling"].append(time.perf_counter() - t0)
                yield item

        model.rollout_buffer.get = timed_get  # type: ignore[method-assign]
        for _ in range(rounds):
            for b in buckets.values():
                b.clear()
            c.rollout.clear()
            c.train.clear()
            t0 = time.perf_counter()
            c.learn_one()
            buckets["round"].append(time.perf_counter() - t0)
            buckets["rollout"] += c.rollout
            buckets["train"] += c.train
            per_round["partial_reset_calls"].append(len(buckets["partial_resets"]))
            for k, b in buckets.items():
                per_round[k].append(sum(b))
    family_core.reset_rows = original_reset
    med = {k: float(np.median(v)) for k, v in per_round.items()}
    # forward = the loss computation of train (all of train but sampling, backward and optimizer)
    med["forward"] = med["train"] - med["sampling"] - med["backward"] - med["optimizer"]
    med["rollout_policy"] = med["rollout"] - med["env"]
    med["other"] = med["round"] - med["rollout"] - med["train"]
    return med


def run(cfg: Any, algos: list[str], rounds: int) -> dict[str, Contender]:
    """Each learner does ``rounds`` (+1 warm-up) rollout + update chunks, interleaved, order alternating."""
    contenders: list[Contender] = []
    for algo in algos:
        if algo == "torch-only":
            contenders.append(torch_only_contender(cfg)[0])
        else:
            contenders.append(sb3_contender(algo, cfg)[0])
    for round_index in range(rounds + 1):
        order = contenders if round_index % 2 == 0 else contenders[::-1]
        for c in order:
            if c.rng is not None:
                _set_rng_state(c.rng)
            c.core_calls.clear()
            t0 = time.perf_counter()
            c.learn_one()
            elapsed = time.perf_counter() - t0
            if c.rng is not None:
                c.rng = _rng_state()
            if round_index == 0:  # warm-up: first allocations, optimizer state
                c.rollout.clear()
                c.train.clear()
            else:
                c.rounds.append(elapsed)
                c.core.append(sum(c.core_calls))
    return {c.algo: c for c in contenders}


def _vs_stock(ratios: dict[str, float], algo: str) -> str:
    """The speedup column: ``1.00x`` for stock itself, ``-`` where stock was not timed."""
    if algo == "stock":
        return "1.00x"
    ratio = ratios.get(f"{algo}/stock")
    return "-" if ratio is None else f"{ratio:.2f}x"


def to_markdown(payload: dict[str, Any]) -> str:
    meta, res, ratios, split = payload["meta"], payload["results"], payload["ratios"], payload["fast_time_split"]
    lines = [
        "# RL² learner speed: stock RecurrentPPO vs FastRecurrentPPO vs a torch-only PPO-LSTM",
        "",
        f"commit `{meta['git_commit']}`{' (+ uncommitted changes)' if meta['dirty'] else ''}, "
        f"CPU `{meta['cpu_model']}` ({meta['cpu_count']} logical CPUs), single-thread fp32 matmul peak "
        f"{meta['matmul_gflops']:.0f} GFLOP/s (measured in this run), torch {meta['torch_version']}, "
        f"sb3-contrib {meta['sb3_contrib_version']}, torch threads {meta['torch_threads']}, "
        f"load average {meta['loadavg_before']:.2f} before / {meta['loadavg_after']:.2f} after.",
        "",
        f"Configuration: `metaopt-train {' '.join(meta['overrides'])}`".rstrip() + f" -- {meta['config_summary']}. "
        f"One round = one rollout ({meta['rollout_steps']} env steps) + one update per learner; "
        f"{meta['rounds']} timed rounds after one warm-up, learners interleaved (order alternating)."
        + (f" fast-before: `{meta['before']}`." if meta.get("before") else ""),
        "",
        "| learner | median s / round | rollout s | update s | in env core s | agent s (round - env core) "
        "| env steps/s | speedup vs stock |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for algo, r in res.items():
        lines.append(
            f"| {algo} | {r['median_round_s']:.3f} | {r['median_rollout_s']:.3f} | {r['median_train_s']:.3f} | "
            f"{r['median_core_s']:.3f} | {r['median_agent_s']:.3f} | "
            f"{r['steps_per_s']:,.0f} | {_vs_stock(ratios, algo)} |"
        )
    lines += [""]
    for key, value in ratios.items():
        lines.append(f"- {key.replace('/', ' speedup over ')}: **{value:.2f}x** (ratio of the medians)")
    if split:
        total = split["round"]
        lines += [
            "",
            "Time split of the fast path (median seconds per round, a separate instrumented run):",
            "",
            "| phase | s | share |",
            "|---|---|---|",
        ]
        for key in ("env", "rollout_policy", "sampling", "forward", "backward", "optimizer", "other"):
            lines.append(f"| {key} | {split[key]:.3f} | {100 * split[key] / total:.0f}% |")
        lines.append(f"| total | {total:.3f} | 100% |")
        lines += [
            "",
            "env: the SB3 VecEnv's step (core + adapter); rollout_policy: the rest of collect_rollouts (policy "
            "step, buffer writes, GAE); sampling: building the padded minibatches; forward: the loss "
            "computation; optimizer: gradient clip + Adam step + zero_grad; other: SB3's learn() around them.",
        ]
        if "partial_resets" in split:
            lines += [
                "",
                f"Of env: resets of some of the rows {split['partial_resets']:.3f} s per round "
                f"({100 * split['partial_resets'] / split['env']:.0f}% of env; {split['partial_reset_calls']:.0f} "
                f"calls resetting {split['partial_reset_rows']:.0f} rows in all), resets of every row "
                f"{split['full_resets']:.3f} s (medians per round). An inner run that diverges ends its inner "
                "episode early, and its trial then ends out of step with the others: such rows reset one to three "
                "at a time (on demand, each call costs about what a reset of every row does; the LR core's "
                "`reset_lookahead` makes the rows' next starts for many rows at once).",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed rollout+update rounds per learner")
    parser.add_argument("--split-rounds", type=int, default=4, help="rounds of the fast path's time split (0: skip)")
    parser.add_argument(
        "--algos",
        nargs="+",
        default=list(ALGOS),
        choices=[*ALGOS, "fast-before", "fast-fused-adam", "fast-on-demand"],
        help="fast-on-demand: fast with the LR core's reset_lookahead off (every reset computed on demand)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a previous agents/rl2/fast_recurrent.py (e.g. from `git show <commit>:agents/rl2/fast_recurrent.py`), "
        "timed as 'fast-before' in the same run",
    )
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides of the metaopt-train config")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="recurrent_ppo_speed", help="stem of the .json / .md written")
    args = parser.parse_args(argv)
    if args.before is not None:
        BEFORE["fast-before"] = args.before
        if "fast-before" not in args.algos:
            args.algos.append("fast-before")

    import subprocess

    import sb3_contrib

    cfg = compose_config(args.override)
    th.set_num_threads(int(cfg.agent.torch_threads))
    from agents.rl2.training import summary

    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    )
    meta: dict[str, Any] = {
        "git_commit": git_commit(),
        "dirty": dirty,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "matmul_gflops": matmul_peak_gflops(),
        "torch_version": th.__version__,
        "sb3_contrib_version": sb3_contrib.__version__,
        "python": platform.python_version(),
        "torch_threads": th.get_num_threads(),
        "overrides": args.override,
        "config_summary": summary(cfg).removeprefix("training "),
        "rounds": args.rounds,
        "before": str(args.before) if args.before is not None else None,
        "loadavg_before": os.getloadavg()[0],
    }
    contenders = run(cfg, args.algos, args.rounds)
    split = fast_time_split(cfg, args.split_rounds) if args.split_rounds and "fast" in args.algos else {}
    meta["loadavg_after"] = os.getloadavg()[0]
    rollout_steps = None
    results: dict[str, Any] = {}
    for algo, c in contenders.items():
        median = float(np.median(c.rounds))
        if rollout_steps is None:
            from agents.rl2.training import make_env, n_steps

            env = make_env(cfg)
            rollout_steps = n_steps(cfg, env) * env.num_envs
        results[algo] = {
            "median_round_s": median,
            "median_rollout_s": float(np.median(c.rollout)),
            "median_train_s": float(np.median(c.train)),
            "median_core_s": float(np.median(c.core)),
            "median_agent_s": float(np.median(np.asarray(c.rounds) - np.asarray(c.core))),
            "steps_per_s": rollout_steps / median,
            "round_s": [round(x, 4) for x in c.rounds],
        }
    meta["rollout_steps"] = rollout_steps
    ratios: dict[str, float] = {}
    for num, den in (
        ("fast", "stock"),
        ("torch-only", "stock"),
        ("fast", "torch-only"),
        ("fast-before", "stock"),
        ("fast", "fast-before"),
        ("fast-fused-adam", "stock"),
        ("fast-fused-adam", "torch-only"),
        ("fast", "fast-on-demand"),
    ):
        if num in results and den in results:
            ratios[f"{num}/{den}"] = results[den]["median_round_s"] / results[num]["median_round_s"]
    for num, den in (("fast", "stock"), ("fast", "torch-only")):
        if num in results and den in results:
            ratios[f"{num}/{den} (agent: round - env core)"] = (
                results[den]["median_agent_s"] / results[num]["median_agent_s"]
            )
    for num in ("fast", "torch-only"):
        for phase in ("rollout", "train"):
            if num in results and "stock" in results:
                ratios[f"{num}/stock ({phase})"] = (
                    results["stock"][f"median_{phase}_s"] / results[num][f"median_{phase}_s"]
                )
    payload = {"meta": meta, "results": results, "ratios": ratios, "fast_time_split": split}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = to_markdown(payload)
    (args.out_dir / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
