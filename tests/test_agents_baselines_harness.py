"""Baseline controllers and the benchmark harness: every baseline on every family, schedule
values, hypergradient descent's update rule, statistics, user agents, and the CLI's outputs."""

import json
import math

import numpy as np
import pytest
import torch

import metaopt_envs
from agents.cli.bench import main as bench_main
from agents.controllers.lr import (
    BASELINES,
    FEATURE,
    TUNABLE,
    TUNED,
    CosineLR,
    HypergradientLR,
    StepDecayLR,
    TunableLRController,
    WarmupCosineLR,
)
from agents.evaluation.lr import evaluate, load_agent, markdown_table, run_agent
from agents.evaluation.stats import bootstrap_ci, iqm
from metaopt_envs.lr.core import LR_FEATURES

FAMILIES = ["quadratic", "logistic", "sinusoid", "sklearn", "mixture"]


def _obs(progress, log_lr_scaled=0.0, update_cosine=0.0, n=1):
    obs = np.zeros((n, len(LR_FEATURES)), dtype=np.float32)
    obs[:, FEATURE["progress"]] = progress
    obs[:, FEATURE["log_lr"]] = log_lr_scaled
    obs[:, FEATURE["update_cosine"]] = update_cosine
    return obs


def test_the_tuned_baselines_are_the_ones_with_a_base_rate():
    assert (
        TUNED
        == tuple(TUNABLE)
        == ("constant", "cosine", "step_decay", "exponential_decay", "warmup_cosine", "hypergradient")
    )
    # the additive hypergradient rule has a base rate but is not tuned (its beta depends on the problem's scale)
    assert list(BASELINES) == [*TUNED, "hypergradient_additive", "random", "oracle"]
    for name, cls in BASELINES.items():
        assert issubclass(cls, TunableLRController) == (name in (*TUNED, "hypergradient_additive"))
        if name in TUNED:
            assert TUNABLE[name](lr=0.03, lr_range=(1e-3, 1.0)).lr == 0.03


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(set(BASELINES) - {"oracle"}))
def test_every_baseline_runs_on_every_family(name, family):
    core = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=4, task_family=family, horizon=6)
    # the additive hypergradient rule's beta has the problem's units: a small one for every family
    arguments = {"random": "", "hypergradient_additive": "?lr=0.02&beta=1e-4"}.get(name, "?lr=0.02")
    agent = load_agent(f"baseline:{name}{arguments}")
    record = run_agent(agent, core, seed=0)
    assert record.returns.shape == (4,) and np.isfinite(record.returns).all()
    assert len(record.loss_curve) == 6 and len(record.lr_curve) == 6
    if name != "random":  # a small rate must make progress on these problems
        assert record.returns.mean() > 0


def test_quadratic_oracle_beats_the_tuned_constant_on_the_same_tasks():
    kwargs = {"task_family": "quadratic", "inner_optimizer": "sgd", "horizon": 30}
    agents = {"oracle": load_agent("baseline:oracle"), "constant": load_agent("baseline:constant?lr=0.2")}
    summaries, _ = evaluate(agents, env_kwargs=kwargs, num_tasks=64, seeds=(0,), reference="constant")
    assert summaries["oracle"].log10_final_loss_mean < summaries["constant"].log10_final_loss_mean
    assert summaries["oracle"].win_rate > 0.6
    with pytest.raises(ValueError, match="quadratic"):
        evaluate(
            {"oracle": load_agent("baseline:oracle")},
            env_kwargs={"task_family": "logistic", "horizon": 5},
            num_tasks=2,
            seeds=(0,),
        )


def test_controllers_refuse_relative_mode():
    core = metaopt_envs.make_core(
        "MetaOpt-LR-v0", num_envs=2, task_family="quadratic", horizon=4, action_mode="relative"
    )
    with pytest.raises(ValueError, match="absolute"):
        run_agent(load_agent("baseline:constant?lr=0.1"), core, seed=0)


def test_schedule_values():
    cosine = CosineLR(lr=0.1, final_fraction=0.0)
    actions = [cosine.predict(_obs(p))[0] for p in (0.0, 0.5, 1.0)]
    lrs = [np.exp(cosine.log_low + 0.5 * (a[0, 0] + 1) * (cosine.log_high - cosine.log_low)) for a in actions]
    assert lrs[0] == pytest.approx(0.1, rel=1e-5) and lrs[1] == pytest.approx(0.05, rel=1e-5) and lrs[2] < 1e-3
    step = StepDecayLR(lr=1.0, factor=0.1, milestones=(0.5, 0.75))
    assert step.learning_rate(_obs(np.array([0.0, 0.5, 0.8]), n=3)) == pytest.approx([1.0, 0.1, 0.01])
    warm = WarmupCosineLR(lr=1.0, warmup_fraction=0.2)
    rates = warm.learning_rate(_obs(np.array([0.0, 0.1, 0.2, 1.0]), n=4))
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1.0) and rates[3] < 1e-6


def test_hypergradient_follows_baydins_multiplicative_rule_on_sgd():
    """On SGD, update_cosine is the cosine of successive gradients, and the rate follows
    lr_t = lr_{t-1} * exp(beta * cos(g_t, g_{t-1})) (the normalized rule of Baydin et al., 2018)."""
    core = metaopt_envs.make_core(
        "MetaOpt-LR-v0", num_envs=3, task_family="quadratic", inner_optimizer="sgd", horizon=12
    )
    core.reset_rows(torch.ones(3, dtype=torch.bool), keys=metaopt_envs.core.seeds_to_keys(0, 3, "cpu"))
    agent = HypergradientLR(lr=0.05, beta=0.2)
    obs = core.observe().numpy()
    previous_grad = core.grad.clone()
    action, _ = agent.predict(obs)
    result = core.step(torch.as_tensor(action))
    lr = result.info["lr"].numpy()
    assert lr == pytest.approx(np.full(3, 0.05), rel=1e-4)
    for _ in range(5):
        grad = core.grad.clone()
        cosine = torch.nn.functional.cosine_similarity(grad, previous_grad).numpy()
        previous_grad = grad
        action, _ = agent.predict(result.observation.numpy())
        result = core.step(torch.as_tensor(action))
        expected = lr * np.exp(0.2 * cosine)
        assert result.info["lr"].numpy() == pytest.approx(expected, rel=1e-3)
        lr = result.info["lr"].numpy()


def test_statistics():
    values = np.arange(100, dtype=float)
    assert iqm(values) == pytest.approx(49.5)
    low, high = bootstrap_ci(values, np.mean, num_resamples=500)
    assert low < 49.5 < high and high - low < 20


AGENT_MODULE = '''
import numpy as np

class HalfAgent:
    """Always the action 0.5, whatever it sees."""
    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.full((len(observation), 1), 0.5, dtype=np.float32), state
'''


def test_user_agent_by_module_path_and_same_tasks_for_every_agent(tmp_path, monkeypatch):
    (tmp_path / "my_agents.py").write_text(AGENT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    user = load_agent("my_agents:HalfAgent")
    low, high = math.log(1e-4), math.log(10.0)  # the default lr_range
    constant = load_agent(f"baseline:constant?lr={math.exp(low + 0.75 * (high - low))!r}")
    summaries, records = evaluate(
        {"user": user, "constant": constant},
        env_kwargs={"task_family": "quadratic", "horizon": 8},
        num_tasks=8,
        seeds=(0, 1),
        reference="constant",
    )
    # Action 0.5 is the same learning rate as that constant: the same tasks give the same results.
    np.testing.assert_allclose(records["user"][0].returns, records["constant"][0].returns, rtol=1e-4)
    assert summaries["user"].num_runs == 16
    table = markdown_table(summaries, "constant")
    assert "| user |" in table and "| constant |" in table


def test_bench_cli_writes_table_json_and_plots(tmp_path):
    report = bench_main(
        [
            "--families",
            "quadratic",
            "--agents",
            "baseline:constant,baseline:random",
            "--num-tasks",
            "8",
            "--seeds",
            "0",
            "--tune-tasks",
            "8",
            "--env-kwargs",
            '{"horizon": 10}',
            "--out-dir",
            str(tmp_path),
        ]
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["commit"] and saved["seeds"] == [0]
    from agents.evaluation.report import cpu_model

    assert saved["cpu_model"] == cpu_model() and saved["torch_threads"] == 1 and saved["torch"]
    assert saved["command"].startswith("metaopt-bench --families quadratic")
    assert saved["command"] in (tmp_path / "results.md").read_text()
    summaries = saved["families"]["quadratic"]["summaries"]
    assert len(summaries) == 2 and "baseline:random" in summaries
    tuning = saved["families"]["quadratic"]["tuning"]["constant"]
    assert tuning["budget_episodes"] == len(tuning["grid"]) * 8
    assert (tmp_path / "curves_quadratic.png").stat().st_size > 10_000
    assert "| agent |" in (tmp_path / "results.md").read_text()
    assert report["families"].keys() == {"quadratic"}


def test_benchmark_scripts_record_where_they_ran(tmp_path, capsys):
    from agents.evaluation.report import cpu_model, git_commit, write_benchmark

    write_benchmark(tmp_path / "sub" / "bench", ["| a | b |", "|---|---:|", "| x | 1.0 |"], {"rows": [1]})
    saved = json.loads((tmp_path / "sub" / "bench.json").read_text())
    assert saved["rows"] == [1] and saved["commit"] == git_commit() and saved["cpu_model"] == cpu_model()
    assert saved["torch_threads"] == 1 and saved["command"]
    markdown = (tmp_path / "sub" / "bench.md").read_text()
    assert markdown.startswith("| a | b |") and f"on {cpu_model()}" in markdown and "1 thread(s)" in markdown
    assert "| x | 1.0 |" in capsys.readouterr().out
