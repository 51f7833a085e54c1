"""The run lifecycle of metaopt-train: a run directory belongs to one configuration, a resume
continues exactly (model, task stream, RNGs, TensorBoard), checkpoints are atomic and a corrupt
one falls back to the previous one, and bad budgets are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from agents.rl2.checkpoints import checkpoints_newest_first, load_state, state_path
from agents.rl2.training import CONFIG_DIR, train

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "budget=smoke",
    "env.num_envs=8",
    "env.kwargs.horizon=10",
    "agent.hyperparameters.n_steps=20",  # one trial of 2 x 10 decisions: a rollout is 160 steps
    "agent.hyperparameters.batch_size=80",
    "agent.hyperparameters.n_epochs=1",
    "budget.checkpoint_every=160",
]


def _config(out_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*SMALL, "evaluate=false", f"out_dir={out_dir}", *overrides])


def _parameters(path: Path) -> list[torch.Tensor]:
    from agents.rl2.fast_recurrent import FastRecurrentPPO

    return list(FastRecurrentPPO.load(path, device="cpu").policy.state_dict().values())


def _final_env_counters(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_state(checkpoints_newest_first(out_dir / "checkpoints")[0])["env"]


def _tensorboard_steps(run: Path, tag: str = "time/fps") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run), purge_orphaned_data=True)
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def test_rerun_with_another_configuration_is_refused(tmp_path):
    train(_config(tmp_path, "budget.total_timesteps=160"))
    stored = (tmp_path / "config.yaml").read_text()
    for change in ("agent.hyperparameters.learning_rate=0.05", "seed=1", "budget.total_timesteps=80"):
        with pytest.raises(ValueError, match=r"another configuration .*overwrite=true") as refused:
            train(_config(tmp_path, "budget.total_timesteps=160", change))
        assert change.split("=")[0] in str(refused.value) and "\n" not in str(refused.value)
    assert (tmp_path / "config.yaml").read_text() == stored  # nothing rewritten

    # Evaluation settings are not the training configuration; overwrite=true starts over.
    assert train(_config(tmp_path, "budget.total_timesteps=160", "eval_num_tasks=3"))["resumed_from"]
    fresh = train(_config(tmp_path, "budget.total_timesteps=160", "seed=1", "overwrite=true"))
    assert fresh["resumed_from"] is None and "seed: 1" in (tmp_path / "config.yaml").read_text()


def test_same_configuration_resumes_and_trains_nothing_more_when_done(tmp_path, capsys):
    cfg = _config(tmp_path, "budget.total_timesteps=320")
    train(cfg)
    before = (tmp_path / "checkpoints" / "model_320_steps.zip").stat().st_mtime_ns
    again = train(cfg)
    assert again["num_timesteps"] == 320 and again["resumed_from"].endswith("model_320_steps.zip")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.zip")) == [
        "model_160_steps.zip",
        "model_320_steps.zip",
    ]
    assert _tensorboard_steps(tmp_path / "tb" / "run_1") == [160, 320]
    assert before <= (tmp_path / "checkpoints" / "model_320_steps.zip").stat().st_mtime_ns
    # A larger budget extends the same run.
    longer = train(_config(tmp_path, "budget.total_timesteps=480"))
    assert longer["num_timesteps"] == 480 and "extending the run" in capsys.readouterr().out


def test_resume_in_process_is_exact(tmp_path):
    """Resuming from a mid-run checkpoint gives bit for bit the uninterrupted run's model and task stream."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(_config(whole, "budget.total_timesteps=800"))
    train(_config(cut, "budget.total_timesteps=800"))
    for path in (cut / "checkpoints").iterdir():  # as if killed just after the 320-step checkpoint
        if not path.name.startswith(("model_160_", "model_320_")):
            path.unlink()
    resumed = train(_config(cut, "budget.total_timesteps=800"))
    assert resumed["resumed_from"].endswith("model_320_steps.zip") and resumed["num_timesteps"] == 800
    from agents.rl2.fast_recurrent import FastRecurrentPPO

    for path in checkpoints_newest_first(cut / "checkpoints"):  # every counted step was trained on
        model = FastRecurrentPPO.load(path, device="cpu")
        assert model._n_updates == model.num_timesteps // 160, path.name  # one epoch per 160-step rollout
    for name, value in _final_env_counters(whole).items():
        assert torch.equal(value, _final_env_counters(cut)[name]), name
    assert all(torch.equal(a, b) for a, b in zip(_parameters(whole / "model.zip"), _parameters(cut / "model.zip")))


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path):
    cfg = _config(tmp_path, "budget.total_timesteps=480")
    train(cfg)
    latest = tmp_path / "checkpoints" / "model_480_steps.zip"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated
    state_path(tmp_path / "checkpoints" / "model_320_steps.zip").write_bytes(b"not a state")
    with pytest.warns(UserWarning) as warned:
        resumed = train(cfg)
    messages = [str(w.message) for w in warned]
    assert any("model_480_steps.zip" in m for m in messages) and any("model_320_steps.state.pt" in m for m in messages)
    assert resumed["resumed_from"].endswith("model_160_steps.zip") and resumed["num_timesteps"] == 480
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # atomic writes leave no temporaries

    # With no complete checkpoint left (here: an older version's, without a state file) it refuses.
    for path in (tmp_path / "checkpoints").glob("*.state.pt"):
        path.unlink()
    with (
        pytest.warns(UserWarning, match="has no state file"),
        pytest.raises(ValueError, match="no complete checkpoint"),
    ):
        train(cfg)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("budget.total_timesteps=0", r"budget\.total_timesteps must be a positive integer .* got 0"),
        ("budget.checkpoint_every=-5", r"budget\.checkpoint_every must be a positive integer .* got -5"),
        ("budget.checkpoint_every=10", r"budget\.checkpoint_every must be at least one rollout \(160 steps"),
        ("+agent.n_epochs=8", r"agent\.n_epochs is not a key of agent.*agent\.hyperparameters"),
        ("+budget.steps=8", r"budget\.steps is not a key of budget"),
    ],
)
def test_bad_budgets_and_unknown_keys_are_refused(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        train(_config(tmp_path, override))
    assert not (tmp_path / "config.yaml").exists()


def test_rounding_to_whole_rollouts_is_printed(tmp_path, capsys):
    assert train(_config(tmp_path, "budget.total_timesteps=200"))["num_timesteps"] == 320
    assert "budget.total_timesteps=200 is trained as 320 steps: whole rollouts of 160" in capsys.readouterr().out


BUDGET = ["budget.total_timesteps=4800", "budget.checkpoint_every=320"]
EVALUATION = ["evaluate=true", "eval_num_tasks=8", "eval_seeds=[0]", "tune_tasks=4"]


def _command(out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agents.cli.train", *SMALL, *BUDGET, *EVALUATION, f"out_dir={out_dir}", *extra]


def _environment() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def test_killed_run_resumes_where_it_stopped(tmp_path):
    """SIGKILL a metaopt-train run past its first checkpoint, rerun the same command: it trains
    the budget exactly, redoes at most one checkpoint interval, continues the task stream (the
    env's counters end where an uninterrupted run's do) and evaluates as the uninterrupted run."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(
        _command(killed, "evaluate=false"), cwd=tmp_path, env=_environment(), stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not list((killed / "checkpoints").glob("model_*_steps.zip")) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.01)
    time.sleep(0.3)  # into the next checkpoint interval
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = checkpoints_newest_first(killed / "checkpoints")[0]
    at = load_state(checkpoint)["num_timesteps"]
    assert 0 < at < 4800, f"not killed mid-run (latest checkpoint at {at} steps)"
    logged = max(_tensorboard_steps(killed / "tb" / "run_1"))
    lost = logged - at  # logged (collected) by the killed run past its last checkpoint: redone
    print(f"killed at >= {logged} steps, resumed from {at}: {lost} steps redone")
    assert 0 <= lost <= 320

    resumed = subprocess.run(_command(killed), cwd=tmp_path, env=_environment(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoint} at {at} steps" in resumed.stdout
    assert "model: " in resumed.stdout and "(4800 steps)" in resumed.stdout
    train(_config(whole, *BUDGET, *EVALUATION))  # the same configuration, uninterrupted (in this process)

    # The task stream continued: the counters end where the uninterrupted run's do (no task replayed).
    for name, value in _final_env_counters(whole).items():
        assert torch.equal(value, _final_env_counters(killed)[name]), name
    # One TensorBoard run, every step once.
    steps = _tensorboard_steps(killed / "tb" / "run_1")
    assert steps == list(range(160, 4801, 160)) and [p.name for p in (killed / "tb").iterdir()] == ["run_1"]
    # The same evaluation as the uninterrupted run, within its confidence interval.
    summaries = {
        run: json.loads((run / "results.json").read_text())["summaries"]["RL² (fast_recurrent_ppo)"]
        for run in (killed, whole)
    }
    low, high = summaries[whole]["return_ci"]
    print("RL² return_mean resumed", summaries[killed]["return_mean"], "uninterrupted", summaries[whole]["return_mean"])
    assert low <= summaries[killed]["return_mean"] <= high


def test_rows_caught_mid_episode_move_on_to_their_next_task(tmp_path):
    """A rollout of 15 steps ends mid-trial (20 steps): those rows' state is not in the checkpoint,
    so on resume they start their next task, never one they have seen; the rest restart exactly."""
    from agents.rl2.checkpoints import restore_env
    from agents.rl2.fast_recurrent import FastRecurrentPPO
    from agents.rl2.training import make_env

    cfg = _config(
        tmp_path, "agent.hyperparameters.n_steps=15", "budget.total_timesteps=120", "budget.checkpoint_every=120"
    )
    train(cfg)
    checkpoint = tmp_path / "checkpoints" / "model_120_steps.zip"
    saved = load_state(checkpoint)["env"]
    model = FastRecurrentPPO.load(checkpoint, env=make_env(cfg), device="cpu")
    mid = ~saved["episode_starts"]
    assert restore_env(model, load_state(checkpoint)) == int(mid.sum()) > 0
    core = model.get_env().unwrapped.core
    family = core.unwrapped
    assert torch.equal(family.episode_index, saved["episode_index"] + mid.long())
    assert torch.equal(family.task_key[~mid], saved["task_key"][~mid])
    assert not (family.task_key[mid] == saved["task_key"][mid]).any()
    assert (family.inner_episode == 0).all() and (core.episodes_done == 0).all()
    assert model._last_episode_starts.all() and model._last_obs.shape == (8, core.single_observation_space.shape[0])


def test_a_checkpoint_carries_the_run_spec_and_benchmarks_like_the_model(tmp_path, capsys):
    """A mid-run checkpoint evaluates on the trials it was trained with; a copy without its spec is refused
    in one line before any tuning, naming the flags it needs."""
    import zipfile

    from agents.cli import bench
    from agents.evaluation.specs import load_model
    from agents.rl2.runs import SPEC_ENTRY

    train(_config(tmp_path / "run", "budget.total_timesteps=320"))
    checkpoint = tmp_path / "run" / "checkpoints" / "model_160_steps.zip"
    loaded = load_model(str(checkpoint))
    assert loaded.episodes_per_trial == 2 and loaded.spec["budget"]["num_timesteps"] == 160
    assert loaded.spec["env"]["kwargs"]["horizon"] == 10
    args = ["--families", "quadratic", "--num-tasks", "2", "--seeds", "0", "--out-dir", str(tmp_path / "bench")]
    report = bench.main(["--agents", str(checkpoint), *args])
    assert report["families"]["quadratic"]["summaries"][str(checkpoint)]["num_runs"] == 2

    bare = tmp_path / "bare.zip"  # the same weights without the spec entry (as a plain SB3 save has)
    with zipfile.ZipFile(checkpoint) as source, zipfile.ZipFile(bare, "w") as target:
        for item in source.infolist():
            if item.filename != SPEC_ENTRY:
                target.writestr(item, source.read(item.filename))
    with pytest.raises(SystemExit) as exited:
        bench.main(["--agents", str(bare), *args])
    assert exited.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the model observes shape (11,), but MetaOpt-LR-v0 with episodes_per_trial=None gives (8,)" in message
    assert "--episodes-per-trial" in message
