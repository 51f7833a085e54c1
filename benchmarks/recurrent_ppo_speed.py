"""Throughput of stock sb3-contrib ``RecurrentPPO`` vs ``FastRecurrentPPO``.

Why: stock RecurrentPPO runs its LSTM in a Python loop over time steps in
every training minibatch that contains an episode start; with short episodes
that is nearly every minibatch.  ``agents.rl2.fast_recurrent`` replaces the
loop with one LSTM call, and its ``FastRecurrentRolloutBuffer`` builds the
padded training minibatches with vectorised index arithmetic instead of one
tensor per sequence (both exact, see that module).  This script measures what
that buys end to end, on an environment that costs (almost) nothing so that
only the agent's cost is measured.

Both algorithms are trained in the same process, side by side (alternating one
rollout + update each, see :func:`run_config`), with the same seed and the same
hyper-parameters, for each configuration:

* ``stock-defaults``: RecurrentPPO defaults (n_steps 128, batch 128,
  n_epochs 10, LSTM 256) with 8 envs and torch's default thread count.
* ``stock-defaults-1thread``: the same with 1 torch thread, to separate the
  thread-count effect from the hyper-parameter effect.
* ``useful-fast``: chosen for wall-clock time to learn on CPU (1 torch thread,
  LSTM 64, 32 envs x 64 steps per rollout, 10 epochs of batch 512, lr 1e-3);
  it solves the benchmark task (see the config's note).
* ``max-throughput``: 32 envs x 128 steps, 4 epochs of batch 1024: more env
  steps/s, but it does not learn the task -- throughput alone is not the goal.

Reported per run: env steps/s end to end (``learn`` wall time), seconds in
``collect_rollouts`` vs ``train``, and fast/stock speedup per configuration,
plus the cross-config ratios "fast on useful-fast" / "stock on stock-defaults"
(and on ``stock-defaults-1thread``).

Usage::

    python benchmarks/recurrent_ppo_speed.py --timesteps 16384
    python benchmarks/recurrent_ppo_speed.py --threads 1 --configs useful-fast

Writes ``benchmarks/results/recurrent_ppo_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/recurrent_ppo_speed.py`
    sys.path.insert(0, str(REPO_ROOT))

from agents.evaluation.report import git_commit  # noqa: E402
from agents.rl2.fast_recurrent import FastRecurrentPPO  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


class CueVecEnv(VecEnv):
    """Numpy-vectorised "recall the cue" task, near-free to step.

    Each episode lasts ``episode_len`` steps.  Step 0 shows a cue of +-1 in
    ``obs[0]``; later steps show 0 there.  ``obs[1]`` is the normalised time.
    The last action is rewarded +1 if it matches the cue's sign (action 1 for
    +1, action 0 for -1), else 0.  Envs start at staggered phases, so episode
    starts land at every position inside training minibatches -- the case
    where stock RecurrentPPO falls back to its per-time-step Python loop.
    """

    def __init__(self, num_envs: int, episode_len: int = 20, seed: int = 0) -> None:
        self.episode_len = episode_len
        self.rng = np.random.default_rng(seed)
        observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        super().__init__(num_envs, observation_space, spaces.Discrete(2))
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._cue = np.ones(num_envs, dtype=np.float32)
        self._actions = np.zeros(num_envs, dtype=np.int64)
        self._ep_return = np.zeros(num_envs, dtype=np.float32)

    def _obs(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, 2), dtype=np.float32)
        obs[:, 0] = np.where(self._t == 0, self._cue, 0.0)
        obs[:, 1] = self._t / self.episode_len
        return obs

    def reset(self) -> VecEnvObs:
        self._t = np.arange(self.num_envs) % self.episode_len  # staggered phases
        self._cue = self.rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=self.num_envs)
        self._ep_return[:] = 0.0
        return self._obs()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        last = self._t == self.episode_len - 1
        correct = (self._actions == 1) == (self._cue > 0)
        rewards = (last & correct).astype(np.float32)
        self._ep_return += rewards
        self._t += 1
        dones = self._t >= self.episode_len
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            terminal = self._obs()
            for i in np.flatnonzero(dones):
                infos[i] = {
                    "terminal_observation": terminal[i],
                    "episode": {"r": float(self._ep_return[i]), "l": self.episode_len, "t": 0.0},
                }
            self._t[dones] = 0
            self._cue[dones] = self.rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=int(dones.sum()))
            self._ep_return[dones] = 0.0
        return self._obs(), rewards, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [None for _ in self._get_indices(indices)]
        raise AttributeError(attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(attr_name)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        raise AttributeError(method_name)

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


@dataclass(frozen=True)
class BenchConfig:
    """One hyper-parameter setting, run with both algorithms."""

    name: str
    n_envs: int
    n_steps: int
    batch_size: int
    n_epochs: int
    lstm_hidden_size: int
    threads: int | None  # None: torch's default
    learning_rate: float = 3e-4
    note: str = ""

    def ppo_kwargs(self) -> dict[str, Any]:
        return {
            "n_steps": self.n_steps,
            "batch_size": self.batch_size,
            "n_epochs": self.n_epochs,
            "learning_rate": self.learning_rate,
            "policy_kwargs": {"lstm_hidden_size": self.lstm_hidden_size},
        }


CONFIGS: dict[str, BenchConfig] = {
    "stock-defaults": BenchConfig(
        "stock-defaults", n_envs=8, n_steps=128, batch_size=128, n_epochs=10, lstm_hidden_size=256, threads=None
    ),
    "stock-defaults-1thread": BenchConfig(
        "stock-defaults-1thread", n_envs=8, n_steps=128, batch_size=128, n_epochs=10, lstm_hidden_size=256, threads=1
    ),
    "useful-fast": BenchConfig(
        "useful-fast",
        n_envs=32,
        n_steps=64,
        batch_size=512,
        n_epochs=10,
        lstm_hidden_size=64,
        threads=1,
        learning_rate=1e-3,
        note="fast and sample-efficient: FastRecurrentPPO solved CueVecEnv (mean reward >= 0.9) after 39k / 115k / 80k steps "
        "(12 / 33 / 22 s) for seeds 0 / 1 / 2 in a separate run",
    ),
    "max-throughput": BenchConfig(
        "max-throughput",
        n_envs=32,
        n_steps=128,
        batch_size=1024,
        n_epochs=4,
        lstm_hidden_size=64,
        threads=1,
        note="highest env steps/s found, but too few gradient steps per sample: did not solve CueVecEnv in 400k steps",
    ),
}


@dataclass
class RunResult:
    """Timings of one algorithm on one configuration (wall_s: sum of its learn() calls)."""

    config: str
    algo: str
    threads: int
    timesteps: int
    wall_s: float
    rollout_s: float
    train_s: float
    steps_per_s: float
    # chunk size / median wall time of one rollout+update: robust to bursts of
    # load from other processes, which only inflate some chunks
    median_steps_per_s: float
    chunk_wall_s: list[float]
    final_mean_ep_reward: float | None
    loadavg_before: float  # 1-min load average: other processes skew timings on a small machine
    loadavg_after: float


def _timed(fn: Any, bucket: list[float]) -> Any:
    """Wrap a bound method so that its wall time accumulates into ``bucket[0]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket[0] += time.perf_counter() - t0

    return wrapper


@dataclass
class _Contender:
    """One model being timed, with its own copy of the global RNG states."""

    algo: str
    model: RecurrentPPO
    rng: tuple[Any, Any, Any]
    wall: list[float]
    rollout: list[float]
    train: list[float]
    chunks: list[float] = field(default_factory=list)


def _rng_state() -> tuple[Any, Any, Any]:
    return th.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng_state(state: tuple[Any, Any, Any]) -> None:
    th.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def run_config(cfg: BenchConfig, algos: list[str], timesteps: int, seed: int, default_threads: int) -> list[RunResult]:
    """Train every algorithm on ``cfg``, interleaved one rollout+update at a time.

    Why interleaved: on a small shared machine, load from other processes comes
    and goes; alternating short chunks exposes stock and fast to the same load,
    so their ratio stays meaningful.  Each model keeps its own copy of the
    global torch/numpy/random RNG states (swapped in around its chunk), so it
    trains exactly as if it ran alone -- stock and fast see the same data.
    """
    threads = cfg.threads if cfg.threads is not None else default_threads
    th.set_num_threads(threads)
    contenders: list[_Contender] = []
    for algo in algos:
        cls = FastRecurrentPPO if algo == "fast" else RecurrentPPO
        model = cls(
            "MlpLstmPolicy", CueVecEnv(cfg.n_envs, seed=seed), seed=seed, device="cpu", verbose=0, **cfg.ppo_kwargs()
        )
        c = _Contender(algo, model, _rng_state(), [0.0], [0.0], [0.0])
        model.collect_rollouts = _timed(model.collect_rollouts, c.rollout)  # type: ignore[method-assign]
        model.train = _timed(model.train, c.train)  # type: ignore[method-assign]
        contenders.append(c)

    chunk = cfg.n_envs * cfg.n_steps  # one rollout + one update per learn() call
    load_before = os.getloadavg()[0]
    first = True
    round_index = 0
    while any(c.model.num_timesteps < timesteps for c in contenders):
        # Alternate who goes first, so warm-up and caching effects do not favour one algorithm.
        order = contenders if round_index % 2 == 0 else contenders[::-1]
        round_index += 1
        for c in order:
            if c.model.num_timesteps >= timesteps:
                continue
            _set_rng_state(c.rng)
            t0 = time.perf_counter()
            c.model.learn(total_timesteps=chunk, reset_num_timesteps=first)
            c.chunks.append(time.perf_counter() - t0)
            c.wall[0] += c.chunks[-1]
            c.rng = _rng_state()
        first = False
    load_after = os.getloadavg()[0]

    results = []
    for c in contenders:
        rewards = [ep["r"] for ep in c.model.ep_info_buffer]
        results.append(
            RunResult(
                config=cfg.name,
                algo=c.algo,
                threads=th.get_num_threads(),
                timesteps=c.model.num_timesteps,
                wall_s=c.wall[0],
                rollout_s=c.rollout[0],
                train_s=c.train[0],
                steps_per_s=c.model.num_timesteps / c.wall[0],
                median_steps_per_s=chunk / float(np.median(c.chunks)),
                chunk_wall_s=[round(x, 4) for x in c.chunks],
                final_mean_ep_reward=float(np.mean(rewards)) if rewards else None,
                loadavg_before=load_before,
                loadavg_after=load_after,
            )
        )
    return results


def to_markdown(meta: dict[str, Any], results: list[RunResult], speedups: dict[str, float]) -> str:
    """Render the results as a markdown table."""
    lines = [
        "# RecurrentPPO speed: stock vs fast path",
        "",
        f"commit `{meta['git_commit']}`, torch {meta['torch_version']}, sb3-contrib {meta['sb3_contrib_version']}, "
        f"{meta['cpu_count']} CPUs, default torch threads {meta['default_torch_threads']}, "
        f"{meta['timesteps']} timesteps per run, env: CueVecEnv (episodes of 20 steps), stock and fast interleaved "
        "one rollout+update at a time.",
        "",
        "fast = `FastRecurrentPPO`: single-call LSTM policy + vectorised `FastRecurrentRolloutBuffer` "
        "minibatch padding (the commit above may not include uncommitted changes).",
        "",
        "| config | algo | threads | n_envs x n_steps | batch | epochs | lstm | lr | wall s | rollout s | train s "
        "| env steps/s | median-chunk steps/s | speedup vs stock, same config (total / median) | final mean ep reward "
        "| load avg before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cfg = CONFIGS[r.config]
        sp = speedups.get(r.config) if r.algo == "fast" else None
        spm = speedups.get(f"{r.config}:median") if r.algo == "fast" else None
        reward = f"{r.final_mean_ep_reward:.2f}" if r.final_mean_ep_reward is not None else ""
        lines.append(
            f"| {r.config} | {r.algo} | {r.threads} | {cfg.n_envs} x {cfg.n_steps} | {cfg.batch_size} | {cfg.n_epochs} | "
            f"{cfg.lstm_hidden_size} | {cfg.learning_rate:g} | {r.wall_s:.1f} | {r.rollout_s:.1f} | {r.train_s:.1f} | "
            f"{r.steps_per_s:,.0f} | {r.median_steps_per_s:,.0f} | "
            f"{f'{sp:.1f}x / {spm:.1f}x' if sp is not None and spm is not None else ''} | {reward} | "
            f"{r.loadavg_before:.2f} / {r.loadavg_after:.2f} |"
        )
    for key, baseline in (("headline", "stock-defaults"), ("headline-1thread", "stock-defaults-1thread")):
        if key in speedups:
            lines += [
                "",
                f"FastRecurrentPPO on `useful-fast` vs stock RecurrentPPO on `{baseline}`: "
                f"**{speedups[key]:.1f}x** env steps/s ({speedups[f'{key}:median']:.1f}x on median-chunk throughput).",
            ]
    lines += [
        "",
        "The per-config speedup column is what the fast path alone buys; the rest of a cross-config ratio comes "
        "from the hyper-parameters and thread count. Equal final rewards for stock and fast are expected in short "
        "runs: with the same seed they train on the same data up to float rounding (in long runs such last-bit "
        "differences can eventually flip one sampled action and the runs drift apart, as stock does against "
        "itself with another thread count).",
        "'median-chunk' = env steps of one rollout+update / median wall time of those chunks; it discounts "
        "bursts of load from other processes, which only slow some chunks (see the load averages).",
    ]
    notes = [f"- `{name}`: {CONFIGS[name].note}" for name in meta["configs"] if CONFIGS[name].note]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, default=16384, help="env steps per run (per algo and config)")
    parser.add_argument("--threads", type=int, default=None, help="override torch threads for every config")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--algos", nargs="+", default=["stock", "fast"], choices=["stock", "fast"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    default_threads = th.get_num_threads()
    if args.threads is not None:
        for name, cfg in list(CONFIGS.items()):
            CONFIGS[name] = BenchConfig(**{**asdict(cfg), "threads": args.threads})

    import sb3_contrib

    meta: dict[str, Any] = {
        "git_commit": git_commit(),
        "torch_version": th.__version__,
        "sb3_contrib_version": sb3_contrib.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "default_torch_threads": default_threads,
        "timesteps": args.timesteps,
        "seed": args.seed,
        "configs": {name: asdict(CONFIGS[name]) for name in args.configs},
    }

    results: list[RunResult] = []
    for name in args.configs:
        for r in run_config(CONFIGS[name], args.algos, args.timesteps, args.seed, default_threads):
            results.append(r)
            print(
                f"{r.config:15s} {r.algo:5s} threads={r.threads} wall={r.wall_s:7.1f}s rollout={r.rollout_s:6.1f}s "
                f"train={r.train_s:7.1f}s steps/s={r.steps_per_s:9,.0f} median={r.median_steps_per_s:9,.0f} mean_ep_reward={r.final_mean_ep_reward} "
                f"load={r.loadavg_before:.2f}/{r.loadavg_after:.2f}",
                flush=True,
            )

    by_key = {(r.config, r.algo): r for r in results}
    speedups: dict[str, float] = {}
    for name in args.configs:
        if (name, "fast") in by_key and (name, "stock") in by_key:
            speedups[name] = by_key[(name, "fast")].steps_per_s / by_key[(name, "stock")].steps_per_s
            speedups[f"{name}:median"] = (
                by_key[(name, "fast")].median_steps_per_s / by_key[(name, "stock")].median_steps_per_s
            )
    for key, baseline in (("headline", "stock-defaults"), ("headline-1thread", "stock-defaults-1thread")):
        if ("useful-fast", "fast") in by_key and (baseline, "stock") in by_key:
            fast, stock = by_key[("useful-fast", "fast")], by_key[(baseline, "stock")]
            speedups[key] = fast.steps_per_s / stock.steps_per_s
            speedups[f"{key}:median"] = fast.median_steps_per_s / stock.median_steps_per_s

    args.out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": [asdict(r) for r in results], "speedups": speedups}
    (args.out_dir / "recurrent_ppo_speed.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = to_markdown(meta, results, speedups)
    (args.out_dir / "recurrent_ppo_speed.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
