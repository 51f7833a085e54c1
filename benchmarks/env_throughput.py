"""Throughput of the three environments, MetaOpt-LR-v0, MetaOpt-Ensemble-v0 and MetaOpt-HPO-v0: one entry point.

    python benchmarks/env_throughput.py                       # everything: benchmarks/results/env_throughput.{json,md}
    python benchmarks/env_throughput.py --quick               # a smoke run (B = 1, 64; short windows; no extras)
    python benchmarks/env_throughput.py --envs lr --families sinusoid,sklearn --batch-sizes 64,1024
    python benchmarks/env_throughput.py --device cuda         # GPU mode: the batched side on CUDA
    python benchmarks/env_throughput.py --readme README.md    # also rewrite the README's table
    python benchmarks/env_throughput.py --envs lr --families sinusoid,sklearn --batch-sizes 64,1024 --compiled \
        --no-extras --out benchmarks/results/mlp_compiled     # the MLP families' compiled path beside eager

What is measured, all in one process, one torch thread unless ``--threads`` says otherwise:

* **throughput**: for every env, family and number of envs ``B``, the native batched env
  (``gym.make_vec(env_id, num_envs=B, ...)``, autoresets included, random actions drawn beforehand)
  against a ``gymnasium.vector.SyncVectorEnv`` of ``min(B, --sync-envs)`` single envs (a Python loop
  whose cost per env does not depend on B), and the batched env's core alone ("core steps/s":
  ``core.step`` with actions already on its device and ``core.reset_rows`` of the ended rows, no
  numpy boundary). The three are timed in interleaved windows and each figure is the median
  window, so load from other processes hits all alike; the ratio is batched (env) steps/s over
  SyncVectorEnv steps/s.
* **matmul peak**: the best GFLOP/s of square fp32 ``torch.mm`` at the same thread count, measured
  at the start of the run, and for the MLP families (sinusoid, sklearn) a 512 x 512 ``torch.mm``
  timed in the same interleaved windows as their steps. The useful matmul FLOPs of a decision
  (counted from the layer sizes: the full training-loss forward, the validation forward if
  observed, the backward of both minibatches) times the batched steps/s, over that interleaved
  peak, is the "% of matmul peak" column.
* **compiled** (``--compiled``, LR MLP families): the env with ``mlp.set_compiled(True)`` (the
  ``torch.compile``'d measurement) timed in the same interleaved windows as the eager env, the
  SyncVectorEnv and the peak; its compile time is paid in the warm-up, outside the windows.
* **reset cost** (LR): ``core.reset_rows`` of 3 rows against one ``core.step`` of the same core at
  ``--reset-batch`` (64), interleaved medians: 3 other rows each call in turn (as rows that end out of
  step autoreset; with new tasks, and on the same task) and the same 3 rows every call (the case the
  core's reset lookahead cannot batch), both also on a core with ``reset_lookahead = False`` (the ratio).
* **vmap** (LR, sklearn): the batched core's step against a ``torch.func.vmap`` + ``functional_call``
  implementation of the same inner work (SGD update, full training loss, two minibatch gradients,
  their norms) at ``--vmap-batch`` (256); the vmap side skips the observation, so the ratio is a
  lower bound.

``--device cuda`` runs the batched side (env and core) on the GPU, synchronizing at the end of each
window; the SyncVectorEnv reference stays on the CPU. Without a GPU every GPU row is written as
``unmeasured`` (no number is made up). CUDA graphs are not used: the step allocates its state anew
each decision, which a graph capture would need to replace by static buffers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python benchmarks/env_throughput.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import metaopt_envs  # noqa: E402,F401  (registers the ids)
from agents.evaluation.report import cpu_model  # noqa: E402
from metaopt_envs import make_core  # noqa: E402

ENVS = {
    # short name: (env id, default families, episode-length argument, its value, extra arguments)
    "lr": ("MetaOpt-LR-v0", "quadratic,logistic,sinusoid,sklearn,mixture", "horizon", 100, {}),
    "ensemble": ("MetaOpt-Ensemble-v0", "switching_ar,regimes,real", "horizon", 100, {"warmup": 50}),
    "hpo": ("MetaOpt-HPO-v0", "branin,hartmann6,gp,sklearn,mixture", "budget", 32, {}),
}
MLP_FAMILIES = ("sinusoid", "sklearn")
PEAK_SIZE = 512  # the square matmul timed beside the MLP families' steps
README_START, README_END = "<!-- env-throughput:start -->", "<!-- env-throughput:end -->"


# ----------------------------------------------------------------------------- facts
def machine_facts(threads: int, device: str) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    model = cpu_model()
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        simd = [f for f in ("avx512f", "avx2", "fma") if f" {f}" in flags]
    except (OSError, StopIteration):
        simd = []
    commit = git("rev-parse", "--short=12", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": f"{commit}{'+dirty' if dirty else ''}" if commit else None,
        "cpu_model": model,
        "simd": simd,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": threads,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else None,
        "loadavg_start": list(os.getloadavg()),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def matmul_peak(sizes: tuple[int, ...] = (256, 512, 1024), reps: int = 5) -> dict[str, Any]:
    """Best GFLOP/s of square fp32 ``torch.mm`` on the CPU at the current thread count."""
    by_size = {}
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=c)
        best = math.inf
        for _ in range(reps):
            start = time.perf_counter()
            torch.mm(a, b, out=c)
            best = min(best, time.perf_counter() - start)
        by_size[str(n)] = 2 * n**3 / best / 1e9
    return {"gflops": max(by_size.values()), "gflops_by_size": by_size}


def made_by(report: dict[str, Any], peak: str = "") -> str:
    """The first line of a report's table: command, commit, machine (``machine_facts``), ``peak``, load."""
    return (
        f"Made by `{report['command']}` at commit `{report['commit']}` ({report['date_utc']} UTC) on "
        f"{report['cpu_model']} ({', '.join(report['simd'])}), {report['logical_cpus']} logical CPUs, "
        f"{report['threads']} torch thread(s), torch {report['torch']}{peak}; load average "
        f"{report['loadavg_start'][0]:.2f} at the start, {report['loadavg_end'][0]:.2f} at the end."
    )


def write_report(out: str | Path, report: dict[str, Any], markdown: str, indent: int = 2) -> None:
    """``report`` as ``<out>.json`` and ``markdown`` as ``<out>.md`` (folders made as needed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=indent) + "\n")
    out.with_suffix(".md").write_text(markdown)


# ----------------------------------------------------------------------------- timing
def interleaved(
    fns: dict[str, Callable[[], Any]], seconds: float, windows: int, sync: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Median seconds per call of each ``fn``, timed in ``windows`` round-robin windows of
    ``seconds / windows`` per function (so slow phases of a shared machine hit every function)."""
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    sync()
    budget = seconds / (windows * len(fns))
    for _ in range(windows):
        for name, fn in fns.items():
            calls, start = 0, time.perf_counter()
            while True:
                fn()
                calls += 1
                if time.perf_counter() - start >= budget:
                    break
            sync()
            per_call[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(times) for name, times in per_call.items()}


def _stepper(envs: Any, num_envs: int) -> Callable[[], Any]:
    envs.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(64, num_envs, *envs.single_action_space.shape))
    actions = actions.astype(np.float32)
    counter = itertools.count()
    return lambda: envs.step(actions[next(counter) % 64])


def _compiled(step: Callable[[], Any]) -> Callable[[], Any]:
    """``step`` with the MLP families' compiled measurement switched on around it (eager otherwise)."""
    from metaopt_envs.lr.families import mlp

    def compiled_step() -> Any:
        mlp.set_compiled(True)
        try:
            return step()
        finally:
            mlp.set_compiled(False)

    return compiled_step


def _core_stepper(envs: Any, num_envs: int, device: str) -> Callable[[], Any]:
    """One decision of the env's core with actions already on its device, resets of ended rows included:
    the batched program without the numpy boundary (what an agent on the same device sees)."""
    core = envs.core
    generator = torch.Generator().manual_seed(0)
    actions = (2 * torch.rand((64, num_envs, *envs.single_action_space.shape), generator=generator) - 1).to(device)
    counter = itertools.count()

    def step() -> None:
        result = core.step(actions[next(counter) % 64])
        core.reset_rows(result.terminated | result.truncated)

    return step


def _cuda_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- LR extras
def useful_flops(core: Any) -> int:
    """Useful matmul FLOPs of one decision of one LR env of an MLP family (see the module docstring)."""
    family = core.family
    total = 0
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(family.layer_sizes)):
        rows = family.num_train + (family.num_val if core.observe_validation else 0)
        total += 2 * rows * fan_in * fan_out  # full-loss (and validation) forward
        total += 2 * 2 * family.batch_size * fan_in * fan_out  # both minibatches' weight gradients
        if layer > 0:
            total += 2 * 2 * family.batch_size * fan_in * fan_out  # both minibatches' input gradients
    return core.action_every * total


def reset_cost(family: str, num_envs: int, seconds: float, windows: int, device: str) -> dict[str, Any]:
    """A step against resets of 3 rows: the same 3 rows every call (the worst case for the core's reset
    lookahead, which then has nothing to batch), and 3 other rows each call in turn, as autoresets of
    rows that end out of step reset them (with a new task, and on the same task)."""
    core = make_core("MetaOpt-LR-v0", num_envs=num_envs, task_family=family, horizon=10**6, device=device)
    on_demand = make_core("MetaOpt-LR-v0", num_envs=num_envs, task_family=family, horizon=10**6, device=device)
    on_demand.reset_lookahead = False  # the same resets computed on demand, for the ratio
    actions = torch.zeros(num_envs, 1, device=device)
    rows = torch.zeros(num_envs, dtype=torch.bool, device=device)
    rows[:3] = True
    turns = [(torch.arange(num_envs, device=device) - 3 * i) % num_envs < 3 for i in range(-(-num_envs // 3))]
    turn = itertools.count()
    times = interleaved(
        {
            "step": lambda: core.step(actions),
            "reset": lambda: core.reset_rows(rows),
            "in_turn": lambda: core.reset_rows(turns[next(turn) % len(turns)]),
            "same_task": lambda: core.reset_rows(turns[next(turn) % len(turns)], same_task=True),
            "in_turn_on_demand": lambda: on_demand.reset_rows(turns[next(turn) % len(turns)]),
            "reset_on_demand": lambda: on_demand.reset_rows(rows),
        },
        seconds,
        windows,
        _cuda_sync if device == "cuda" else lambda: None,
    )
    return {
        "family": family,
        "num_envs": num_envs,
        "step_ms": 1e3 * times["step"],
        "reset_3_rows_ms": 1e3 * times["reset"],
        "reset_over_step": times["reset"] / times["step"],
        "in_turn_3_rows_ms": 1e3 * times["in_turn"],
        "in_turn_over_step": times["in_turn"] / times["step"],
        "same_task_3_rows_ms": 1e3 * times["same_task"],
        "same_task_over_step": times["same_task"] / times["step"],
        "in_turn_on_demand_3_rows_ms": 1e3 * times["in_turn_on_demand"],
        "lookahead_speedup_in_turn": times["in_turn_on_demand"] / times["in_turn"],
        "lookahead_speedup_same_rows": times["reset_on_demand"] / times["reset"],
    }


def vmap_comparison(num_envs: int, seconds: float, windows: int) -> dict[str, Any]:
    """The sklearn core's step against ``torch.func.vmap`` + ``functional_call`` of the same inner work."""
    import torch.nn.functional as F
    from torch import nn
    from torch.func import functional_call, grad, vmap

    from metaopt_envs.core import rng

    core = make_core("MetaOpt-LR-v0", num_envs=num_envs, task_family="sklearn", horizon=10**6)
    family, tasks = core.family, core.tasks
    sizes = family.layer_sizes
    layers: list[nn.Module] = []
    for depth, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.ReLU()] if depth < len(sizes) - 2 else [])
    module = nn.Sequential(*layers)
    names = [name for name, _ in module.named_parameters()]

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for depth, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            weight, bias = names[2 * depth], names[2 * depth + 1]
            out[weight] = flat[offset : offset + fan_in * fan_out].view(fan_in, fan_out).t()
            offset += fan_in * fan_out
            out[bias] = flat[offset : offset + fan_out]
            offset += fan_out
        return out

    def loss(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        logits = functional_call(module, unflatten(flat), (x,))
        logits = logits.masked_fill(torch.arange(logits.shape[-1]) >= classes, -1e9)
        return F.cross_entropy(logits, y)

    def inner(flat, x, y, classes, index_a, index_b, lr):
        grad_a = grad(loss)(flat, x[index_a], y[index_a], classes)
        grad_b = grad(loss)(flat, x[index_b], y[index_b], classes)
        mean = (grad_a + grad_b) / 2
        flat = flat - lr * mean
        noise = (grad_a - grad_b).norm() ** 2 / (4 * mean.norm() ** 2 + 1e-30)
        return flat, loss(flat, x, y, classes), mean.norm(), noise

    batched_inner = vmap(inner)
    params = core.params.clone()
    classes = family.num_classes[tasks["dataset"]]
    lr = torch.full((num_envs,), 0.1)
    keys = rng.keys_from_seeds(list(range(num_envs)))
    index = rng.randint(
        rng.fold_each(keys, (0, 1))
        if hasattr(rng, "fold_each")
        else torch.stack([rng.fold(keys, 0), rng.fold(keys, 1)], 1),
        family.num_train,
        (family.batch_size,),
    )

    def vmapped() -> Any:
        with torch.no_grad():
            return batched_inner(params, tasks["inputs"], tasks["targets"], classes, index[:, 0], index[:, 1], lr)

    actions = torch.zeros(num_envs, 1)
    times = interleaved({"core": lambda: core.step(actions), "vmap": vmapped}, seconds, windows)
    return {
        "family": "sklearn",
        "num_envs": num_envs,
        "core_ms": 1e3 * times["core"],
        "vmap_ms": 1e3 * times["vmap"],
        "core_speedup": times["vmap"] / times["core"],
    }


# ----------------------------------------------------------------------------- main
def throughput_cell(env: str, family: str, num_envs: int, args: argparse.Namespace) -> dict[str, Any]:
    env_id, _, length_name, length, extra = ENVS[env]
    kwargs = {"task_family": family, length_name: length, **extra}
    row: dict[str, Any] = {"env": env_id, "family": family, "num_envs": num_envs, "device": args.device}
    if args.device == "cuda" and not torch.cuda.is_available():
        return {**row, "status": "unmeasured (no CUDA device)"}
    batched = gym.make_vec(env_id, num_envs=num_envs, device=args.device, **kwargs)
    sync_envs = min(num_envs, args.sync_envs)
    sync = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, **kwargs)] * sync_envs)
    fns = {
        "batched": _stepper(batched, num_envs),
        "sync": _stepper(sync, sync_envs),
        "core": _core_stepper(batched, num_envs, args.device),
    }
    mlp = env == "lr" and family in MLP_FAMILIES
    if mlp and args.compiled:
        fns["compiled"] = _compiled(_stepper(batched, num_envs))
    if mlp and args.device == "cpu":
        # The peak timed in the same windows: on a shared machine a peak from another moment misleads.
        a, b, c = (
            torch.randn(PEAK_SIZE, PEAK_SIZE),
            torch.randn(PEAK_SIZE, PEAK_SIZE),
            torch.empty(PEAK_SIZE, PEAK_SIZE),
        )
        fns["peak"] = lambda: torch.mm(a, b, out=c)
    times = interleaved(fns, args.seconds, args.windows, _cuda_sync if args.device == "cuda" else lambda: None)
    row.update(
        status="measured",
        sync_envs=sync_envs,
        batched_steps_per_s=num_envs / times["batched"],
        sync_steps_per_s=sync_envs / times["sync"],
        core_steps_per_s=num_envs / times["core"],
        step_ms=1e3 * times["batched"],
    )
    row["ratio"] = row["batched_steps_per_s"] / row["sync_steps_per_s"]
    if mlp:
        row["gflops"] = useful_flops(batched.core) * row["batched_steps_per_s"] / 1e9
        if "peak" in times:
            row["matmul_peak_gflops"] = 2 * PEAK_SIZE**3 / times["peak"] / 1e9
            row["fraction_of_peak"] = row["gflops"] / row["matmul_peak_gflops"]
        if "compiled" in times:
            row["compiled_steps_per_s"] = num_envs / times["compiled"]
            row["compiled_ratio"] = row["compiled_steps_per_s"] / row["sync_steps_per_s"]
            row["compiled_speedup"] = times["batched"] / times["compiled"]
            if "matmul_peak_gflops" in row:
                gflops = useful_flops(batched.core) * row["compiled_steps_per_s"] / 1e9
                row["compiled_fraction_of_peak"] = gflops / row["matmul_peak_gflops"]
    batched.close()
    sync.close()
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="lr,ensemble,hpo", help="comma-separated: lr, ensemble, hpo")
    parser.add_argument("--families", default=None, help="comma-separated families (default: every family of each env)")
    parser.add_argument("--batch-sizes", default="1,64,1024")
    parser.add_argument("--sync-envs", type=int, default=32, help="single envs in the SyncVectorEnv reference")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cell (both sides)")
    parser.add_argument("--windows", type=int, default=5, help="interleaved windows per cell")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the batched side runs")
    parser.add_argument("--reset-batch", type=int, default=64)
    parser.add_argument("--vmap-batch", type=int, default=256)
    parser.add_argument(
        "--compiled", action="store_true", help="also time the LR MLP families with mlp.set_compiled(True)"
    )
    parser.add_argument("--no-extras", action="store_true", help="skip the reset-cost and vmap measurements")
    parser.add_argument("--quick", action="store_true", help="B = 1, 64; 0.6 s per cell; no extras")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "env_throughput"))
    parser.add_argument("--readme", default=None, help="a README whose table between the markers is rewritten")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.seconds, args.windows, args.no_extras = "1,64", 0.6, 3, True
    torch.set_num_threads(args.threads)
    facts = machine_facts(args.threads, args.device)
    peak = matmul_peak()
    facts["matmul_peak_gflops"] = peak["gflops"]
    print(json.dumps(facts), flush=True)
    rows = []
    envs = args.envs.split(",")
    for env in envs:
        families = args.families.split(",") if args.families else ENVS[env][1].split(",")
        for family in families:
            if len(envs) > 1 and family not in ENVS[env][1].split(","):
                continue  # a family named for another of the envs
            for num_envs in (int(b) for b in args.batch_sizes.split(",")):
                rows.append(throughput_cell(env, family, num_envs, args))
                print(json.dumps(rows[-1]), flush=True)
    extras: dict[str, Any] = {"reset_cost": [], "vmap": None}
    if not args.no_extras and "lr" in args.envs.split(","):
        measurable = args.device == "cpu" or torch.cuda.is_available()
        for family in ENVS["lr"][1].split(","):
            if measurable:
                extras["reset_cost"].append(
                    reset_cost(family, args.reset_batch, args.seconds, args.windows, args.device)
                )
            else:
                extras["reset_cost"].append({"family": family, "status": "unmeasured (no CUDA device)"})
            print(json.dumps(extras["reset_cost"][-1]), flush=True)
        if args.device == "cpu":
            extras["vmap"] = vmap_comparison(args.vmap_batch, 2 * args.seconds, args.windows)
            print(json.dumps(extras["vmap"]), flush=True)
    facts["loadavg_end"] = list(os.getloadavg())
    report = {"facts": facts, "matmul_peak": peak, "settings": vars(args), "rows": rows, **extras}
    markdown = render_markdown(report)
    write_report(args.out, report, markdown, indent=1)
    if args.readme:
        update_readme(Path(args.readme), markdown)
    print(markdown)
    return report


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def render_markdown(report: dict[str, Any]) -> str:
    facts, settings = report["facts"], report["settings"]
    lines = [
        "Measured by `python benchmarks/env_throughput.py` "
        f"(commit `{facts['commit']}`, {facts['date_utc']} UTC): {facts['cpu_model']} "
        f"({', '.join(facts['simd']) or 'SIMD unknown'}), {facts['logical_cpus']} logical CPUs, "
        f"{facts['threads']} torch thread(s), torch {facts['torch']}, batched side on `{facts['device']}`"
        + (f" ({facts['gpu']})" if facts.get("gpu") else "")
        + f"; measured fp32 matmul peak {facts['matmul_peak_gflops']:.1f} GFLOP/s at the start (same threads; the "
        f"MLP rows' % is against a {PEAK_SIZE}x{PEAK_SIZE} matmul timed in their own windows, shown beside it); "
        f"load average {facts['loadavg_start'][0]:.2f} at the start, {facts['loadavg_end'][0]:.2f} at the end. "
        f"Median of {settings['windows']} interleaved windows, {settings['seconds']} s per cell; SyncVectorEnv of "
        f"min(B, {settings['sync_envs']}) single envs; episodes of 100 decisions (HPO: a budget of 32), autoresets "
        "included.",
        "",
        "| env | family | B | batched steps/s | core steps/s | SyncVectorEnv steps/s | ratio | "
        "% of matmul peak (peak GFLOP/s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        name = row["env"].removeprefix("MetaOpt-").removesuffix("-v0")
        if row["status"] != "measured":
            lines.append(f"| {name} | {row['family']} | {row['num_envs']} | {row['status']} | - | - | - | - |")
            continue
        fraction = row.get("fraction_of_peak")
        peak = "" if fraction is None else f"{100 * fraction:.1f}% ({row['matmul_peak_gflops']:.0f})"
        lines.append(
            f"| {name} | {row['family']} | {row['num_envs']} | {_rate(row['batched_steps_per_s'])} | "
            f"{_rate(row['core_steps_per_s'])} | {_rate(row['sync_steps_per_s'])} | {row['ratio']:.1f}x | {peak} |"
        )
    compiled = [row for row in report["rows"] if "compiled_steps_per_s" in row]
    if compiled:
        lines += [
            "",
            "| LR family | B | eager steps/s | compiled steps/s | compiled / eager | eager ratio | compiled ratio | "
            "eager % of peak | compiled % of peak |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in compiled:
            eager_peak, compiled_peak = row.get("fraction_of_peak"), row.get("compiled_fraction_of_peak")
            lines.append(
                f"| {row['family']} | {row['num_envs']} | {_rate(row['batched_steps_per_s'])} | "
                f"{_rate(row['compiled_steps_per_s'])} | {row['compiled_speedup']:.2f}x | {row['ratio']:.1f}x | "
                f"{row['compiled_ratio']:.1f}x | "
                + ("-" if eager_peak is None else f"{100 * eager_peak:.1f}%")
                + " | "
                + ("-" if compiled_peak is None else f"{100 * compiled_peak:.1f}%")
                + " |"
            )
    if report.get("reset_cost"):
        lines += [
            "",
            "| LR family | B | step ms | reset 3 rows in turn ms (/ step) | same task, in turn (/ step) "
            "| the same 3 rows every call (/ step) | lookahead vs on demand: in turn, the same rows |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in report["reset_cost"]:
            if "step_ms" not in row:
                lines.append(f"| {row['family']} | - | {row['status']} | - | - | - | - |")
                continue
            lines.append(
                f"| {row['family']} | {row['num_envs']} | {row['step_ms']:.2f} | "
                f"{row['in_turn_3_rows_ms']:.2f} ({row['in_turn_over_step']:.2f}) | "
                f"{row['same_task_3_rows_ms']:.2f} ({row['same_task_over_step']:.2f}) | "
                f"{row['reset_3_rows_ms']:.2f} ({row['reset_over_step']:.2f}) | "
                f"{row['lookahead_speedup_in_turn']:.2f}x, {row['lookahead_speedup_same_rows']:.2f}x |"
            )
    if report.get("vmap"):
        v = report["vmap"]
        lines += [
            "",
            f"sklearn core step at B={v['num_envs']}: {v['core_ms']:.1f} ms; a `torch.func.vmap` + "
            f"`functional_call` implementation of the same inner work: {v['vmap_ms']:.1f} ms "
            f"(core {v['core_speedup']:.2f}x faster).",
        ]
    return "\n".join(lines) + "\n"


def update_readme(path: Path, markdown: str) -> None:
    text = path.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    path.write_text(text[:start] + "\n" + markdown + text[end:])


if __name__ == "__main__":
    main()
