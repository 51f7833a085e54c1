"""The learned acquisition function's policy (CandidateScorePolicy): permutation-equivariant, trainable by
metaopt-train's PPO, and a saved model reloads without unpickling code and evaluates in metaopt-bench."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import metaopt_envs
from agents.cli import bench
from agents.controllers.acquisition import ExpectedImprovementScores
from agents.rl2 import runs
from agents.rl2.acquisition_policy import POLICY_NAME, AcquisitionPPO, CandidateScorePolicy, candidate_layout
from agents.rl2.training import CONFIG_DIR, algorithms, build_model, make_env, train

KWARGS: dict[str, Any] = {
    "task_family": "branin",
    "budget": 6,
    "max_dim": 2,
    "num_candidates": 8,
    "num_local": 2,
    "fit_steps": 3,
}


def _policy(episodes_per_trial: int | None = None, **policy_kwargs) -> tuple[CandidateScorePolicy, torch.Tensor]:
    core = metaopt_envs.make_core("MetaOpt-Acquisition-v0", num_envs=5, episodes_per_trial=episodes_per_trial, **KWARGS)
    torch.manual_seed(0)
    policy = CandidateScorePolicy(
        core.single_observation_space, core.single_action_space, lambda _: 3e-4, **policy_kwargs
    )
    obs = core.observe()
    core.step(torch.rand(5, KWARGS["num_candidates"]) * 2 - 1)  # some data, so the posterior varies
    return policy, torch.cat([obs, core.observe()]).float()


@pytest.mark.parametrize("derived", [None, []])
@pytest.mark.parametrize("episodes_per_trial", [None, 2])
def test_permuting_the_candidates_permutes_the_scores_and_keeps_the_value(derived, episodes_per_trial) -> None:
    kwargs = {} if derived is None else {"derived_features": derived}
    policy, obs = _policy(episodes_per_trial, **kwargs)
    n, f = KWARGS["num_candidates"], policy.num_features
    assert f == 4 + KWARGS["max_dim"]
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    candidates = obs[:, : n * f].reshape(-1, n, f)
    permuted = torch.cat([candidates[:, permutation].reshape(-1, n * f), obs[:, n * f :]], dim=1)
    with torch.no_grad():
        logits = policy.logits(policy.candidate_inputs(obs))
        logits_permuted = policy.logits(policy.candidate_inputs(permuted))
        torch.testing.assert_close(logits_permuted, logits[:, permutation])
        torch.testing.assert_close(policy.predict_values(permuted), policy.predict_values(obs))
        probs = policy.get_distribution(obs).distribution.probs  # type: ignore[union-attr]
        probs_permuted = policy.get_distribution(permuted).distribution.probs  # type: ignore[union-attr]
        torch.testing.assert_close(probs_permuted, probs[:, permutation])
        actions, _, log_prob = policy(obs, deterministic=True)
    # The action is the chosen candidate as a one-hot score; PPO's stored actions map back to it.
    assert set(actions.unique().tolist()) == {-1.0, 1.0} and (actions == 1).sum(-1).eq(1).all()
    torch.testing.assert_close(actions.argmax(-1), logits.argmax(-1))
    _, evaluated, _ = policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(evaluated, log_prob)


def test_bad_layouts_are_refused_with_the_cause() -> None:
    assert candidate_layout(8 * 6, 8) == 6 and candidate_layout(8 * 6 + 8 + 2, 8) == 6
    with pytest.raises(ValueError, match="num_candidates x"):
        candidate_layout(8 * 6 + 3, 8)
    with pytest.raises(ValueError, match="derived_features"):
        _policy(derived_features=["ei"])


def test_metaopt_train_knows_the_policy_and_a_saved_model_reloads_safely_and_evaluates(tmp_path: Path) -> None:
    assert algorithms()["ppo"] is AcquisitionPPO and POLICY_NAME in AcquisitionPPO.policy_aliases
    overrides = [
        "env=acquisition",
        "agent=acquisition_ppo",
        "budget=smoke",
        "budget.total_timesteps=64",
        f"out_dir={tmp_path / 'run'}",
        "evaluate=false",
        "env.num_envs=4",
        "agent.hyperparameters.batch_size=16",
        *(f"env.kwargs.{key}={value}" for key, value in KWARGS.items()),
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    result = train(cfg)
    assert runs.needs_trust(tmp_path / "run") is None
    model = runs.load_model(tmp_path / "run")  # rebuilt from the spec: nothing unpickled
    assert isinstance(model.policy, CandidateScorePolicy) and model.policy.derived_features == [
        "z",
        "log_std",
        "log_ei",
    ]
    report = bench.main(
        ["--env-id", "MetaOpt-Acquisition-v0", "--families", "branin", "--agents", str(tmp_path / "run")]
        + ["--num-tasks", "3", "--seeds", "0", "--out-dir", str(tmp_path / "bench")]
    )
    (summary,) = report["families"]["branin"]["summaries"].values()
    assert np.isfinite(summary["median"]) and result["num_timesteps"] >= 64
    # PPO's pickled rollout buffer class is rebuilt only when it is SB3's default; another is refused by name.
    source, custom = tmp_path / "run" / "model.zip", tmp_path / "custom.zip"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(custom, "w") as out:
        for name in archive.namelist():
            content = archive.read(name)
            if name == "data":
                data = json.loads(content)
                data["rollout_buffer_class"]["__init__"] = "<function MyBuffer.__init__ at 0x1>"
                content = json.dumps(data).encode()
            out.writestr(name, content)
    refusal = runs.needs_trust(custom)
    assert refusal is not None and refusal.entry == "rollout_buffer_class"


def test_the_ei_prior_with_its_zero_head_is_acq_ei_and_its_kwarg_survives_a_safe_reload(tmp_path: Path) -> None:
    policy, obs = _policy(ei_prior=50.0)
    assert policy.ei_prior == 50.0 and not policy.scorer[-1].weight.any() and not policy.scorer[-1].bias.any()
    with torch.no_grad():
        actions, _, _ = policy(obs, deterministic=True)
        inputs = policy.candidate_inputs(obs)
        torch.testing.assert_close(policy.logits(inputs), 50.0 * policy.prior_log_ei(inputs))
    acq_ei = ExpectedImprovementScores(num_candidates=KWARGS["num_candidates"])
    expected, _ = acq_ei.predict(obs.numpy())
    assert obs.shape[0] == 10 and (actions.numpy() == expected).all()
    # Permutation equivariance holds with the prior (on a trained-looking, nonzero head too).
    torch.nn.init.normal_(policy.scorer[-1].weight)
    n, f = KWARGS["num_candidates"], policy.num_features
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    permuted = torch.cat([obs[:, : n * f].reshape(-1, n, f)[:, permutation].reshape(-1, n * f), obs[:, n * f :]], 1)
    with torch.no_grad():
        logits = policy.logits(policy.candidate_inputs(obs))
        torch.testing.assert_close(policy.logits(policy.candidate_inputs(permuted)), logits[:, permutation])
    # The kwarg is JSON in the constructor parameters, so the safe loader (no trust) rebuilds the same policy.
    overrides = ["env=acquisition", "agent=acquisition_ppo", "env.num_envs=2", "+agent.policy_kwargs.ei_prior=50"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *(f"env.kwargs.{key}={value}" for key, value in KWARGS.items())])
    env = make_env(cfg)
    model = build_model(cfg, env, tmp_path)
    assert model.policy.ei_prior == 50.0
    model.save(tmp_path / "model.zip")
    env.close()
    spec = {"agent": {"algo": "ppo", "policy": POLICY_NAME}}
    assert runs.needs_trust(tmp_path / "model.zip", spec=spec) is None
    loaded = runs.load_model(tmp_path / "model.zip", spec=spec)  # without trust: nothing unpickled
    assert isinstance(loaded.policy, CandidateScorePolicy) and loaded.policy.ei_prior == 50.0
    for a, b in zip(model.policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_ei_prior_zero_is_the_plain_scorer_and_a_bad_value_is_refused() -> None:
    plain, obs = _policy()
    zero, _ = _policy(ei_prior=0.0)
    assert (
        "ei_prior" not in plain._get_constructor_parameters() and "ei_prior" not in zero._get_constructor_parameters()
    )
    for a, b in zip(plain.state_dict().values(), zero.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        inputs = plain.candidate_inputs(obs)
        assert torch.equal(plain.logits(inputs), zero.logits(inputs))
    for bad in (-1.0, float("nan"), float("inf"), "5", True):
        with pytest.raises(ValueError, match="ei_prior must be a finite number >= 0"):
            _policy(ei_prior=bad)


def test_prior_kl_replaces_the_entropy_by_minus_the_kl_to_the_ei_prior() -> None:
    policy, obs = _policy(ei_prior=5.0, prior_kl=True)
    assert policy._get_constructor_parameters()["prior_kl"] is True
    actions = policy.one_hot(torch.zeros(obs.shape[0], dtype=torch.long))
    _, _, negative_kl = policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(negative_kl, torch.zeros(obs.shape[0]), atol=1e-6, rtol=0)  # untrained: the prior
    torch.nn.init.normal_(policy.scorer[-1].weight, std=0.5)
    _, _, negative_kl = policy.evaluate_actions(obs, actions)
    inputs = policy.candidate_inputs(obs)
    pi = torch.distributions.Categorical(logits=policy.logits(inputs))
    prior = torch.distributions.Categorical(logits=5.0 * policy.prior_log_ei(inputs))
    torch.testing.assert_close(negative_kl, -torch.distributions.kl_divergence(pi, prior))
    assert (negative_kl < 0).all()
    negative_kl.sum().backward()  # a gradient toward the prior reaches the scorer
    assert policy.scorer[-1].weight.grad.abs().sum() > 0
    for bad in ({"prior_kl": True}, {"ei_prior": 5.0, "prior_kl": 1}):
        with pytest.raises(ValueError, match="prior_kl must be a bool, True only with ei_prior > 0"):
            _policy(**bad)
