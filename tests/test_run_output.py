"""A run a person can follow: labels from the algorithm, the progress bar's default, ``train.log``,
the final line with the results path, and plots that stay readable with many agents."""

import io
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from matplotlib.figure import Figure

from agents.evaluation.plotting import CLIPPED, line_styles, outliers, plot_lines
from agents.rl2.training import CONFIG_DIR, TrainResult, agent_label, final_line, show_progress, train

SMALL = [
    "budget=smoke",
    "env.num_envs=8",
    "env.kwargs.horizon=10",
    "agent.hyperparameters.n_steps=20",
    "agent.hyperparameters.batch_size=80",
    "agent.hyperparameters.n_epochs=1",
]


def _config(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*SMALL, *overrides])


def test_agent_label_comes_from_the_algorithm():
    assert agent_label("fast_recurrent_ppo") == "RL² (fast_recurrent_ppo)"
    assert agent_label("recurrent_ppo") == "RL² (recurrent_ppo)"
    assert agent_label("ppo") == "PPO (no memory)"


def test_progress_bar_is_on_by_default_but_only_on_a_terminal(monkeypatch):
    cfg = _config("out_dir=/tmp/unused")
    assert cfg.progress_bar is True

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert show_progress(cfg)
    assert not show_progress(_config("out_dir=/tmp/unused", "progress_bar=false"))
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # redirected, CI, pytest
    assert not show_progress(cfg)


def test_final_line_names_the_results_or_the_model():
    evaluated = TrainResult(model="runs/x/model.zip", num_timesteps=800, resumed_from=None, evaluation={})
    assert final_line(evaluated) == f"results: {Path('runs/x/results.md')} (model: runs/x/model.zip (800 steps))"
    assert final_line(TrainResult(model="runs/x/model.zip", num_timesteps=800)) == "model: runs/x/model.zip (800 steps)"


def test_train_log_says_what_is_trained_and_where_it_went(tmp_path, capsys):
    cfg = _config(f"out_dir={tmp_path}", "evaluate=false", "budget.total_timesteps=300", "budget.checkpoint_every=160")
    train(cfg)
    log = (tmp_path / "train.log").read_text()
    assert "training RL² (fast_recurrent_ppo) with MlpLstmPolicy on MetaOpt-LR-v0" in log
    assert "budget.total_timesteps=300 is trained as 320 steps: whole rollouts of 160" in log
    assert "a fresh run" in log
    assert f"checkpoint {tmp_path / 'checkpoints' / 'model_160_steps.zip'} at 160 steps" in log
    assert f"checkpoint {tmp_path / 'checkpoints' / 'model_320_steps.zip'} at 320 steps" in log
    assert f"model: {tmp_path / 'model.zip'}" in log
    printed = capsys.readouterr().out
    assert "is trained as 320 steps" in printed and "INFO" not in printed  # printed once, not through logging

    # A resume appends what it resumed from; a finished run says so.
    cfg = _config(f"out_dir={tmp_path}", "evaluate=false", "budget.total_timesteps=480", "budget.checkpoint_every=160")
    train(cfg)
    log = (tmp_path / "train.log").read_text()
    assert "extending the run" in log and "resuming from" in log and "model_320_steps.zip at 320 steps" in log
    train(cfg)
    assert "nothing more to train" in (tmp_path / "train.log").read_text()


def _fourteen_curves() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    steps = np.arange(50)
    curves = {f"agent {i}": -0.02 * (i + 1) * steps + 0.05 * rng.standard_normal(50) for i in range(13)}
    curves["random"] = np.where(steps < 10, 0.0, 30.0)  # diverged: log10(1e30)
    return curves


def test_plots_with_many_agents_have_distinct_styles_and_robust_limits():
    assert len(set(line_styles(14))) == 14 and len(set(line_styles(45))) == 45
    curves = _fourteen_curves()
    assert outliers(curves) == {"random"}
    axis = Figure().subplots()
    clipped = plot_lines(axis, curves)
    assert clipped == {"random"}
    lines = axis.get_lines()
    assert len({(str(line.get_color()), line.get_linestyle()) for line in lines}) == 14
    assert [line.get_label() for line in lines][-1] == "random" + CLIPPED
    others = np.concatenate([c for name, c in curves.items() if name != "random"])
    low, high = axis.get_ylim()
    assert low <= others.min() and high >= others.max()  # every other curve is in view
    assert high < 5.0 and high - low < 1.2 * (others.max() - others.min())  # and not flattened by the diverged one


def test_no_clipping_without_an_outlier():
    curves = {name: c for name, c in _fourteen_curves().items() if name != "random"}
    axis = Figure().subplots()
    assert plot_lines(axis, curves) == set()
    assert all(not str(line.get_label()).endswith(CLIPPED) for line in axis.get_lines())


def test_lr_plot_with_fourteen_agents(tmp_path):
    from agents.evaluation.lr import RunRecord, plot_curves

    def record(curve: np.ndarray) -> RunRecord:
        return RunRecord(np.zeros(4), np.zeros(4), np.zeros(4, bool), np.zeros(4, int), curve, np.full(50, 0.1))

    plot_curves({name: [record(c)] for name, c in _fourteen_curves().items()}, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_tuning_and_evaluation_show_a_tqdm_bar_on_a_terminal_only(monkeypatch):
    from agents.evaluation.suites import get_suite

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    suite = get_suite("MetaOpt-LR-v0")
    kwargs = {"task_family": "quadratic", "horizon": 5}
    for terminal in (True, False):
        stream = Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        agents, tuning = suite.build_agents(["baseline:constant"], kwargs, tune_tasks=2)
        suite.evaluate(agents, kwargs, num_tasks=2, seeds=(0, 1))
        text = stream.getvalue()
        if terminal:
            grid = len(tuning["constant"]["grid"])
            # tqdm redraws at most every 0.1 s: the first frame (the bar's total) is always there
            assert f"tuning constant:   0%|          | 0/{grid}" in text
            assert "evaluating:   0%|          | 0/2" in text and "constant (tuned lr=" in text
        else:
            assert text == ""
