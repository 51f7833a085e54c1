"""User code from the command line: ``module:Class`` task families (all three env ids) and agents
(built with their arguments and the env's ``lr_range``, checked before tuning, tuned on a grid),
imported from the current directory as with ``python -m``."""

import json
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest
from hydra import compose, initialize_config_dir

import metaopt_envs
from agents.cli import bench
from agents.evaluation.specs import Grid, parse_agent_spec

USER_MODULE = textwrap.dedent(
    '''
    import numpy as np

    from agents.controllers.lr import ConstantLR
    from metaopt_envs.ensemble.families.synthetic import SwitchingARFamily
    from metaopt_envs.hpo.families.synthetic import BraninFamily
    from metaopt_envs.lr.families.quadratic import NoisyQuadraticFamily


    class MyQuadratic(NoisyQuadraticFamily):
        """A user's LR family."""


    class MyStream(SwitchingARFamily):
        """A user's stream family."""


    class MyObjective(BraninFamily):
        """A user's objective family."""


    class NotAFamily:
        pass


    class MyAgent(ConstantLR):
        """A user's agent: a constant rate, with a tag; records the lr_range it was given."""

        built = []

        def __init__(self, lr=0.1, tag="plain", lr_range=(1e-4, 10.0)):
            super().__init__(lr=lr, lr_range=lr_range)
            self.tag = tag
            self.given_range = tuple(lr_range)
            MyAgent.built.append((lr, tag, tuple(lr_range)))
    '''
)

SMALL = ["--num-tasks", "2", "--seeds", "0", "--tune-tasks", "2"]


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A directory holding ``my_code.py``, made the current one; the module is forgotten afterwards."""
    (tmp_path / "my_code.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI's cwd insert is undone
    yield tmp_path
    sys.modules.pop("my_code", None)


def test_gym_make_takes_user_families(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir))
    for env_id, family in [
        ("MetaOpt-LR-v0", "my_code:MyQuadratic?max_dim=8"),
        ("MetaOpt-Ensemble-v0", "my_code:MyStream"),
        ("MetaOpt-HPO-v0", "my_code:MyObjective"),
    ]:
        env = gym.make(env_id, task_family=family)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()
        core = metaopt_envs.make_core(env_id, num_envs=1, task_family=family)
        assert type(core.unwrapped.family).__name__ == family.partition(":")[2].partition("?")[0]
    assert (
        metaopt_envs.make_core(
            "MetaOpt-LR-v0", num_envs=1, task_family="my_code:MyQuadratic?max_dim=8"
        ).unwrapped.family.max_dim
        == 8
    )
    with pytest.raises(ValueError, match=r"not a subclass of metaopt_envs\.lr\.families\.LRTaskFamily"):
        gym.make("MetaOpt-LR-v0", task_family="my_code:MyStream")
    with pytest.raises(ValueError, match="not a subclass"):
        gym.make("MetaOpt-HPO-v0", task_family="my_code:NotAFamily")
    with pytest.raises(ValueError, match="cannot import module 'no_such_user_module'"):
        gym.make("MetaOpt-LR-v0", task_family="no_such_user_module:Family")


def test_agent_spec_grid_syntax():
    spec = parse_agent_spec("my_code:MyAgent?lr=grid(0.01,0.1,1)&tag=x")
    assert spec.kind == "class" and spec.kwargs == {"lr": Grid((0.01, 0.1, 1)), "tag": "x"}
    assert bench._names("baselines,my_code:MyAgent?lr=grid(0.01,0.1),x:Y") == [
        "baselines",
        "my_code:MyAgent?lr=grid(0.01,0.1)",
        "x:Y",
    ]


def test_grid_is_refused_for_baselines():
    with pytest.raises(ValueError, match=r"grid\(\.\.\.\) values are for module:Class agents"):
        parse_agent_spec("baseline:constant?lr=grid(0.1,1)")


def test_bench_user_family_and_tuned_user_agent(user_dir):
    out = user_dir / "out"
    report = bench.main(
        [
            *SMALL,
            "--env-kwargs",
            json.dumps({"horizon": 10, "lr_range": [1e-3, 5.0]}),
            "--families",
            "my_code:MyQuadratic",
            "--agents",
            "baseline:constant?lr=0.1,my_code:MyAgent?lr=grid(0.01,0.1,1)&tag=mine,my_code:MyAgent?lr=0.5",
            "--out-dir",
            str(out),
        ]
    )
    my_code = sys.modules["my_code"]
    assert my_code.MyAgent.built and all(given == (1e-3, 5.0) for _, _, given in my_code.MyAgent.built)
    assert {tag for _, tag, _ in my_code.MyAgent.built} == {"mine", "plain"}
    assert list(report["families"]) == ["my_code:MyQuadratic"]
    results = json.loads((out / "results.json").read_text())["families"]["my_code:MyQuadratic"]
    assert "## my_code:MyQuadratic" in (out / "results.md").read_text()
    (tuned,) = [name for name in results["summaries"] if name.startswith("my_code:MyAgent?tag=mine (tuned lr=")]
    assert "my_code:MyAgent?lr=0.5" in results["summaries"]
    record = results["tuning"]["my_code:MyAgent?lr=grid(0.01,0.1,1)&tag=mine"]
    assert record["grid"] == [{"lr": 0.01}, {"lr": 0.1}, {"lr": 1}] and len(record["scores"]) == 3
    assert tuned.endswith(f"lr={record['best']['lr']:.3g})")


@pytest.mark.parametrize(
    ("env_id", "family", "kwargs"),
    [("MetaOpt-Ensemble-v0", "my_code:MyStream", {}), ("MetaOpt-HPO-v0", "my_code:MyObjective", {})],
)
def test_bench_user_families_of_other_kinds(user_dir, env_id, family, kwargs):
    out = user_dir / "out"
    bench.main([*SMALL, "--env-id", env_id, "--families", family, "--out-dir", str(out)])
    assert family in (out / "results.md").read_text()


def test_bench_family_from_env_kwargs(user_dir):
    out = user_dir / "out"
    env_kwargs = {"task_family": "my_code:MyQuadratic", "horizon": 10}
    report = bench.main(
        [*SMALL, "--env-kwargs", json.dumps(env_kwargs), "--agents", "my_code:MyAgent", "--out-dir", str(out)]
    )
    assert list(report["families"]) == ["my_code:MyQuadratic"]


def test_bench_refuses_bad_user_code_before_tuning(user_dir, capsys):
    for argv, message in [
        (["--families", "my_code:MyStream"], "--families: task_family 'my_code:MyStream': my_code.MyStream is not"),
        (
            ["--families", "quadratic", "--env-kwargs", '{"task_family": "my_code:MyQuadratic"}'],
            "contradicts --families quadratic",
        ),
        (["--families", "quadratic", "--agents", "baselines,my_code:MyAgent?nosuch=1"], "takes no argument 'nosuch'"),
        (["--families", "quadratic", "--agents", "baselines,my_code:Missing"], "has no class 'Missing'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            bench.main([*SMALL, "--out-dir", str(user_dir / "out"), *argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (user_dir / "out").exists()  # refused before any tuning


def test_train_user_family(user_dir, monkeypatch):
    from agents.rl2.training import CONFIG_DIR, train

    monkeypatch.syspath_prepend(str(user_dir))
    overrides = [
        "budget=smoke",
        "evaluate=false",
        "env.num_envs=8",
        "env.kwargs.horizon=10",
        "env.kwargs.task_family=my_code:MyQuadratic",
        "agent.hyperparameters.n_steps=20",
        "agent.hyperparameters.batch_size=80",
        "agent.hyperparameters.n_epochs=1",
        "budget.total_timesteps=160",
        f"out_dir={user_dir / 'run'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    from agents.cli.train import check_config

    check_config(cfg)
    result = train(cfg)
    assert Path(result["model"]).exists()
    assert "my_code:MyQuadratic" in "".join(p.read_text() for p in Path(result["model"]).parent.glob("*.json"))
