"""Loading executes no code from a file: a payload planted in a model or a learned optimizer stays inert.

The payload is a pickled object whose ``__reduce__`` writes a marker file when unpickled. It is
planted in the cloudpickled entries of an SB3 zip's ``data`` and in a ``.pth``; loading through
:func:`agents.rl2.runs.load_model`, the bench's spec loader and ``metaopt-bench`` itself must leave
no marker and still evaluate the model (or fail with a clear error where the weights are the payload).
``trust=True`` (SB3's own load) does run it: the payload is live, so the safe path is what stops it.
"""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from agents.cli import bench
from agents.evaluation import specs
from agents.meta.learned_optimizers import CoordinatewiseLSTMOptimizer, LearnedLRController
from agents.rl2 import runs
from agents.rl2.training import CONFIG_DIR, train


class Payload:
    """Writes ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("safe_run")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["budget=smoke", f"out_dir={out_dir}", "evaluate=false", "env.num_envs=8"])
    train(cfg)
    return out_dir


def _rewrite(source: Path, target: Path, change) -> Path:
    """``source``'s zip written to ``target`` with ``change(name, bytes) -> bytes | None`` (None drops it)."""
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in entries.items():
            changed = change(name, content)
            if changed is not None:
                archive.writestr(name, changed)
    return target


def _poison_data(marker: Path, keys=("observation_space", "action_space", "policy_class", "lr_schedule")):
    serialized = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()

    def change(name: str, content: bytes) -> bytes:
        if name != "data":
            return content
        data = json.loads(content)
        for key in keys:
            data[key][":serialized:"] = serialized
        return json.dumps(data).encode()

    return change


def _poisoned_run(run_dir: Path, tmp_path: Path, marker: Path, keep_spec: bool = True) -> Path:
    poisoned = tmp_path / "run"
    poisoned.mkdir()
    change = _poison_data(marker)
    if not keep_spec:
        change = (lambda inner: lambda name, content: None if name == runs.SPEC_ENTRY else inner(name, content))(change)
    else:
        (poisoned / runs.SPEC_FILE).write_text((run_dir / runs.SPEC_FILE).read_text())
    _rewrite(run_dir / "model.zip", poisoned / "model.zip", change)
    return poisoned


def _same_actions(model, reference) -> None:
    obs = np.zeros((3, *reference.observation_space.shape), dtype=np.float32)
    start = np.ones(3, dtype=bool)
    actions, _ = model.predict(obs, episode_start=start, deterministic=True)
    expected, _ = reference.predict(obs, episode_start=start, deterministic=True)
    np.testing.assert_array_equal(actions, expected)


def test_the_payload_is_live_under_trust(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(ValueError):  # the payload unpickles to None where a space should be
        runs.load_model(_poisoned_run(run_dir, tmp_path, marker), trust=True)
    assert marker.exists()  # SB3's own load runs it: this is what the safe path must prevent


@pytest.mark.parametrize("keep_spec", [True, False], ids=["with-spec", "without-spec"])
def test_load_model_ignores_pickled_data_entries(run_dir: Path, tmp_path: Path, keep_spec: bool) -> None:
    marker = tmp_path / "marker"
    poisoned = _poisoned_run(run_dir, tmp_path, marker, keep_spec)
    model = runs.load_model(poisoned if keep_spec else poisoned / "model.zip")
    assert not marker.exists()
    _same_actions(model, runs.load_model(run_dir))
    assert model.observation_space == runs.load_model(run_dir).observation_space


def test_the_bench_spec_loader_and_metaopt_bench_run_nothing(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    poisoned = _poisoned_run(run_dir, tmp_path, marker)
    agent = specs.load_model(str(poisoned))
    assert isinstance(agent, runs.TrainedModel) and not marker.exists()
    report = bench.main(
        ["--families", "quadratic", "--agents", str(poisoned), "--num-tasks", "4", "--seeds", "0"]
        + ["--out-dir", str(tmp_path / "bench")]
    )
    assert not marker.exists()
    assert np.isfinite(report["families"]["quadratic"]["summaries"][str(poisoned)]["return_mean"])


def test_an_unknown_pickled_entry_is_refused_by_name(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    serialized = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()

    def change(name: str, content: bytes) -> bytes:
        if name != "data":
            return content
        return json.dumps({**json.loads(content), "surprise": {":type:": "x", ":serialized:": serialized}}).encode()

    path = _rewrite(run_dir / "model.zip", tmp_path / "model.zip", change)
    with pytest.raises(ValueError, match=r"'surprise' is a pickled object.*trust=True"):
        runs.load_model(path)
    assert not marker.exists()


def test_a_pickle_in_the_weights_is_refused(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    def change(name: str, content: bytes) -> bytes:
        if name != "policy.pth":
            return content
        path = tmp_path / "policy.pth"
        torch.save({"payload": Payload(marker)}, path)
        return path.read_bytes()

    path = _rewrite(run_dir / "model.zip", tmp_path / "model.zip", change)
    with pytest.raises(ValueError, match=r"could not load .*[Ww]eights only load failed"):
        runs.load_model(path)
    with pytest.raises(ValueError, match="agent spec"):
        specs.load_model(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("cls", [LearnedLRController, CoordinatewiseLSTMOptimizer])
def test_learned_optimizers_load_weights_only(cls, tmp_path: Path) -> None:
    path = tmp_path / "saved.pt"
    cls(seed=0).save(str(path))
    reloaded = cls.load(str(path))
    original = cls.load(str(path))
    for (name, tensor), (_, expected) in zip(
        _module(reloaded).state_dict().items(), _module(original).state_dict().items(), strict=True
    ):
        torch.testing.assert_close(tensor, expected, msg=name)
    marker = tmp_path / "marker"
    blob = torch.load(path, weights_only=True)
    torch.save({**blob, "history": [Payload(marker)]}, path)
    with pytest.raises(ValueError, match=f"not a {cls.__name__} file"):
        cls.load(str(path))
    assert not marker.exists()


def _module(learned):
    return learned.net if isinstance(learned, LearnedLRController) else learned


def test_the_resume_path_loads_safely_and_trains_on(run_dir: Path, tmp_path: Path) -> None:
    from agents.rl2.training import make_env

    marker = tmp_path / "marker"
    poisoned = _poisoned_run(run_dir, tmp_path, marker)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["budget=smoke", f"out_dir={tmp_path}", "env.num_envs=8"])
    model = runs.load_model(poisoned, env=make_env(cfg), tensorboard_log=None)
    steps = model.num_timesteps
    model.learn(total_timesteps=8, reset_num_timesteps=False)
    assert model.num_timesteps > steps and not marker.exists()


def test_metaopt_train_resumes_from_a_poisoned_checkpoint_without_running_it(tmp_path: Path) -> None:
    """A resume loads its checkpoint safely (the run's spec rebuilds the pickled entries) and still
    continues bit for bit: the final weights are those of the run that was never interrupted."""
    from agents.rl2.checkpoints import state_path
    from agents.rl2.fast_recurrent import FastRecurrentPPO

    out_dir = tmp_path / "run"
    overrides = ["budget=smoke", "env.num_envs=8", "env.kwargs.horizon=10", "agent.hyperparameters.n_steps=20"]
    overrides += ["agent.hyperparameters.batch_size=80", "agent.hyperparameters.n_epochs=1"]
    overrides += ["budget.checkpoint_every=160", "budget.total_timesteps=320", "evaluate=false", f"out_dir={out_dir}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train(cfg)
    expected = FastRecurrentPPO.load(out_dir / "model.zip", device="cpu").policy.state_dict()
    checkpoints = out_dir / "checkpoints"
    last, first = checkpoints / "model_320_steps.zip", checkpoints / "model_160_steps.zip"
    last.unlink()
    state_path(last).unlink()
    (out_dir / "model.zip").unlink()
    marker = tmp_path / "marker"
    clean = tmp_path / "clean.zip"
    first.rename(clean)
    _rewrite(clean, first, _poison_data(marker))

    result = train(cfg)
    assert not marker.exists()
    assert result["resumed_from"] is not None and result["resumed_from"].endswith("model_160_steps.zip")
    assert result["num_timesteps"] == 320
    resumed = FastRecurrentPPO.load(out_dir / "model.zip", device="cpu").policy.state_dict()
    for name, tensor in resumed.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)


def _surprise(run_dir: Path, tmp_path: Path, marker: Path) -> Path:
    """The run's model with an extra pickled data entry ``surprise`` (the payload) that no spec can rebuild."""
    serialized = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()

    def change(name: str, content: bytes) -> bytes:
        if name != "data":
            return content
        return json.dumps({**json.loads(content), "surprise": {":type:": "x", ":serialized:": serialized}}).encode()

    poisoned = tmp_path / "surprise"
    poisoned.mkdir()
    (poisoned / runs.SPEC_FILE).write_text((run_dir / runs.SPEC_FILE).read_text())
    _rewrite(run_dir / "model.zip", poisoned / "model.zip", change)
    return poisoned


def _bench_args(model: Path, tmp_path: Path) -> list[str]:
    return ["--families", "quadratic", "--agents", str(model), "--num-tasks", "4", "--seeds", "0"] + [
        "--out-dir",
        str(tmp_path / "bench"),
    ]


def test_metaopt_bench_refuses_an_unrebuildable_model_without_trust_model(run_dir: Path, tmp_path: Path, capsys):
    marker = tmp_path / "marker"
    model = _surprise(run_dir, tmp_path, marker)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(_bench_args(model, tmp_path))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("metaopt-bench: error: --agents:")
    assert "'surprise'" in error and "--trust-model" in error
    assert not marker.exists() and not (tmp_path / "bench").exists()
    assert runs.needs_trust(run_dir) is None  # a model metaopt-train saved loads without the flag


def test_metaopt_bench_trust_model_unpickles_the_file(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    model = _surprise(run_dir, tmp_path, marker)
    report = bench.main(_bench_args(model, tmp_path) + ["--trust-model"])
    assert marker.exists()  # SB3's own load ran the payload: the flag is what allows it
    assert np.isfinite(report["families"]["quadratic"]["summaries"][str(model)]["return_mean"])
    assert "only for models you made yourself" in " ".join(bench.parser().format_help().split())
