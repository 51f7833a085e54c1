"""RL² (or PPO) training on a batched MetaOpt env, from a composed Hydra config.

:func:`train` is what ``metaopt-train`` runs, importable so that notebooks and tests compose the
same config in code (Hydra's compose API over :data:`CONFIG_DIR`) and train without a subprocess:

    from hydra import compose, initialize_config_dir
    from agents.rl2.training import CONFIG_DIR, train

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["budget=smoke", "out_dir=/tmp/run"])
    result = train(cfg)

Checkpoints go to ``<out_dir>/checkpoints`` every ``budget.checkpoint_every`` steps; training the
same config again resumes from the latest one. TensorBoard logs go to ``<out_dir>/tb``. With
``evaluate`` the trained agent is compared with the hand-designed baselines (tuned on the training
split) on held-out test tasks of the env's evaluation suite.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypedDict

import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

import metaopt_envs
from agents.controllers.base import core_of
from agents.rl2.runs import run_spec, save_model, write_run_spec

CONFIG_DIR = str((Path(__file__).resolve().parents[1] / "configs").resolve())
"""The shipped Hydra configs (``train.yaml`` composes ``env``, ``agent`` and ``budget``): the checkout's
top-level ``configs/`` (``agents/configs`` links to it), or the copy an installed wheel ships in ``agents``."""


class TrainResult(TypedDict, total=False):
    """What :func:`train` returns; ``evaluation`` only with ``cfg.evaluate``."""

    model: str
    """Path of the final ``model.zip``."""
    num_timesteps: int
    """Environment steps the model has been trained for (across resumes)."""
    resumed_from: str | None
    """The checkpoint this call resumed from, or ``None`` for a fresh run."""
    evaluation: dict[str, Any]
    """The comparison with the tuned baselines: ``summaries`` and ``tuning`` (as in ``results.json``)."""


def algorithms() -> dict[str, type[BaseAlgorithm]]:
    """``agent.algo`` -> its SB3 class (imported on call: sb3-contrib is slow to import)."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import PPO

    from agents.rl2.fast_recurrent import FastRecurrentPPO

    return {"fast_recurrent_ppo": FastRecurrentPPO, "recurrent_ppo": RecurrentPPO, "ppo": PPO}


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the most steps in ``directory`` (SB3's ``<prefix>_<steps>_steps.zip``)."""
    found = [
        (int(m.group(1)), p) for p in directory.glob("*_steps.zip") if (m := re.search(r"_(\d+)_steps\.zip$", p.name))
    ]
    return max(found)[1] if found else None


def config_dict(node: Any) -> dict[str, Any]:
    """A config mapping (``cfg.env.kwargs``, ``cfg.agent.hyperparameters``) as a plain, resolved dict."""
    container = OmegaConf.to_container(node, resolve=True)
    if not isinstance(container, dict):
        raise TypeError(f"expected a mapping in the config, got {type(container).__name__}: {container!r}")
    return {str(key): value for key, value in container.items()}


def make_env(cfg: DictConfig) -> VecEnv:
    """The batched SB3 VecEnv of ``cfg.env`` (RL² trials if ``episodes_per_trial``), monitored."""
    from stable_baselines3.common.vec_env import VecMonitor

    env = metaopt_envs.make_sb3_vec_env(
        cfg.env.id,
        num_envs=cfg.env.num_envs,
        seed=cfg.seed,
        episodes_per_trial=cfg.env.get("episodes_per_trial"),
        **config_dict(cfg.env.kwargs),
    )
    return VecMonitor(env)


def build_model(cfg: DictConfig, env: VecEnv, out_dir: Path) -> BaseAlgorithm:
    """A fresh ``cfg.agent.algo`` on ``env``; ``n_steps: null`` means one whole trial per env and rollout."""
    algo = _algorithm(cfg)
    hyperparameters = config_dict(cfg.agent.hyperparameters)
    if hyperparameters.get("n_steps") is None:
        decisions = core_of(env).num_decisions
        hyperparameters["n_steps"] = int(cfg.env.get("episodes_per_trial") or 1) * int(decisions)
    return algo(
        cfg.agent.policy,
        env,
        seed=cfg.seed,
        device="cpu",
        tensorboard_log=str(out_dir / "tb"),
        policy_kwargs=config_dict(cfg.agent.policy_kwargs),
        **hyperparameters,
    )


def train(cfg: DictConfig) -> TrainResult:
    """Train (or resume) as ``cfg`` says; returns paths and, with ``cfg.evaluate``, the results."""
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

    algo = _algorithm(cfg)
    torch.set_num_threads(int(cfg.agent.torch_threads))
    out_dir = Path(cfg.out_dir)
    checkpoints = out_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    env = make_env(cfg)
    resume_from = latest_checkpoint(checkpoints)
    if resume_from is not None:
        model = algo.load(resume_from, env=env, device="cpu", tensorboard_log=str(out_dir / "tb"))
        print(f"resuming from {resume_from} at {model.num_timesteps} steps", flush=True)
    else:
        model = build_model(cfg, env, out_dir)
    callbacks: list[BaseCallback] = [
        CheckpointCallback(
            save_freq=max(int(cfg.budget.checkpoint_every) // int(cfg.env.num_envs), 1),
            save_path=str(checkpoints),
            name_prefix="model",
        )
    ]
    run = None
    if cfg.wandb.mode != "disabled":
        import wandb
        from wandb.integration.sb3 import WandbCallback

        run = wandb.init(
            project=cfg.wandb.project,
            mode=cfg.wandb.mode,
            dir=str(out_dir),
            sync_tensorboard=True,
            config=config_dict(cfg),
        )
        callbacks.append(WandbCallback())
    remaining = int(cfg.budget.total_timesteps) - model.num_timesteps
    if remaining > 0:
        model.learn(
            total_timesteps=remaining,
            callback=callbacks,
            progress_bar=bool(cfg.progress_bar),
            reset_num_timesteps=resume_from is None,
            tb_log_name="run",
        )
    model_path = out_dir / "model.zip"
    spec = run_spec(cfg, model)  # the run describes itself: in the zip (a copied model.zip) and as spec.json
    save_model(model, model_path, spec)
    write_run_spec(out_dir, spec)
    model.save(checkpoints / f"model_{model.num_timesteps}_steps.zip")  # a later, larger budget resumes here
    if run is not None:
        run.finish()
    result = TrainResult(
        model=str(model_path),
        num_timesteps=model.num_timesteps,
        resumed_from=str(resume_from) if resume_from else None,
    )
    if cfg.evaluate:
        result["evaluation"] = evaluate_against_baselines(model, cfg, out_dir)
    return result


def evaluate_against_baselines(model: Any, cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The trained agent and the tuned baselines on the same held-out test tasks (the env's suite);
    prints the table and writes ``results.md``, ``results.json`` and ``curves.png`` to ``out_dir``."""
    from agents.evaluation.report import compare_with_baselines
    from agents.evaluation.suites import get_suite

    report, table = compare_with_baselines(
        get_suite(cfg.env.id),
        model,
        f"RL² ({cfg.agent.algo})",
        config_dict(cfg.env.kwargs),
        int(cfg.eval_num_tasks),
        tuple(cfg.eval_seeds),
        int(cfg.tune_tasks),
        cfg.env.get("episodes_per_trial"),
        out_dir,
    )
    print("\n" + table, flush=True)
    return report


def _algorithm(cfg: DictConfig) -> type[BaseAlgorithm]:
    algos = algorithms()
    if cfg.agent.algo not in algos:
        raise ValueError(f"agent.algo must be one of {sorted(algos)}, got {cfg.agent.algo!r}")
    return algos[cfg.agent.algo]


__all__ = [
    "CONFIG_DIR",
    "TrainResult",
    "algorithms",
    "build_model",
    "config_dict",
    "evaluate_against_baselines",
    "latest_checkpoint",
    "make_env",
    "train",
]
