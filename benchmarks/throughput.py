"""Env-step throughput of MetaOpt-LR-v0: the native batched VectorEnv vs SyncVectorEnv.

What is measured, for each task family (quadratic, logistic, sinusoid, sklearn,
mixture) and batch size ``B`` (default 1, 64, 1024, 4096):

* **batched**: ``gym.make_vec("MetaOpt-LR-v0", num_envs=B, task_family=F,
  horizon=H)``, one tensor program over all rows (on the CPU, and on
  CUDA when ``torch.cuda.is_available()``);
* **sync**: ``gym.make_vec(..., vectorization_mode="sync")``, a
  ``gymnasium.vector.SyncVectorEnv`` looping over B single envs (CPU only).
  Its per-env cost does not depend on B (it is a Python loop), so it is only
  run up to ``--sync-max-envs`` (default 1024); larger B are marked skipped,
  with the ratio taken against the largest measured sync B (flagged).

``steps/s = B * decisions / wall time`` of ``env.step`` calls after a warm-up,
with constant actions (``--action``, default 0: the geometric-middle learning
rate). The timed decisions of a cell are split into up to ``--windows``
windows of about ``--cell-seconds / --windows`` each; the headline number is
the best window (the machine may be shared), the median is kept too. Episodes
are ``--horizon`` decisions; autoresets that fall in a timed window are
counted (``episodes_ended``), and the cost of resetting all B rows is measured
separately (``reset_s``) and folded into ``steps_per_s_amortized`` =
``B * H / (H * t_step + t_reset)``.

For the MLP families (sinusoid, sklearn) the script also reports how much of
the CPU's matrix-multiply throughput an env step achieves:

* the roofline is the best GFLOP/s of a few large square fp32 ``torch.mm``
  (``--roofline-sizes``) at the same thread count;
* the useful FLOPs of one decision are counted analytically from the family's
  layer sizes: full training-loss forward over ``num_train`` samples, the
  validation forward over ``num_val`` (only with ``observe_validation``), and
  two minibatches of ``batch_size`` (forward ``2*m*in*out`` per layer;
  backward = weight grads ``2*m*in*out`` for every layer + input grads
  ``2*m*in*out`` for every layer but the first), times ``action_every``;
* a bmm-only microbenchmark runs exactly those matmul shapes with
  ``torch.bmm(..., out=...)`` into preallocated buffers (what a batched-bmm
  implementation could do at best) so the gap can be split between the env's
  overhead and bmm itself.

``--profile`` (on by default outside ``--quick``) profiles one batched step
of each MLP family at ``--profile-batch`` (1024) with ``torch.profiler``,
with the family's methods wrapped in ``record_function`` labels (the package
code is not modified), and writes ``benchmarks/results/throughput_profile.md``.

Usage::

    python benchmarks/throughput.py                  # full run (~10 min on 2 CPU cores)
    python benchmarks/throughput.py --quick          # smoke run (< 1 min; writes throughput_quick.*)
    python benchmarks/throughput.py --threads 2 --families sinusoid,sklearn

Writes ``benchmarks/results/throughput.{json,md}`` (``--out-dir``, ``--tag``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/throughput.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import itertools  # noqa: E402

import gymnasium as gym  # noqa: E402

import metaopt_envs  # noqa: E402,F401  (registers MetaOpt-LR-v0)

ENV_ID = "MetaOpt-LR-v0"
FAMILIES = ("quadratic", "logistic", "sinusoid", "sklearn", "mixture")
MLP_FAMILIES = ("sinusoid", "sklearn")
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


# ----------------------------------------------------------------------------- helpers
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> dict[str, Any]:
    info: dict[str, Any] = {"model_name": platform.processor() or None, "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and info.get("model_name") in (None, "", platform.processor()):
            info["model_name"] = value
        elif key == "flags" and "simd_flags" not in info:
            wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
            info["simd_flags"] = [f for f in value.split() if f in wanted]
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _core_of(env: Any) -> Any:
    core = getattr(env, "core", None)
    return core if core is not None else env.unwrapped.core


def _fmt_rate(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}"


# ----------------------------------------------------------------------------- env timing
def time_steps(
    env: Any,
    num_envs: int,
    device: str,
    action: float,
    warmup: int,
    cell_seconds: float,
    windows: int,
) -> dict[str, Any]:
    """Warm up, then step in windows until ``cell_seconds`` of timed stepping (>= 1 decision)."""
    actions = np.full((num_envs, 1), action, dtype=np.float32)
    for _ in range(warmup):
        env.step(actions)
    _sync(device)
    per_window = cell_seconds / max(windows, 1)
    records, total, ended, faults = [], 0.0, 0, 0
    while len(records) < windows and (not records or total < cell_seconds):
        n, f0 = 0, _minflt()
        t0 = time.perf_counter()
        while True:
            _, _, terminated, truncated, _ = env.step(actions)
            n += 1
            ended += int(np.count_nonzero(np.logical_or(terminated, truncated)))
            if time.perf_counter() - t0 >= per_window:
                break
        _sync(device)
        elapsed = time.perf_counter() - t0
        faults += _minflt() - f0
        records.append({"decisions": n, "seconds": elapsed, "steps_per_s": num_envs * n / elapsed})
        total += elapsed
    rates = [r["steps_per_s"] for r in records]
    decisions = sum(r["decisions"] for r in records)
    return {
        "steps_per_s": max(rates),
        "steps_per_s_median": statistics.median(rates),
        "step_ms_best": 1e3 * num_envs / max(rates),
        "timed_decisions": decisions,
        "timed_seconds": total,
        "windows": records,
        "episodes_ended": ended,
        "minor_faults_per_decision": faults / decisions,
    }


def run_batched(family: str, num_envs: int, device: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = gym.make_vec(
        ENV_ID,
        num_envs=num_envs,
        task_family=family,
        horizon=args.horizon,
        device=device,
        **args.env_kwargs_dict,
    )
    env.reset(seed=args.seed)
    _sync(device)
    create_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    env.reset(seed=args.seed + 1)  # resets every row: the cost of one all-rows autoreset
    _sync(device)
    reset_s = time.perf_counter() - t0
    out = time_steps(env, num_envs, device, args.action, args.warmup, args.cell_seconds, args.windows)
    t_step = num_envs / out["steps_per_s"]
    out.update(
        create_s=create_s,
        reset_s=reset_s,
        steps_per_s_amortized=num_envs * args.horizon / (args.horizon * t_step + reset_s),
    )
    core = _core_of(env)
    out["family_config"] = _family_config(core)
    env.close()
    return out


def run_sync(family: str, num_envs: int, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = gym.make_vec(
        ENV_ID,
        num_envs=num_envs,
        vectorization_mode="sync",
        task_family=family,
        horizon=args.horizon,
        **args.env_kwargs_dict,
    )
    env.reset(seed=args.seed)
    create_s = time.perf_counter() - t0
    warmup = 1 if num_envs > 64 else args.warmup
    out = time_steps(env, num_envs, "cpu", args.action, warmup, args.cell_seconds, args.windows)
    out["create_s"] = create_s
    env.close()
    return out


# ----------------------------------------------------------------------------- FLOP model
def _family_config(core: Any) -> dict[str, Any]:
    fam = core.family
    cfg: dict[str, Any] = {"name": fam.name, "param_dim": fam.param_dim}
    for field in ("layer_sizes", "num_train", "num_val", "batch_size"):
        if hasattr(fam, field):
            value = getattr(fam, field)
            cfg[field] = list(value) if isinstance(value, tuple) else value
    cfg["observe_validation"] = bool(core.observe_validation)
    cfg["action_every"] = int(core.action_every)
    return cfg


def matmul_shapes(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Useful matmuls of one inner step: ``bmm`` of (batch_mult*B, m, k) @ (batch_mult*B, k, n)."""
    sizes, n_train, n_val, mb = cfg["layer_sizes"], cfg["num_train"], cfg["num_val"], cfg["batch_size"]
    shapes = []
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        shapes.append({"what": f"L{layer} full-loss fwd", "mult": 1, "m": n_train, "k": fan_in, "n": fan_out})
        if cfg["observe_validation"]:
            shapes.append({"what": f"L{layer} val fwd", "mult": 1, "m": n_val, "k": fan_in, "n": fan_out})
        # The minibatch rows reuse the full-loss forward's activations (one shared pass), so
        # only their backward is counted: one bmm over 2B rows per product.
        shapes.append({"what": f"L{layer} 2x weight grad", "mult": 2, "m": fan_in, "k": mb, "n": fan_out})
        if layer > 0:
            shapes.append({"what": f"L{layer} 2x input grad", "mult": 2, "m": mb, "k": fan_out, "n": fan_in})
    for s in shapes:
        s["flops_per_env"] = 2 * s["mult"] * s["m"] * s["k"] * s["n"]
    return shapes


def flops_per_env_step(cfg: dict[str, Any]) -> int:
    """Useful matmul FLOPs of one decision of one env (``action_every`` inner steps)."""
    return cfg["action_every"] * sum(s["flops_per_env"] for s in matmul_shapes(cfg))


def measure_roofline(sizes: list[int], reps: int) -> dict[str, Any]:
    results = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        torch.mm(a, b, out=c)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
        results[str(n)] = 2 * n**3 / best / 1e9
    return {"gflops_by_size": results, "gflops": max(results.values()), "sizes": sizes, "reps": reps}


def _best_time(fn: Callable[[], Any], budget_s: float, max_calls: int = 50) -> float:
    fn()
    best, spent = float("inf"), 0.0
    for _ in range(max_calls):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best


def bmm_microbench(cfg: dict[str, Any], num_envs: int, seconds: float) -> dict[str, Any]:
    """Time exactly the useful bmm shapes of one decision, into preallocated outputs.

    ``as-is``: each product as written (``(m, k) @ (k, n)``, the weight grads with a
    transposed view of the stored activations); ``transposed``: the same product computed
    as its transpose ``(n, k) @ (k, m)`` from contiguous operands (a core may store its
    activations either way). ``best layout`` takes the faster orientation per shape.
    """
    shapes = matmul_shapes(cfg)
    as_is: list[Callable[[], Any]] = []
    transposed: list[Callable[[], Any]] = []
    for s in shapes:
        batch, m, k, n = s["mult"] * num_envs, s["m"], s["k"], s["n"]
        # X^T @ dY with X stored (batch, mb, in) is a transposed view.
        a = torch.randn(batch, k, m).transpose(1, 2) if "weight grad" in s["what"] else torch.randn(batch, m, k)
        as_is.append(functools.partial(torch.bmm, a, torch.randn(batch, k, n), out=torch.empty(batch, m, n)))
        transposed.append(
            functools.partial(
                torch.bmm, torch.randn(batch, n, k), torch.randn(batch, k, m), out=torch.empty(batch, n, m)
            )
        )
    budget = seconds / (2 * len(shapes))
    per_shape, best_ops = [], []
    for s, f_as_is, f_t in zip(shapes, as_is, transposed):
        t_as_is, t_t = _best_time(f_as_is, budget), _best_time(f_t, budget)
        flops = s["flops_per_env"] * num_envs
        per_shape.append(
            {
                **{key: s[key] for key in ("what", "mult", "m", "k", "n")},
                "ms": 1e3 * t_as_is,
                "gflops": flops / t_as_is / 1e9,
                "ms_transposed": 1e3 * t_t,
                "gflops_transposed": flops / t_t / 1e9,
            }
        )
        best_ops.append(f_as_is if t_as_is <= t_t else f_t)

    def sequence(ops: list[Callable[[], Any]]) -> float:
        """All shapes of one inner step back to back, best of a few, per decision."""
        best_step, spent = float("inf"), 0.0
        while spent < seconds / 2 or best_step == float("inf"):
            t0 = time.perf_counter()
            for fn in ops:
                fn()
            dt = time.perf_counter() - t0
            best_step, spent = min(best_step, dt), spent + dt
        return best_step * cfg["action_every"]

    flops = flops_per_env_step(cfg) * num_envs
    step_s, best_s = sequence(as_is), sequence(best_ops)
    return {
        "step_ms": 1e3 * step_s,
        "gflops": flops / step_s / 1e9,
        "best_layout_step_ms": 1e3 * best_s,
        "best_layout_gflops": flops / best_s / 1e9,
        "per_shape": per_shape,
    }


# ----------------------------------------------------------------------------- profile
def profile_step(family: str, num_envs: int, args: argparse.Namespace) -> dict[str, Any]:
    """torch.profiler of one batched step, with the core's phases labelled by wrapping methods."""
    from torch.profiler import ProfilerActivity, profile, record_function

    env = gym.make_vec(ENV_ID, num_envs=num_envs, task_family=family, horizon=args.horizon, **args.env_kwargs_dict)
    env.reset(seed=args.seed)
    core = _core_of(env)
    fam = core.family

    def label(obj: Any, name: str, tag: str) -> None:
        if not hasattr(obj, name):
            return
        original = getattr(obj, name)

        @functools.wraps(original)
        def wrapped(*a: Any, **k: Any) -> Any:
            with record_function(tag):
                return original(*a, **k)

        object.__setattr__(obj, name, wrapped)  # works on frozen dataclasses too

    label(core, "_measure", "phase: _measure (grads + losses)")
    label(core, "_measure_block", "sub: _measure_block (one block of rows)")
    label(core, "observe", "phase: observe")
    label(core, "reset_rows", "phase: reset_rows")
    label(core.optimizer, "step", "phase: inner optimizer step")
    label(fam, "loss", "phase: full loss (train/val) forward")
    grad_fn = "paired_minibatch_grads" if hasattr(type(fam), "paired_minibatch_grads") else "minibatch_loss_and_grad"
    label(fam, grad_fn, f"phase: {grad_fn}")
    label(fam, "_data", "sub: _data (dataset gather/slice)")
    label(fam, "forward", "sub: MLP forward")
    real_grad = torch.autograd.grad

    def grad(*a: Any, **k: Any) -> Any:
        with record_function("sub: autograd.grad (backward)"):
            return real_grad(*a, **k)

    actions = np.full((num_envs, 1), args.action, dtype=np.float32)
    for _ in range(args.warmup):
        env.step(actions)
    torch.autograd.grad = grad
    try:
        t0 = time.perf_counter()
        for _ in range(args.profile_steps):
            env.step(actions)
        unprofiled_ms = 1e3 * (time.perf_counter() - t0) / args.profile_steps
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.profile_steps):
                with record_function("env.step"):
                    env.step(actions)
    finally:
        torch.autograd.grad = real_grad
    env.close()

    events = prof.key_averages()
    steps = args.profile_steps  # every time below is per step (the mean over the profiled steps)
    total_us = next(e.cpu_time_total for e in events if e.key == "env.step") / steps
    phases = sorted(
        (
            {
                "label": e.key,
                "ms": e.cpu_time_total / steps / 1e3,
                "share": e.cpu_time_total / steps / total_us,
                "calls": e.count / steps,
            }
            for e in events
            if e.key.startswith(("phase:", "sub:"))
        ),
        key=lambda r: -r["ms"],
    )
    ops = sorted(
        (
            {
                "op": e.key,
                "self_ms": e.self_cpu_time_total / steps / 1e3,
                "share": e.self_cpu_time_total / steps / total_us,
                "calls": e.count / steps,
            }
            for e in events
            if e.key.startswith("aten::")
        ),
        key=lambda r: -r["self_ms"],
    )[:15]
    by_shape = sorted(
        (
            {
                "op": e.key,
                "shapes": str(e.input_shapes),
                "self_ms": e.self_cpu_time_total / steps / 1e3,
                "share": e.self_cpu_time_total / steps / total_us,
                "calls": e.count / steps,
            }
            for e in prof.key_averages(group_by_input_shape=True)
            if e.key.startswith("aten::")
        ),
        key=lambda r: -r["self_ms"],
    )[:15]
    matmul_ops = ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm", "aten::matmul")
    matmul_ms = sum(e.self_cpu_time_total for e in events if e.key in matmul_ops) / steps / 1e3
    # Coarse categories of aten self time: matmuls, elementwise/reduction work on the per-row
    # state (first input (B, P) or (B, 2, P): gradients, noise, optimizer, finiteness checks),
    # counter-based RNG (int64 hashing), and everything else (activations, losses, gathers, ...).
    p_dim = fam.param_dim
    state_shapes = ([num_envs, p_dim], [num_envs, 2, p_dim])
    rng_ops = ("aten::__rshift__", "aten::__lshift__", "aten::bitwise_and", "aten::bitwise_xor", "aten::bitwise_or")
    categories = {
        "matmul (bmm/baddbmm)": 0.0,
        "per-row state ops on (B, P)": 0.0,
        "RNG int64 hashing": 0.0,
        "other aten ops": 0.0,
    }
    for e in prof.key_averages(group_by_input_shape=True):
        if not e.key.startswith("aten::"):
            continue
        first = e.input_shapes[0] if e.input_shapes else None
        if e.key in matmul_ops:
            cat = "matmul (bmm/baddbmm)"
        elif e.key in rng_ops:
            cat = "RNG int64 hashing"
        elif first in state_shapes:
            cat = "per-row state ops on (B, P)"
        else:
            cat = "other aten ops"
        categories[cat] += e.self_cpu_time_total / steps / 1e3
    aten_ms = sum(categories.values())
    categories["Python / dispatch / profiler (step minus aten self time)"] = max(total_us / 1e3 - aten_ms, 0.0)
    return {
        "family": family,
        "num_envs": num_envs,
        "profiled_steps": steps,
        "step_ms_profiled": total_us / 1e3,
        "step_ms_unprofiled": unprofiled_ms,
        "matmul_self_ms": matmul_ms,
        "categories_ms": categories,
        "phases": phases,
        "top_ops": ops,
        "top_ops_by_shape": by_shape,
    }


# ----------------------------------------------------------------------------- reports
def write_markdown(report: dict[str, Any], path: Path) -> None:
    meta = report["meta"]
    lines = [
        "# MetaOpt-LR-v0 env-step throughput",
        "",
        f"- date: {meta['date']}; commit `{meta['git_commit']}`{' (dirty tree)' if meta['git_dirty'] else ''}",
        f"- CPU: {meta['cpu']['model_name']} ({meta['cpu']['logical_cpus']} logical CPUs, "
        f"{' '.join(meta['cpu'].get('simd_flags', []))}); torch {meta['torch']} "
        f"with `torch.get_num_threads()` = {meta['torch_threads']}; gymnasium {meta['gymnasium']}",
        f"- CUDA: {meta['cuda_device'] or 'not available (batched CUDA cells not run)'}",
        f"- load average before/after: {meta['loadavg_start']} / {meta['loadavg_end']} "
        "(other processes share the machine; each cell reports its best window)",
        f"- horizon {meta['args']['horizon']} decisions, action {meta['args']['action']}, "
        f"extra env kwargs {meta['args']['env_kwargs_dict'] or 'none'}, "
        f"~{meta['args']['cell_seconds']} s timed per cell in up to {meta['args']['windows']} windows, "
        f"total run {meta['wall_s']:.0f} s",
        "",
        "steps/s = num_envs x decisions / wall time of `env.step` (after warm-up). "
        "`ratio` = batched / sync at the same B; `*` = sync not run at that B (its per-env cost is a "
        "Python loop, independent of B), ratio taken against sync at the largest measured B.",
        "",
    ]
    for device in report["devices"]:
        cells = [c for c in report["cells"] if c["device"] == device]
        bs = sorted({c["num_envs"] for c in cells})
        lines += [f"## Batched vs SyncVectorEnv, {device}", ""]
        header = "| family | " + " | ".join(f"B={b} batched | sync | ratio" for b in bs) + " |"
        lines += [header, "|---|" + "---:|---:|---:|" * len(bs)]
        for fam in report["families"]:
            row = [fam]
            for b in bs:
                c = next((c for c in cells if c["family"] == fam and c["num_envs"] == b), None)
                if c is None:
                    row += ["-", "-", "-"]
                    continue
                bat = c["batched"].get("steps_per_s")
                syn = c.get("sync", {}).get("steps_per_s")
                ratio = c.get("ratio")
                mark = "*" if c.get("ratio_sync_from") not in (None, b) else ""
                row += [
                    _fmt_rate(bat),
                    _fmt_rate(syn) if syn else ("skipped" if device == "cpu" else "-"),
                    f"{ratio:.1f}x{mark}" if ratio else "-",
                ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        lines += [
            f"### Batched details, {device}",
            "",
            "| family | B | step ms | steps/s (best) | median | amortized with reset | reset s | create s "
            "| timed decisions | minor faults/decision |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in cells:
            r = c["batched"]
            if "error" in r:
                lines.append(f"| {c['family']} | {c['num_envs']} | error: {r['error']} ||||||||")
                continue
            lines.append(
                f"| {c['family']} | {c['num_envs']} | {r['step_ms_best']:.2f} | {_fmt_rate(r['steps_per_s'])} | "
                f"{_fmt_rate(r['steps_per_s_median'])} | {_fmt_rate(r['steps_per_s_amortized'])} | "
                f"{r['reset_s']:.2f} | {r['create_s']:.2f} | {r['timed_decisions']} | "
                f"{r['minor_faults_per_decision']:.0f} |"
            )
        lines.append("")
    sync_skips = [(c["family"], c["num_envs"], c["sync_skipped"]) for c in report["cells"] if c.get("sync_skipped")]
    if sync_skips:
        lines += ["Sync cells skipped: " + "; ".join(sorted({f"B={b}: {why}" for _, b, why in sync_skips})), ""]

    targets = report.get("targets", {})
    if targets:
        lines += ["## Targets (reported, not asserted)", ""]
        for t in targets.values():
            lines.append(f"- {t['text']}: **{t['value']}** -> {'met' if t['met'] else 'NOT met'}")
        lines.append("")

    roof = report.get("roofline")
    if roof:
        lines += [
            "## MLP families vs the CPU matmul roofline",
            "",
            f"Roofline: best fp32 `torch.mm` = **{roof['gflops']:.1f} GFLOP/s** at {meta['torch_threads']} "
            f"thread(s) (by size: "
            + ", ".join(f"{k}: {v:.1f}" for k, v in roof["gflops_by_size"].items())
            + f"; best at the start of the run {roof['gflops_start']:.1f}, at the end {roof['gflops_end']:.1f}). "
            "The bmm-only microbenchmark of each row runs right after that row's env cell.",
            "",
            "Useful FLOPs per env decision (analytic, matmuls only): "
            + "; ".join(
                f"{f}: {v['flops_per_env_step'] / 1e6:.3f} MFLOP ({v['config_text']})" for f, v in report["mlp"].items()
            ),
            "",
            "`env` = achieved by the batched env; `bmm-only` = the same matmul shapes alone with "
            "`torch.bmm(out=)` into preallocated buffers, as written (best case for a batched-bmm core "
            "with today's layouts); `best layout` = each product in its faster orientation (C or C^T); "
            "`bmm share` = bmm-only time / env step time.",
            "",
            "| family | B | env step ms | env GFLOP/s | env % roofline | bmm-only ms | bmm-only GFLOP/s "
            "| bmm-only % roofline | best layout % roofline | bmm share of step |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for fam, v in report["mlp"].items():
            for row in v["by_batch"]:
                if row.get("device") != "cpu":
                    continue
                lines.append(
                    f"| {fam} | {row['num_envs']} | {row['env_step_ms']:.2f} | {row['env_gflops']:.2f} | "
                    f"{100 * row['env_fraction']:.1f}% | {row['bmm_step_ms']:.2f} | {row['bmm_gflops']:.2f} | "
                    f"{100 * row['bmm_fraction']:.1f}% | {100 * row['bmm_best_layout_fraction']:.1f}% | "
                    f"{100 * row['bmm_share']:.0f}% |"
                )
        lines.append("")
        for fam, v in report["mlp"].items():
            big = max(v["by_batch"], key=lambda r: r["num_envs"] if r.get("device") == "cpu" else -1)
            lines += [
                f"bmm-only per shape, {fam}, B={big['num_envs']} (one inner step):",
                "",
                "| matmul | batch | m x k x n | ms | GFLOP/s | transposed ms | transposed GFLOP/s |",
                "|---|---:|---|---:|---:|---:|---:|",
            ]
            for s in big["bmm_per_shape"]:
                lines.append(
                    f"| {s['what']} | {s['mult']}B | {s['m']}x{s['k']}x{s['n']} | {s['ms']:.2f} | "
                    f"{s['gflops']:.1f} | {s['ms_transposed']:.2f} | {s['gflops_transposed']:.1f} |"
                )
            lines.append("")
        cuda_rows = [(f, r) for f, v in report["mlp"].items() for r in v["by_batch"] if r.get("device") != "cpu"]
        if cuda_rows:
            lines += ["CUDA (achieved GFLOP/s of the useful matmuls, no roofline measured):", ""]
            lines += [f"- {f} B={r['num_envs']}: {r['env_gflops']:.1f} GFLOP/s" for f, r in cuda_rows]
            lines.append("")
    path.write_text("\n".join(lines) + "\n")


def write_profile_markdown(profiles: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    lines = [
        "# Profile of one batched MetaOpt-LR-v0 step (MLP families)",
        "",
        f"torch.profiler, CPU, {meta['torch_threads']} thread(s), commit `{meta['git_commit']}`"
        f"{' (dirty)' if meta['git_dirty'] else ''}, {meta['date']}. Phases are the core's / family's "
        "methods wrapped in `record_function` by the benchmark (inclusive times; `sub:` rows nest inside "
        "`phase:` rows). Profiling overhead inflates small ops.",
        "",
    ]
    for p in profiles:
        lines += [
            f"## {p['family']}, B={p['num_envs']}",
            "",
            f"per step (mean of {p['profiled_steps']}): {p['step_ms_profiled']:.1f} ms profiled "
            f"({p['step_ms_unprofiled']:.1f} ms unprofiled); "
            f"self time in bmm/baddbmm: {p['matmul_self_ms']:.1f} ms "
            f"({100 * p['matmul_self_ms'] / p['step_ms_profiled']:.0f}%)",
            "",
            "| phase | ms (inclusive) | share of step | calls/step |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {r['label']} | {r['ms']:.1f} | {100 * r['share']:.0f}% | {r['calls']:g} |" for r in p["phases"]]
        lines += ["", "| category (aten self time) | ms | share of step |", "|---|---:|---:|"]
        lines += [
            f"| {name} | {ms:.1f} | {100 * ms / p['step_ms_profiled']:.0f}% |"
            for name, ms in p["categories_ms"].items()
        ]
        lines += ["", "| op | self ms | share | calls/step |", "|---|---:|---:|---:|"]
        lines += [
            f"| {r['op']} | {r['self_ms']:.1f} | {100 * r['share']:.0f}% | {r['calls']:g} |" for r in p["top_ops"]
        ]
        lines += ["", "| op | input shapes | self ms | share | calls/step |", "|---|---|---:|---:|---:|"]
        lines += [
            f"| {r['op']} | `{r['shapes']}` | {r['self_ms']:.1f} | {100 * r['share']:.0f}% | {r['calls']:g} |"
            for r in p["top_ops_by_shape"]
        ]
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated task families")
    p.add_argument("--batch-sizes", default="1,64,1024,4096", help="comma-separated num_envs")
    p.add_argument(
        "--sync-max-envs",
        type=int,
        default=1024,
        help="largest B at which SyncVectorEnv is run (its per-env cost is B-independent)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--horizon", type=int, default=100, help="decisions per episode (the env's horizon)")
    p.add_argument("--action", type=float, default=0.0, help="constant action in [-1, 1]")
    p.add_argument("--warmup", type=int, default=2, help="warm-up decisions before timing")
    p.add_argument("--cell-seconds", type=float, default=1.5, help="timed seconds per cell (>= 1 decision)")
    p.add_argument("--windows", type=int, default=3, help="timing windows per cell (best is reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--env-kwargs",
        default="{}",
        help='JSON of extra env arguments for every env, e.g. \'{"inner_optimizer": "adam"}\'',
    )
    p.add_argument("--devices", default="auto", help="'auto' (cpu, + cuda if available), or e.g. 'cpu'")
    p.add_argument("--roofline-sizes", default="1024,1536,2048", help="square torch.mm sizes for the roofline")
    p.add_argument("--roofline-reps", type=int, default=5)
    p.add_argument("--bmm-seconds", type=float, default=0.6, help="time per bmm-only microbenchmark")
    p.add_argument(
        "--profile",
        dest="profile",
        action="store_true",
        default=None,
        help="profile one batched step per MLP family (default: on unless --quick)",
    )
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--profile-batch", type=int, default=1024)
    p.add_argument("--profile-steps", type=int, default=3, help="profiled steps (times are per-step means)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: B in {1, 64}, short cells, no profile; output tag defaults to _quick",
    )
    p.add_argument("--out-dir", default=str(RESULTS_DIR))
    p.add_argument("--tag", default="", help="suffix of the output names: throughput<tag>.{json,md}")
    args = p.parse_args(argv)
    args.env_kwargs_dict = json.loads(args.env_kwargs)
    if not isinstance(args.env_kwargs_dict, dict):
        p.error("--env-kwargs must be a JSON object")
    if args.quick:
        if not args.tag:  # never overwrite the full run's results with a smoke run
            args.tag = "_quick"
        if args.batch_sizes == "1,64,1024,4096":
            args.batch_sizes = "1,64"
        args.sync_max_envs = min(args.sync_max_envs, 64)
        args.cell_seconds = min(args.cell_seconds, 0.3)
        args.windows = min(args.windows, 2)
        args.warmup = min(args.warmup, 1)
        args.roofline_sizes = "512,1024"
        args.roofline_reps = 2
        args.bmm_seconds = 0.1
        args.profile_batch = min(args.profile_batch, 64)
    if args.profile is None:
        args.profile = not args.quick
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="gymnasium")
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d.strip() for d in args.devices.split(",")]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    status = _git("status", "--porcelain", "--untracked-files=no")
    meta: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "git_dirty_files": status.splitlines() if status else [],
        "git_diff_sha1": (hashlib.sha1(diff.encode()).hexdigest() if (diff := _git("diff", "HEAD")) else None),
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_start": _loadavg(),
        "args": vars(args),
    }
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, devices {devices}, "
        f"commit {meta['git_commit']}{' (dirty)' if meta['git_dirty'] else ''}",
        flush=True,
    )

    roofline_sizes = [int(x) for x in args.roofline_sizes.split(",")]
    if any(f in MLP_FAMILIES for f in families):  # measured at the start and the end; the best is the roofline
        roof_start = measure_roofline(roofline_sizes, args.roofline_reps)
        print(f"roofline at start: {roof_start['gflops']:.1f} GFLOP/s", flush=True)

    cells: list[dict[str, Any]] = []
    for device in devices:
        for fam in families:
            sync_by_b: dict[int, dict[str, Any]] = {}
            for b in batch_sizes:
                cell: dict[str, Any] = {"family": fam, "num_envs": b, "device": device}
                try:
                    cell["batched"] = run_batched(fam, b, device, args)
                except Exception as error:  # keep going: report the failure in its cell
                    cell["batched"] = {"error": f"{type(error).__name__}: {error}"}
                if device == "cpu" and fam in MLP_FAMILIES and "family_config" in cell["batched"]:
                    # Right after the env cell, so both see the same machine load.
                    cell["bmm_only"] = bmm_microbench(cell["batched"]["family_config"], b, args.bmm_seconds)
                if device == "cpu":
                    if b <= args.sync_max_envs:
                        try:
                            cell["sync"] = sync_by_b[b] = run_sync(fam, b, args)
                        except Exception as error:
                            cell["sync"] = {"error": f"{type(error).__name__}: {error}"}
                    else:
                        cell["sync_skipped"] = (
                            f"B > --sync-max-envs={args.sync_max_envs} (building and stepping "
                            f"{b} single envs in a Python loop; per-env cost is B-independent)"
                        )
                else:
                    cell["sync_skipped"] = "SyncVectorEnv measured on the CPU only"
                measured = [k for k in sync_by_b if "steps_per_s" in sync_by_b[k]]
                bat = cell["batched"].get("steps_per_s")
                if measured and bat:
                    ref = b if b in measured else max(measured)
                    cell["ratio"] = bat / sync_by_b[ref]["steps_per_s"]
                    cell["ratio_sync_from"] = ref
                cells.append(cell)
                syn = cell.get("sync", {}).get("steps_per_s")
                print(
                    f"[{time.perf_counter() - started:6.0f}s] {device} {fam:9s} B={b:5d} "
                    f"batched {_fmt_rate(bat):>8s}/s  sync {_fmt_rate(syn):>8s}/s  "
                    f"ratio {cell.get('ratio', float('nan')):7.1f}"
                    + (f"  ERROR {cell['batched']['error']}" if "error" in cell["batched"] else ""),
                    flush=True,
                )

    report: dict[str, Any] = {
        "meta": meta,
        "devices": devices,
        "families": families,
        "batch_sizes": batch_sizes,
        "cells": cells,
    }

    mlp_families = [f for f in families if f in MLP_FAMILIES]
    if mlp_families:
        roof_end = measure_roofline(roofline_sizes, args.roofline_reps)
        roof = dict(roof_start if roof_start["gflops"] >= roof_end["gflops"] else roof_end)
        roof["gflops_start"], roof["gflops_end"] = roof_start["gflops"], roof_end["gflops"]
        report["roofline"] = roof
        print(
            f"roofline: {roof['gflops']:.1f} GFLOP/s (start {roof_start['gflops']:.1f}, end {roof_end['gflops']:.1f})",
            flush=True,
        )
        report["mlp"] = {}
        for fam in mlp_families:
            fam_cells = [c for c in cells if c["family"] == fam and "steps_per_s" in c["batched"]]
            if not fam_cells:
                continue
            cfg = fam_cells[0]["batched"]["family_config"]
            flops = flops_per_env_step(cfg)
            entry: dict[str, Any] = {
                "config": cfg,
                "config_text": f"layers {'-'.join(map(str, cfg['layer_sizes']))}, num_train {cfg['num_train']}, "
                f"batch_size {cfg['batch_size']} x2"
                + (f", num_val {cfg['num_val']}" if cfg["observe_validation"] else ""),
                "flops_per_env_step": flops,
                "matmul_shapes": matmul_shapes(cfg),
                "by_batch": [],
            }
            for c in fam_cells:
                b, rate = c["num_envs"], c["batched"]["steps_per_s"]
                row: dict[str, Any] = {"num_envs": b, "device": c["device"], "env_gflops": flops * rate / 1e9}
                if c["device"] == "cpu" and "bmm_only" in c:
                    bmm = c.pop("bmm_only")
                    env_step_ms = 1e3 * b / rate
                    row.update(
                        env_fraction=row["env_gflops"] / roof["gflops"],
                        bmm_gflops=bmm["gflops"],
                        bmm_fraction=bmm["gflops"] / roof["gflops"],
                        bmm_step_ms=bmm["step_ms"],
                        bmm_best_layout_gflops=bmm["best_layout_gflops"],
                        bmm_best_layout_fraction=bmm["best_layout_gflops"] / roof["gflops"],
                        bmm_best_layout_step_ms=bmm["best_layout_step_ms"],
                        env_step_ms=env_step_ms,
                        bmm_share=bmm["step_ms"] / env_step_ms,
                        bmm_per_shape=bmm["per_shape"],
                    )
                    print(
                        f"{fam:9s} B={b:5d} env {row['env_gflops']:6.2f} GFLOP/s "
                        f"({100 * row['env_fraction']:.1f}%), bmm-only {bmm['gflops']:6.2f} GFLOP/s "
                        f"({100 * row['bmm_fraction']:.1f}%; best layout "
                        f"{100 * row['bmm_best_layout_fraction']:.1f}%), "
                        f"bmm share of step {100 * row['bmm_share']:.0f}%",
                        flush=True,
                    )
                entry["by_batch"].append(row)
            report["mlp"][fam] = entry

    # Targets from the issue: reported, not asserted.
    targets: dict[str, Any] = {}
    ratios = [c["ratio"] for c in cells if c["device"] == "cpu" and c["num_envs"] == 1024 and "ratio" in c]
    if ratios:
        worst = min(ratios)
        per = ", ".join(
            f"{c['family']} {c['ratio']:.1f}x"
            for c in cells
            if c["device"] == "cpu" and c["num_envs"] == 1024 and "ratio" in c
        )
        targets["speedup_b1024"] = {
            "text": "B=1024 CPU batched >= 50x SyncVectorEnv (every family)",
            "value": per,
            "min": worst,
            "met": worst >= 50,
        }
    if report.get("mlp"):
        fr = {
            f: r["env_fraction"]
            for f, v in report["mlp"].items()
            for r in v["by_batch"]
            if r.get("device") == "cpu" and r["num_envs"] == 1024
        }
        if fr:
            targets["roofline_b1024"] = {
                "text": "B=1024 MLP families >= 30% of the matmul roofline",
                "value": ", ".join(f"{f} {100 * x:.1f}%" for f, x in fr.items()),
                "min": min(fr.values()),
                "met": min(fr.values()) >= 0.30,
            }
    report["targets"] = targets

    if args.profile:
        profiles = []
        for fam in mlp_families:
            try:
                profiles.append(profile_step(fam, args.profile_batch, args))
                print(f"profiled {fam} B={args.profile_batch}", flush=True)
            except Exception as error:
                profiles.append({"family": fam, "error": f"{type(error).__name__}: {error}"})
        report["profiles"] = profiles

    meta["loadavg_end"] = _loadavg()
    meta["wall_s"] = time.perf_counter() - started
    json_path, md_path = out_dir / f"throughput{args.tag}.json", out_dir / f"throughput{args.tag}.md"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    write_markdown(report, md_path)
    if args.profile and report.get("profiles"):
        ok = [p for p in report["profiles"] if "error" not in p]
        if ok:
            write_profile_markdown(ok, out_dir / f"throughput{args.tag}_profile.md", meta)
    print(f"wrote {json_path} and {md_path} in {meta['wall_s']:.0f} s", flush=True)
    return report


if __name__ == "__main__":
    main()
