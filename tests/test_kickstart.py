"""Kickstarting RL² from hand-designed teachers (agents/rl2/kickstart.py): the teachers' actions
reproduce the teachers in every action mode, only taught families get a weight, the distillation
term pulls the student to its teacher, a resumed kickstarted run is exact, and bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_resume import _config  # the small training configuration of the run-lifecycle tests

from agents.controllers.lr import BASELINES
from agents.rl2.kickstart import Kickstart, Teachers, check_kickstart, distillation_loss
from agents.rl2.training import check_config, train
from metaopt_envs.core import rng
from metaopt_envs.lr.core import LRCore


def _trial_env(**kwargs):
    """An SB3 VecEnv of RL² trials in relative mode (the observations a student and its teachers see)."""
    import metaopt_envs

    return metaopt_envs.make_sb3_vec_env("MetaOpt-LR-v0", action_mode="relative", **kwargs)


def _core(family: str = "logistic", mode: str = "relative", **kwargs) -> LRCore:
    core = LRCore(num_envs=16, task_family=family, horizon=20, action_mode=mode, **kwargs)
    core.reset_rows(torch.ones(16, dtype=torch.bool), keys=rng.keys_from_seeds(list(range(16))))
    return core


@pytest.mark.parametrize("mode", ["absolute", "relative", "hypergradient"])
@pytest.mark.parametrize("spec", ["cosine?lr=0.05", "hypergradient?lr=0.04&beta=0.2"])
def test_the_teachers_actions_set_the_teachers_rates(mode, spec):
    """Acting with the teacher's actions, the rate in force is the one the teacher asks for, or the
    nearest one a decision can reach (x2 at most in the relative modes: the start 0.03 -> 0.05 is
    reachable, cosine's last decay steps are not), whatever the action mode."""
    core = _core(mode=mode, initial_lr=0.03)
    teachers = Teachers(core, {"logistic": spec})
    name, _, query = spec.partition("?")
    kwargs = {k: float(v) for k, v in (item.split("=") for item in query.split("&"))}
    teacher = BASELINES[name](**kwargs)
    for _ in range(20):
        obs = core.observe().numpy()
        actions, weights = teachers.actions(obs)
        wanted = teacher.learning_rate(obs)
        if mode != "absolute":
            base = core.state.log_lr.exp().numpy()
            if mode == "hypergradient":
                base = base * np.exp(core.hypergradient_beta * obs[:, 7])  # the rule's own step comes first
            wanted = np.clip(wanted, base / 2, base * 2)
        core.step(torch.as_tensor(actions))
        np.testing.assert_allclose(core.state.log_lr.exp().numpy(), wanted, rtol=2e-5)
        np.testing.assert_array_equal(weights, 1.0)


def test_only_the_taught_families_rows_get_a_weight():
    core = _core("mixture")
    teachers = Teachers(core, {"logistic": "cosine?lr=0.464"})
    actions, weights = teachers.actions(core.observe().numpy())
    family = core.family.family_index(core.tasks).numpy()
    logistic = core.family.families().index("logistic")
    assert 0 < (family == logistic).sum() < 16  # both kinds of rows in the batch
    np.testing.assert_array_equal(weights, (family == logistic).astype(np.float32))
    assert np.all(actions[family != logistic] == 0.0) and np.all(actions[family == logistic] == 1.0)  # 0.03 -> 0.46


def test_from_episode_leaves_the_first_inner_episodes_untaught():
    env = _trial_env(num_envs=8, seed=0, episodes_per_trial=3, task_family="logistic", horizon=4)
    teachers = Teachers(env, {"logistic": "cosine?lr=0.464"}, from_episode=1)
    obs, weights = env.reset(), []
    for _ in range(12):  # one trial of 3 inner episodes of 4 decisions
        actions, weight = teachers.actions(obs)
        weights.append(weight)
        obs, *_ = env.step(actions)
    np.testing.assert_array_equal(np.array(weights)[:, 0], [0.0] * 4 + [1.0] * 8)


def test_distillation_loss_averages_over_taught_real_steps():
    mean = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    teacher = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    mask = torch.tensor([True, True, True, False])  # the last step is padding
    assert distillation_loss(mean, teacher, mask).item() == pytest.approx((1.0 + 4.0) / 2)
    assert Kickstart(Teachers(_core(), {"logistic": "constant"}), 2.0, 100).weight(25) == pytest.approx(1.5)
    assert Kickstart(Teachers(_core(), {"logistic": "constant"}), 2.0, 100).weight(150) == 0.0


@pytest.mark.parametrize(
    ("kickstart", "match"),
    [
        ({"teachers": {"logistic": "cosine"}, "coef": 1.0, "step": 10}, "agent.kickstart.step is not a key"),
        ({"teachers": {}, "steps": 10}, "agent.kickstart.teachers must map"),
        ({"teachers": {"logistic": "cosine"}, "coef": -1.0, "steps": 10}, "agent.kickstart.coef must be a positive"),
        ({"teachers": {"logistic": "cosine"}, "steps": 0}, "agent.kickstart.steps must be a positive integer"),
        ({"teachers": {"logistic": "cosine"}, "steps": 9, "from_episode": -1}, "from_episode must be an integer >= 0"),
    ],
)
def test_bad_settings_are_refused(kickstart, match):
    with pytest.raises(ValueError, match=match):
        check_kickstart(kickstart)


@pytest.mark.parametrize(
    ("teachers", "match"),
    [
        ({"logstic": "cosine"}, "names the family 'logstic'.*its families are quadratic, logistic"),
        ({"logistic": "oracle"}, "must name a controller that reads only the observation"),
        ({"logistic": "cosine?lrr=0.1"}, "takes no argument 'lrr'"),
    ],
)
def test_bad_teachers_are_refused(teachers, match):
    with pytest.raises(ValueError, match=match):
        Teachers(_core("mixture"), teachers)


def test_kickstart_needs_the_fast_algorithm(tmp_path):
    cfg = _config(tmp_path, "agent.algo=recurrent_ppo", "agent.kickstart={teachers:{quadratic:constant},steps:100}")
    with pytest.raises(ValueError, match=r"agent\.kickstart needs agent\.algo fast_recurrent_ppo"):
        check_config(cfg)


def _mean_actions(model_path, teacher_spec: str) -> tuple[float, float]:
    """Mean |student's deterministic action - teacher's action| over a trial of held-out tasks, and the
    student's mean action."""
    from agents.rl2.fast_recurrent import FastRecurrentPPO

    model = FastRecurrentPPO.load(model_path, device="cpu")
    env = _trial_env(num_envs=16, seed=5, episodes_per_trial=2, task_family="quadratic", split="test", horizon=10)
    teachers = Teachers(env, {"quadratic": teacher_spec})
    obs, state, start, gaps, chosen = env.reset(), None, np.ones(16, dtype=bool), [], []
    for _ in range(20):
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        gaps.append(np.abs(np.clip(action, -1, 1) - teachers.actions(obs)[0]).mean())
        chosen.append(np.clip(action, -1, 1).mean())
        obs, _, start, _ = env.step(np.clip(action, -1, 1))
    return float(np.mean(gaps)), float(np.mean(chosen))


def test_the_student_learns_its_teachers_actions(tmp_path):
    """A teacher that holds the rate at 1e-3 (halving it each decision from 0.03 until there) is one
    the quadratic reward would never teach: after 4000 kickstarted steps (4 epochs per rollout) the
    student halves the rate; the same training without the teacher does not."""
    teacher = "constant?lr=0.001"
    common = [
        "env.kwargs.action_mode=relative",
        "budget.total_timesteps=4000",
        "env.num_envs=16",
        "budget.checkpoint_every=3200",
        "agent.hyperparameters.n_epochs=4",
    ]
    taught = train(
        _config(
            tmp_path / "taught", *common, f"agent.kickstart={{teachers:{{quadratic:'{teacher}'}},coef:3.0,steps:8000}}"
        )
    )
    alone = train(_config(tmp_path / "alone", *common))
    gap_taught, mean_taught = _mean_actions(taught["model"], teacher)
    gap_alone, mean_alone = _mean_actions(alone["model"], teacher)
    assert gap_taught < 0.6 * gap_alone, (gap_taught, gap_alone)  # 0.72 against 1.55 here
    assert mean_taught < -0.3 < mean_alone, (mean_taught, mean_alone)  # -0.83 against 0.55


def test_a_resumed_kickstarted_run_is_exact(tmp_path):
    """The teachers are not saved with the model: a resume attaches them again and the weight goes on
    decaying from the checkpoint's step count, bit for bit the uninterrupted run."""
    kick = "agent.kickstart={teachers:{logistic:'cosine?lr=0.464',sinusoid:'hypergradient?lr=0.05'},steps:1000}"
    overrides = ["env=lr_mixture", "env.kwargs.horizon=10", "budget.total_timesteps=640", kick]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(_config(whole, *overrides))
    train(_config(cut, *overrides))
    for path in (cut / "checkpoints").iterdir():  # as if killed just after the 320-step checkpoint
        if not path.name.startswith(("model_160_", "model_320_")):
            path.unlink()
    resumed = train(_config(cut, *overrides))
    assert resumed["resumed_from"].endswith("model_320_steps.zip")
    from agents.rl2.fast_recurrent import FastRecurrentPPO

    def parameters(path):
        return list(FastRecurrentPPO.load(path, device="cpu").policy.state_dict().values())

    plain = tmp_path / "plain"
    train(_config(plain, *overrides[:-1]))
    assert all(torch.equal(a, b) for a, b in zip(parameters(whole / "model.zip"), parameters(cut / "model.zip")))
    assert not all(torch.equal(a, b) for a, b in zip(parameters(whole / "model.zip"), parameters(plain / "model.zip")))
