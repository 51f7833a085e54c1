"""Agent specs: the one parser of ``model.zip``, ``baseline:NAME?k=v&k2=v2`` and ``module:Class``.

Promises: every form parses to what it says; values are read as int, float, bool or string;
every malformed spec is a ValueError that names the spec and the allowed forms; a family's
suite builds its baselines from specs (with the env's defaults) and names unknown baselines
and arguments; ``metaopt-bench`` turns a bad spec into a one-line usage error.
"""

from __future__ import annotations

import math
import sys
import types

import pytest

from agents.cli.bench import main as bench_main
from agents.controllers.ensemble import FixedShare
from agents.controllers.hpo import GPEI, TPE
from agents.controllers.lr import ConstantLR
from agents.evaluation.specs import FORMS, AgentSpec, load_agent, parse_agent_spec, parse_value
from agents.evaluation.suites import get_suite


def test_model_path():
    assert parse_agent_spec("runs/rl2/model.zip") == AgentSpec("runs/rl2/model.zip", "model", path="runs/rl2/model.zip")


def test_baseline_without_and_with_arguments():
    assert parse_agent_spec("baseline:constant") == AgentSpec("baseline:constant", "baseline", name="constant")
    spec = parse_agent_spec("baseline:gp_ei?num_initial=3&fit_lr=0.05&y_transform=none&flag=true")
    assert spec.kind == "baseline" and spec.name == "gp_ei"
    assert spec.kwargs == {"num_initial": 3, "fit_lr": 0.05, "y_transform": "none", "flag": True}
    assert isinstance(spec.kwargs["num_initial"], int)


def test_user_class():
    spec = parse_agent_spec("my_package.agents:MyAgent")
    assert (spec.kind, spec.path, spec.name) == ("class", "my_package.agents", "MyAgent")


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("-2", -2),
        ("0.1", 0.1),
        ("1e-3", 1e-3),
        ("1.0", 1.0),
        ("true", True),
        ("False", False),
        ("log", "log"),
    ],
)
def test_values(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("", "empty"),
        ("baseline:", "name"),
        ("baseline:2fast", "name"),
        ("baseline:constant?lr", "key=value"),
        ("baseline:constant?lr=", "key=value"),
        ("baseline:constant?=0.1", "key=value"),
        ("baseline:constant?lr=0.1&&beta=1", "key=value"),
        ("baseline:constant?lr=0.1&lr=0.2", "twice"),
        ("constant", "not one of the forms"),
        ("my_module:", "not one of the forms"),
        (":MyAgent", "not one of the forms"),
        ("my module:MyAgent", "not one of the forms"),
        ("model.pt", "not one of the forms"),
    ],
)
def test_malformed_specs_name_the_spec_and_the_forms(spec, problem):
    with pytest.raises(ValueError) as error:
        parse_agent_spec(spec)
    message = str(error.value)
    assert repr(spec) in message and problem in message and FORMS in message


def test_loading_errors_name_the_spec(tmp_path, monkeypatch):
    baselines = {"constant": ConstantLR}
    with pytest.raises(ValueError, match=r"'baseline:cosine'.*unknown LR baseline 'cosine'.*\['constant'\]"):
        load_agent("baseline:cosine", baselines, "LR")
    with pytest.raises(ValueError, match=r"takes no argument 'beta'.*'lr'"):
        load_agent("baseline:constant?beta=0.1", baselines)
    with pytest.raises(ValueError, match="no such model file"):
        load_agent(str(tmp_path / "missing.zip"), baselines)
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_here'"):
        load_agent("no_such_module_here:Agent", baselines)
    module = types.ModuleType("spec_test_agents")
    module.NoPredict = type("NoPredict", (), {})
    monkeypatch.setitem(sys.modules, "spec_test_agents", module)
    with pytest.raises(ValueError, match="has no class 'Missing'"):
        load_agent("spec_test_agents:Missing", baselines)
    with pytest.raises(ValueError, match="no predict"):
        load_agent("spec_test_agents:NoPredict", baselines)


def test_each_suite_builds_its_baselines_from_specs():
    lr = get_suite("MetaOpt-LR-v0").load_agent("baseline:constant?lr=0.5", {"lr_range": (1e-3, 1.0)})
    assert isinstance(lr, ConstantLR) and lr.lr == 0.5
    assert (lr.log_low, lr.log_high) == pytest.approx((math.log(1e-3), 0.0))  # the env's lr_range
    fixed_share = get_suite("MetaOpt-Ensemble-v0").load_agent("baseline:fixed_share?eta=0.5&alpha=0.1")
    assert isinstance(fixed_share, FixedShare) and (fixed_share.eta, fixed_share.alpha) == (0.5, 0.1)
    hpo = get_suite("MetaOpt-HPO-v0")
    gp = hpo.load_agent("baseline:gp_ei?num_initial=3&y_transform=none")
    assert isinstance(gp, GPEI) and (gp.num_initial, gp.y_transform) == (3, "none")
    pytest.importorskip("optuna")
    tpe = hpo.load_agent("baseline:tpe?multivariate=true&n_startup_trials=2")
    assert isinstance(tpe, TPE) and tpe.multivariate and tpe.n_startup_trials == 2
    with pytest.raises(ValueError, match="unknown HPO baseline 'hedge'"):
        hpo.load_agent("baseline:hedge")


@pytest.mark.parametrize(
    "agents, message",
    [
        ("baseline:nope", "unknown LR baseline 'nope'"),
        ("baseline:constant?lr", "is not key=value"),
        ("not-a-spec", "not one of the forms"),
    ],
)
def test_bench_reports_a_bad_spec_as_a_usage_error(agents, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--agents", agents, "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_bench_reports_an_unknown_env_id(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_main(["--env-id", "MetaOpt-Nope-v0", "--out-dir", str(tmp_path)])
    assert "no evaluation suite for env id 'MetaOpt-Nope-v0'" in capsys.readouterr().err
