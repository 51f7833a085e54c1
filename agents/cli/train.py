"""``metaopt-train``: train an RL² (or PPO) agent on a batched MetaOpt env from Hydra configs.

    metaopt-train                                  # configs/train.yaml: RL² on quadratics, demo budget
    metaopt-train env=lr_mixture budget=reference  # compose other config groups
    metaopt-train agent.hyperparameters.n_epochs=8 seed=3
    metaopt-train --multirun seed=0,1,2            # a sweep (Hydra's launchers send it to a cluster)

Checkpoints go to ``<out_dir>/checkpoints`` every ``budget.checkpoint_every``
steps; running the same command again resumes from the latest one (a killed
run continues where it stopped). TensorBoard logs go to ``<out_dir>/tb``;
``wandb.mode=offline`` adds wandb's SB3 integration without any network call.
With ``evaluate=true`` the trained agent is compared with the hand-designed
baselines (tuned on the training split) on held-out test tasks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import metaopt_envs
from agents.controllers.base import core_of

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def algorithms() -> dict[str, Any]:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import PPO

    from agents.rl2.fast_recurrent import FastRecurrentPPO

    return {"fast_recurrent_ppo": FastRecurrentPPO, "recurrent_ppo": RecurrentPPO, "ppo": PPO}


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the most steps in ``directory`` (SB3's ``<prefix>_<steps>_steps.zip``)."""
    found = [(int(m.group(1)), p) for p in directory.glob("*_steps.zip") if (m := re.search(r"_(\d+)_steps\.zip$", p.name))]
    return max(found)[1] if found else None


def make_env(cfg: DictConfig):
    from stable_baselines3.common.vec_env import VecMonitor

    env = metaopt_envs.make_sb3_vec_env(
        cfg.env.id,
        num_envs=cfg.env.num_envs,
        seed=cfg.seed,
        episodes_per_trial=cfg.env.get("episodes_per_trial"),
        **OmegaConf.to_container(cfg.env.kwargs),
    )
    return VecMonitor(env)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume) as ``cfg`` says; returns paths and, with ``evaluate``, the results."""
    from stable_baselines3.common.callbacks import CheckpointCallback

    algos = algorithms()
    if cfg.agent.algo not in algos:
        raise ValueError(f"agent.algo must be one of {sorted(algos)}, got {cfg.agent.algo!r}")
    torch.set_num_threads(int(cfg.agent.torch_threads))
    out_dir = Path(cfg.out_dir)
    checkpoints = out_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    env = make_env(cfg)
    algo = algos[cfg.agent.algo]
    resume_from = latest_checkpoint(checkpoints)
    if resume_from is not None:
        model = algo.load(resume_from, env=env, device="cpu", tensorboard_log=str(out_dir / "tb"))
        print(f"resuming from {resume_from} at {model.num_timesteps} steps", flush=True)
    else:
        hyperparameters = OmegaConf.to_container(cfg.agent.hyperparameters)
        if hyperparameters.get("n_steps") is None:  # one whole trial per env and rollout
            decisions = core_of(env).num_decisions
            hyperparameters["n_steps"] = int(cfg.env.get("episodes_per_trial") or 1) * int(decisions)
        model = algo(
            cfg.agent.policy,
            env,
            seed=cfg.seed,
            device="cpu",
            tensorboard_log=str(out_dir / "tb"),
            policy_kwargs=OmegaConf.to_container(cfg.agent.policy_kwargs),
            **hyperparameters,
        )
    callbacks: list[Any] = [
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
            project=cfg.wandb.project, mode=cfg.wandb.mode, dir=str(out_dir), sync_tensorboard=True,
            config=OmegaConf.to_container(cfg, resolve=True),
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
    model.save(model_path)
    model.save(checkpoints / f"model_{model.num_timesteps}_steps.zip")  # a later, larger budget resumes here
    if run is not None:
        run.finish()
    result: dict[str, Any] = {"model": str(model_path), "num_timesteps": model.num_timesteps, "resumed_from": str(resume_from) if resume_from else None}
    if cfg.evaluate:
        result["evaluation"] = evaluate_against_baselines(model, cfg, out_dir)
    return result


def evaluate_against_baselines(model: Any, cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The trained agent and the tuned baselines on the same held-out test tasks (the env's suite)."""
    from agents.evaluation.report import compare_with_baselines
    from agents.evaluation.suites import get_suite

    report, table = compare_with_baselines(
        get_suite(cfg.env.id), model, f"RL² ({cfg.agent.algo})", OmegaConf.to_container(cfg.env.kwargs),
        int(cfg.eval_num_tasks), tuple(cfg.eval_seeds), int(cfg.tune_tasks), cfg.env.get("episodes_per_trial"), out_dir,
    )
    print("\n" + table, flush=True)
    return report


def cli() -> None:
    """Console entry point (``metaopt-train``), Hydra-driven."""
    import hydra

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def _main(cfg: DictConfig) -> None:
        train(cfg)

    _main()


if __name__ == "__main__":
    cli()
