"""The issue-13 before/after table: the same benchmark scripts on the code before the speed work and now.

``before_58211f2/`` was made from a worktree of commit 58211f2 (the last main commit before the speed work)
with the after commit's two scripts copied into it, so that they import that commit's code (their one
import it lacks, ``agents.evaluation.report.cpu_model``, inlined as a read of ``/proc/cpuinfo``)::

    git worktree add /tmp/before 58211f2
    cp benchmarks/env_throughput.py /tmp/before/benchmarks/env_throughput_now.py
    cp benchmarks/recurrent_ppo_speed.py /tmp/before/benchmarks/recurrent_ppo_speed_now.py
    cd /tmp/before && OMP_NUM_THREADS=1 python benchmarks/env_throughput_now.py --out /tmp/bench_before/env_throughput
    OMP_NUM_THREADS=1 python benchmarks/recurrent_ppo_speed_now.py --rounds 12 --out-dir /tmp/bench_before

``../env_throughput.json`` and ``../recurrent_ppo_speed.json`` are the same scripts on the after commit
(``python benchmarks/env_throughput.py --readme README.md``, ``python benchmarks/recurrent_ppo_speed.py
--rounds 12 --before ...``), on the same machine within the hour. Then::

    python benchmarks/results/speed_before_after/make_table.py   # writes README.md beside this file
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def main() -> None:
    before, after = load(HERE / "before_58211f2" / "env_throughput.json"), load(RESULTS / "env_throughput.json")
    lb, la = load(HERE / "before_58211f2" / "recurrent_ppo_speed.json"), load(RESULTS / "recurrent_ppo_speed.json")
    fb, fa = before["facts"], after["facts"]
    lines = [
        "# Speed before / after (issue 13), one machine",
        "",
        f"Before: commit `{fb['commit']}`, {fb['date_utc']}, matmul peak {fb['matmul_peak_gflops']:.0f} GFLOP/s, "
        f"load {fb['loadavg_start'][0]:.2f}-{fb['loadavg_end'][0]:.2f}. After: commit `{fa['commit']}`, {fa['date_utc']}, "
        f"peak {fa['matmul_peak_gflops']:.0f} GFLOP/s, load {fa['loadavg_start'][0]:.2f}-{fa['loadavg_end'][0]:.2f}. "
        f"CPU `{fa['cpu_model']}`, {fa['threads']} torch thread. Both runs are the scripts of the after commit "
        "(see `make_table.py`); ratios to SyncVectorEnv are within each run, before/after columns across the two. "
        "This machine's speed drifts over hours (the same commit's LR quadratic step at B = 64 took 445 us at 13:55 "
        "and 727 us at 15:42 on 2026-12-02), so read the ratios measured within a run (to SyncVectorEnv, reset / "
        "step, learner / stock) before the absolute before/after columns.",
        "",
        "| env | family | B | batched steps/s before | after | after / before | ratio to SyncVectorEnv before | after |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    index = {(r["env"], r["family"], r["num_envs"]): r for r in before["rows"] if r.get("status") == "measured"}
    for r in after["rows"]:
        key = (r["env"], r["family"], r["num_envs"])
        if r.get("status") != "measured" or key not in index or r["num_envs"] == 1:
            continue
        o = index[key]
        lines.append(
            f"| {key[0].removeprefix('MetaOpt-').removesuffix('-v0')} | {key[1]} | {key[2]} | "
            f"{o['batched_steps_per_s']:,.0f} | {r['batched_steps_per_s']:,.0f} | "
            f"{r['batched_steps_per_s'] / o['batched_steps_per_s']:.2f}x | {o['ratio']:.1f}x | {r['ratio']:.1f}x |"
        )
    lines += [
        "",
        "Resets of 3 rows at B = 64 against a step. Before, every reset was computed on demand, so any 3 rows cost "
        "the same (measured on rows 0-2); after, rows reset in turn (as out-of-step autoresets reset them) start "
        "from states made ahead, and the same 3 rows every call are the case with nothing to batch.",
        "",
        "| LR family | step ms before | after | reset 3 rows ms before (/ step) | after, rows in turn (/ step) "
        "| after, same task in turn (/ step) | after, the same 3 rows every call (/ step) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    resets = {r["family"]: r for r in before["reset_cost"]}
    for r in after["reset_cost"]:
        o = resets[r["family"]]
        lines.append(
            f"| {r['family']} | {o['step_ms']:.2f} | {r['step_ms']:.2f} | "
            f"{o['reset_3_rows_ms']:.2f} ({o['reset_over_step']:.2f}) | "
            f"{r['in_turn_3_rows_ms']:.2f} ({r['in_turn_over_step']:.2f}) | "
            f"{r['same_task_3_rows_ms']:.2f} ({r['same_task_over_step']:.2f}) | "
            f"{r['reset_3_rows_ms']:.2f} ({r['reset_over_step']:.2f}) |"
        )
    vb, va = before["vmap"], after["vmap"]
    lines += [
        "",
        f"sklearn core vs `torch.func.vmap` at B = {va['num_envs']}: before {vb['core_speedup']:.2f}x "
        f"({vb['core_ms']:.1f} ms vs {vb['vmap_ms']:.1f} ms), after {va['core_speedup']:.2f}x "
        f"({va['core_ms']:.1f} ms vs {va['vmap_ms']:.1f} ms).",
        "",
        "| RL² learner, default `metaopt-train` config | s / round before | after | after / before | vs stock before | after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for algo in ("stock", "fast", "torch-only"):
        o, r = lb["results"][algo], la["results"][algo]
        lines.append(
            f"| {algo} | {o['median_round_s']:.3f} | {r['median_round_s']:.3f} | "
            f"{o['median_round_s'] / r['median_round_s']:.2f}x | "
            f"{lb['results']['stock']['median_round_s'] / o['median_round_s']:.2f}x | "
            f"{la['results']['stock']['median_round_s'] / r['median_round_s']:.2f}x |"
        )
    sb, sa = lb["fast_time_split"], la["fast_time_split"]
    lines += [
        "",
        f"Fast path's env time per round {sb['env']:.3f} s -> {sa['env']:.3f} s, of which resets of some rows "
        f"{sb['partial_resets']:.3f} s -> {sa['partial_resets']:.3f} s ({sb['partial_reset_calls']:.0f} / "
        f"{sa['partial_reset_calls']:.0f} calls per round; no call reset every row).",
    ]
    (HERE / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
