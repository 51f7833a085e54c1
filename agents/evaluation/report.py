"""What ``metaopt-bench`` and ``metaopt-train`` write: one section per task family, results files, the commit.

:func:`benchmark_family` builds the agents of a list of specs on one task family, evaluates
them through the env's :class:`~agents.evaluation.suites.Suite` and plots;
:func:`benchmark` runs it over several families and writes the report (``metaopt-bench``);
:func:`compare_with_baselines` does the same for a freshly trained model against every
baseline; :func:`write_report` writes ``results.json`` and ``results.md``. The CLIs
(:mod:`agents.cli`) only parse arguments and print.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.evaluation.rollout import SampledActions
from agents.evaluation.specs import parse_agent_spec
from agents.evaluation.suites import Suite
from agents.rl2.runs import (
    AGENT_OPTIONS,
    TASK_SELECTION,
    TrainedModel,
    read_spec,
    setting_disagreements,
    shared_setting,
)

SAMPLED = " (sampled actions)"


def git_commit() -> str:
    """HEAD's commit of this repository (the results files record it), or ``"unknown"``."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo (else the platform's processor string), for results files."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def provenance(torch_threads: int | None = None, command: Sequence[str] | None = None) -> dict[str, Any]:
    """Where a result was made: the commit, the command line, the CPU model, torch's version and threads.

    Budgets are steps, so a result is bit-identical on one machine; across CPU models (other BLAS
    kernels) trained agents agree within their CIs only, which is why results files record the CPU."""
    import shlex
    import sys

    import torch

    if command is None:
        command = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
    return {
        "commit": git_commit(),
        "command": " ".join(shlex.quote(str(arg)) for arg in command),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": int(torch_threads if torch_threads is not None else torch.get_num_threads()),
    }


def made_by(made: Mapping[str, Any]) -> str:
    """The results files' sentence saying where a result was made, from :func:`provenance`."""
    return (
        f"Made by `{made['command']}` at commit `{made['commit']}` on {made['cpu_model']}, torch {made['torch']} "
        f"with {made['torch_threads']} thread(s)"
    )


def write_benchmark(out: Path, lines: Sequence[str], payload: Mapping[str, Any]) -> None:
    """A benchmark script's ``<out>.json`` (``payload`` with :func:`provenance`) and ``<out>.md`` (``lines``
    and a line saying where it was made); prints the markdown."""
    made = provenance()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**made, **payload}, indent=1))
    out.with_suffix(".md").write_text("\n".join([*lines, "", made_by(made) + "."]) + "\n")
    print("\n".join(lines))


def progress(message: str) -> None:
    """A stage of a long evaluation, printed (and logged: ``metaopt-train`` writes it to ``train.log``)."""
    print(message, flush=True)
    logging.getLogger("agents.rl2.training").info(message)


def write_report(report: dict[str, Any], markdown: list[str], out_dir: Path, started: float) -> dict[str, Any]:
    """``results.json`` and ``results.md`` in ``out_dir``, with the wall time since ``started``."""
    report["wall_seconds"] = time.perf_counter() - started
    (out_dir / "results.json").write_text(json.dumps(report, indent=1))
    (out_dir / "results.md").write_text("\n".join(markdown))
    return report


def header(
    suite: Suite,
    commit: str,
    num_tasks: int,
    seeds: Sequence[int],
    env_kwargs: Mapping[str, Any],
    tune_tasks: int,
    made: Mapping[str, Any] | None = None,
) -> list[str]:
    """The first lines of ``results.md``: the env, the commit, the budget and what the table reports;
    with ``made`` (:func:`provenance`), the command, CPU model and torch threads too."""
    summary = (
        f"commit `{commit}`; {num_tasks} test tasks x seeds {list(seeds)} per family; "
        f"env kwargs `{json.dumps(dict(env_kwargs))}`; baselines with hyperparameters tuned on the train split "
        f"({tune_tasks} tasks per grid point). {suite.description}"
    )
    lines = [f"# metaopt-bench: {suite.env_id}", "", summary, ""]
    if made:
        lines[3:3] = ["", made_by(made) + "."]
    return lines


def benchmark_family(
    suite: Suite,
    family: str,
    specs: Sequence[str],
    env_kwargs: Mapping[str, Any],
    num_tasks: int,
    seeds: Sequence[int],
    tune_tasks: int,
    episodes_per_trial: int | None,
    out_dir: Path,
    model_env_kwargs: Mapping[str, Any] | None = None,
    sample_models: bool = False,
    trust_model: bool = False,
) -> tuple[dict[str, Any], str]:
    """Every agent of ``specs`` on task family ``family``: the report entry and the markdown table.

    Saved models also get ``model_env_kwargs`` (env arguments that do not change the tasks, such as
    the ``action_mode`` they were trained in) and, with ``sample_models``, a second row with sampled actions;
    ``trust_model`` loads them with SB3's own loader, which unpickles the files (only for models you made).
    """
    env_kwargs = {**env_kwargs, suite.family_argument: family}
    progress(f"{family}: building the agents (tuning baselines on {tune_tasks} training tasks per grid point)")
    agents, tuning = suite.build_agents(specs, env_kwargs, tune_tasks, trust_model)
    models = [spec for spec in specs if spec != "baselines" and parse_agent_spec(spec).kind == "model"]
    for name in models:  # a model with its run spec: explicit model kwargs and trial length override it (printed)
        if isinstance(agents[name], TrainedModel):
            shared = {k: v for k, v in env_kwargs.items() if k not in (*TASK_SELECTION, *AGENT_OPTIONS)}
            agents[name] = agents[name].with_overrides({**shared, **(model_env_kwargs or {})}, episodes_per_trial, name)
    if sample_models:
        agents.update({f"{name}{SAMPLED}": SampledActions(agents[name]) for name in models})
        models += [f"{name}{SAMPLED}" for name in models]
    plot_path = out_dir / f"{suite.plot_prefix}_{family}.png"
    progress(f"{family}: evaluating {len(agents)} agents on {num_tasks} test tasks x seeds {list(seeds)}")
    result = suite.run(
        agents,
        env_kwargs,
        num_tasks,
        seeds,
        episodes_per_trial,
        {name: dict(model_env_kwargs or {}) for name in models},
        str(plot_path),
        f"({family}, test split)",
    )
    return {"summaries": result.summaries, "tuning": tuning, "plot": plot_path.name}, result.table


def benchmark(
    suite: Suite,
    families: Sequence[str],
    specs: Sequence[str],
    env_kwargs: Mapping[str, Any],
    num_tasks: int,
    seeds: Sequence[int],
    tune_tasks: int,
    episodes_per_trial: int | None,
    out_dir: Path,
    model_env_kwargs: Mapping[str, Any] | None = None,
    sample_models: bool = False,
    torch_threads: int = 1,
    on_family: Callable[[str, str], None] | None = None,
    trust_model: bool = False,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`benchmark_family` for each of ``families``; writes ``results.json``, ``results.md`` and the
    plots to ``out_dir`` (created) and returns the report. ``on_family(family, table)`` is called as each
    family finishes (``metaopt-bench`` prints the table). Sets torch's thread count to ``torch_threads``.
    ``trust_model``: saved models load with SB3's own loader (:func:`benchmark_family`). ``command``: the
    command line the results files record (default: this process's).

    Models saved by ``metaopt-train`` run on the env they were trained on; the problem kwargs
    (:func:`agents.rl2.runs.problem_kwargs`) all of them share, and their ``episodes_per_trial`` if they
    share it, are the defaults of the whole comparison (``env_kwargs`` and ``episodes_per_trial`` override
    them), so the baselines run the same problems as in the trainer's evaluation; the settings they do not
    share are printed (each model keeps its own; the baselines get the env's defaults or ``env_kwargs``)."""
    import torch

    recorded = {s: read_spec(parse_agent_spec(s).path) for s in specs if s != "baselines" and _is_model_file(s)}
    run_specs = {name: spec for name, spec in recorded.items() if spec is not None}
    run_kwargs, run_trial = shared_setting(list(run_specs.values()), suite.env_id, families)
    differ = [k for k in setting_disagreements(list(run_specs.values()), suite.env_id, families) if k not in env_kwargs]
    if differ:
        print(f"the models' run specs differ in {differ}: the baselines use the env's defaults there", flush=True)
    if run_kwargs or run_trial is not None:
        env_kwargs = {**run_kwargs, **env_kwargs}
        episodes_per_trial = run_trial if episodes_per_trial is None else episodes_per_trial
        print(f"from the run spec: env kwargs {env_kwargs}, episodes_per_trial {episodes_per_trial}", flush=True)

    torch.set_num_threads(torch_threads)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    made = provenance(torch_threads, command)
    report: dict[str, Any] = {
        "commit": made["commit"],
        "command": made["command"],
        "cpu_model": made["cpu_model"],
        "torch": made["torch"],
        "env_id": suite.env_id,
        "env_kwargs": dict(env_kwargs),
        "seeds": list(seeds),
        "num_tasks": num_tasks,
        "episodes_per_trial": episodes_per_trial,
        "torch_threads": torch_threads,
        "families": {},
    }
    if run_specs:
        report["run_specs"] = run_specs  # what each saved model was trained on
    markdown = header(suite, report["commit"], num_tasks, seeds, env_kwargs, tune_tasks, made)
    for family in families:
        entry, table = benchmark_family(
            suite,
            family,
            specs,
            env_kwargs,
            num_tasks,
            seeds,
            tune_tasks,
            episodes_per_trial,
            out_dir,
            model_env_kwargs,
            sample_models,
            trust_model,
        )
        report["families"][family] = entry
        markdown += [f"## {family}", "", table, "", f"![{family}]({entry['plot']})", ""]
        if on_family is not None:
            on_family(family, table)
    return write_report(report, markdown, out_dir, started)


def _is_model_file(spec: str) -> bool:
    parsed = parse_agent_spec(spec)
    return parsed.kind == "model" and (Path(parsed.path).is_file() or Path(parsed.path).is_dir())


def compare_with_baselines(
    suite: Suite,
    model: Any,
    name: str,
    model_env_kwargs: Mapping[str, Any],
    num_tasks: int,
    seeds: Sequence[int],
    tune_tasks: int,
    episodes_per_trial: int | None,
    out_dir: Path,
) -> tuple[dict[str, Any], str]:
    """A trained model (named ``name``, made with ``model_env_kwargs``) and every tuned baseline on the
    same held-out test tasks; writes ``results.md``, ``results.json`` and ``curves.png`` to ``out_dir``.

    The baselines run in their own action mode; the tasks are the same in any mode. Where the suite
    says so (:attr:`Suite.sample_trained_models`) the model is also scored with sampled actions.
    """
    env_kwargs = {k: v for k, v in model_env_kwargs.items() if k != "action_mode"}
    progress(f"tuning the baselines on {tune_tasks} training tasks per grid point")
    baselines, tuning = suite.build_agents(["baselines"], env_kwargs, tune_tasks)
    agents: dict[str, Any] = {name: model}
    if suite.sample_trained_models:
        agents[name.removesuffix(")") + ", sampled actions)"] = SampledActions(model)
    per_agent = {agent: dict(model_env_kwargs) for agent in agents}
    agents.update(baselines)
    progress(f"evaluating {len(agents)} agents on {num_tasks} test tasks x seeds {list(seeds)}")
    result = suite.run(
        agents, env_kwargs, num_tasks, seeds, episodes_per_trial, per_agent, str(out_dir / "curves.png"), "(test split)"
    )
    made = provenance()
    (out_dir / "results.md").write_text(
        f"{made_by(made)}; {num_tasks} test tasks x seeds {list(seeds)}.\n\n{result.table}\n"
    )
    report = {**made, "seeds": list(seeds), "num_tasks": num_tasks, "summaries": result.summaries, "tuning": tuning}
    (out_dir / "results.json").write_text(json.dumps(report, indent=1))
    return report, result.table


__all__ = [
    "benchmark",
    "benchmark_family",
    "compare_with_baselines",
    "cpu_model",
    "git_commit",
    "header",
    "made_by",
    "provenance",
    "write_benchmark",
    "write_report",
]
