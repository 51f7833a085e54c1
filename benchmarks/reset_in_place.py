"""Partial resets of the LR core written in place against the old out-of-place write, in CPU time.

For each LR family: ``core.reset_rows`` of 3 rows with new tasks against one ``core.step`` at
``--batch`` (64), and at ``--large-batch`` (1024, sinusoid) one decision with the autoreset of the
rows that end (1 in 100 rows per decision, as episodes of 100 decisions staggered across the batch).
The two resets alternate in one process (the old one, commit c5de1d4's out-of-place write with
a tensor inner step, kept here as a reference, not in the library) and are timed with ``time.process_time`` (CPU time: a loaded machine inflates wall time,
not much the CPU time of a one-thread process).

    OMP_NUM_THREADS=1 python benchmarks/reset_in_place.py --rounds 20
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import metaopt_envs.lr.core as lr_core
from metaopt_envs import make_core
from metaopt_envs.core.family import SPLIT_IDS, put, take
from metaopt_envs.lr import dynamics

FAMILIES = ("quadratic", "logistic", "sinusoid", "sklearn", "mixture")


def put_rows_out_of_place(state, index, fresh, others=()):
    """The write before the in-place reset: every field rebuilt with ``index_put`` (a copy)."""
    return dynamics.map_tensors(lambda old, new: old.index_put((index,), new), state, fresh)


def start_before(family, optimizer, params, tasks, run_key, log_lr, observe_validation=False, chunk_size=None):
    """``dynamics.start`` before the int fold: inner step 0 as a tensor of zeros (one hash more)."""
    inner_step = torch.zeros_like(run_key)
    m = dynamics.measure(family, params, tasks, run_key, inner_step, observe_validation, chunk_size)
    zeros = torch.zeros_like(m.loss)
    return dynamics.LRState(
        params, optimizer.init(params), inner_step, log_lr, m.loss, m.loss, m.loss, m.val_loss, m.val_loss,
        m.grad, m.grad_norm, zeros, m.grad_norm, m.noise_ratio, zeros, zeros, zeros,
        torch.zeros_like(m.loss, dtype=torch.bool),
    )  # fmt: skip


@torch.no_grad()
def reset_rows_before(self, rows, keys=None, same_task=False):
    """``LRCore.reset_rows`` before the in-place write (the code of commit c5de1d4)."""
    index = rows.nonzero().squeeze(-1)
    if index.numel() == 0:
        return
    if self.advance_keys(index, keys, same_task, SPLIT_IDS[self.split]):
        put(self.tasks, index, self.family.sample(self.task_key[index], self.split))
    task_key, inner_episode = self.task_key[index], self.inner_episode[index]
    init_key, run_key = dynamics.init_and_run_keys(task_key, inner_episode)
    self.run_key[index] = run_key
    every = index.numel() == self.num_envs
    tasks = self.tasks if every else take(self.tasks, index)
    if self.initial_params is not None:
        params = self.initial_params.expand(index.numel(), -1).clone()
    else:
        params = self.family.init_params(tasks, init_key)
    log_lr = torch.full((index.numel(),), self.initial_log_lr, device=self.device)
    fresh = start_before(
        self.family, self.optimizer, params, tasks, run_key, log_lr, self.observe_validation, self.chunk_size
    )
    self.state = fresh if every else put_rows_out_of_place(self.state, index, fresh)


AFTER = lr_core.LRCore.reset_rows
RESETS = {"after": AFTER, "before": reset_rows_before}


def cpu_seconds(fn: Callable[[], object], reps: int) -> float:
    start = time.process_time()
    for _ in range(reps):
        fn()
    return time.process_time() - start


def timed(fns: dict[str, Callable[[], object]], rounds: int, reps: int) -> dict[str, float]:
    """CPU seconds per call of each function, summed over ``rounds`` round-robin rounds of ``reps`` calls."""
    total = dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            total[name] += cpu_seconds(fn, reps)
    return {name: seconds / (rounds * reps) for name, seconds in total.items()}


def with_reset(reset: Callable, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        lr_core.LRCore.reset_rows = reset  # type: ignore[method-assign]
        try:
            return fn()
        finally:
            lr_core.LRCore.reset_rows = AFTER  # type: ignore[method-assign]

    return run


def reset_cost(family: str, num_envs: int, rounds: int, reps: int) -> dict[str, float]:
    core = make_core("MetaOpt-LR-v0", num_envs=num_envs, task_family=family, horizon=10**6)
    actions = torch.zeros(num_envs, 1)
    rows = torch.zeros(num_envs, dtype=torch.bool)
    rows[:3] = True
    fns = {"step": lambda: core.step(actions)}
    fns.update({name: with_reset(reset, lambda: core.reset_rows(rows)) for name, reset in RESETS.items()})
    times = timed(fns, rounds, reps)
    return {name: times[name] / times["step"] for name in RESETS} | {"step_ms": 1e3 * times["step"]}


def autoreset_step(family: str, num_envs: int, rounds: int, reps: int, period: int = 100) -> dict[str, float]:
    core = make_core("MetaOpt-LR-v0", num_envs=num_envs, task_family=family, horizon=10**6)
    actions = torch.zeros(num_envs, 1)
    phase = torch.arange(num_envs) % period
    clock = [0]

    def decision() -> None:
        core.step(actions)
        clock[0] += 1
        core.reset_rows(phase == clock[0] % period)

    times = timed({name: with_reset(reset, decision) for name, reset in RESETS.items()}, rounds, reps)
    return {name: 1e3 * seconds for name, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--large-batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=20, help="round-robin rounds per measurement")
    parser.add_argument("--reps", type=int, default=10, help="calls per function per round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| LR family | B | step ms | reset 3 rows / step, before | after |")
    print("|---|---:|---:|---:|---:|")
    for family in args.families.split(","):
        r = reset_cost(family, args.batch, args.rounds, args.reps)
        print(
            f"| {family} | {args.batch} | {r['step_ms']:.3f} | {r['before']:.3f} | {r['after']:.3f} |",
            flush=True,
        )
    if args.large_batch:
        r = autoreset_step("sinusoid", args.large_batch, args.rounds, max(1, args.reps // 5))
        print(
            f"\nsinusoid B={args.large_batch}, one decision + autoreset of 1% of rows: before "
            f"{r['before']:.2f} ms, after {r['after']:.2f} ms, ratio {r['after'] / r['before']:.3f}"
        )


if __name__ == "__main__":
    main()
