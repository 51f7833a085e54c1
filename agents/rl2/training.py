"""RL² (or PPO) training on a batched MetaOpt env, from a composed Hydra config.

:func:`train` is what ``metaopt-train`` runs, importable so that notebooks and tests compose the
same config in code (Hydra's compose API over :data:`CONFIG_DIR`) and train without a subprocess:

    from hydra import compose, initialize_config_dir
    from agents.rl2.training import CONFIG_DIR, train

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["budget=smoke", "out_dir=/tmp/run"])
    result = train(cfg)

A run directory belongs to one configuration. The first run writes ``<out_dir>/config.yaml``
(resolved); training into a directory that has one compares the new composed config with it:

- the same training configuration resumes (evaluation and logging settings, ``out_dir``,
  ``evaluate``, ``eval_*``, ``tune_tasks``, ``progress_bar``, ``wandb``, and
  ``budget.checkpoint_every`` may differ); a finished run trains nothing more;
- a larger ``budget.total_timesteps`` extends the run (printed);
- anything else (another seed, env, agent, hyperparameter, a smaller budget) is refused with a
  ValueError: resume with the stored configuration, or start over with another ``out_dir=...`` or
  ``overwrite=true`` (which deletes the old run's checkpoints, TensorBoard logs and model).

Checkpoints (:mod:`agents.rl2.checkpoints`) go to ``<out_dir>/checkpoints`` at the first rollout
boundary ``budget.checkpoint_every`` steps after the last one, and when training ends; each is
written atomically with the env's task-stream counters and the RNG states, so a killed run resumes
bit for bit where its last checkpoint was (at most one checkpoint interval is redone, no task is
replayed). A checkpoint is loaded with :func:`agents.rl2.runs.load_model`, which unpickles nothing
from it (its pickled entries are rebuilt from the config and the env). A corrupt or incomplete
checkpoint is skipped with a warning naming it, and the previous one is used. TensorBoard logs go
to ``<out_dir>/tb/run_1``, one run across resumes (what a killed run logged after its checkpoint is
purged). ``budget.total_timesteps`` is trained in whole rollouts
(``n_steps x num_envs``; the rounding is printed). With ``evaluate`` the trained agent is compared
with the hand-designed baselines (tuned on the training split) on held-out test tasks of the env's
evaluation suite.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TypedDict

import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

import metaopt_envs
from agents.controllers.base import core_of
from agents.rl2.runs import load_model, run_spec, save_model, write_run_spec

CONFIG_DIR = str((Path(__file__).resolve().parents[1] / "configs").resolve())
"""The shipped Hydra configs (``train.yaml`` composes ``env``, ``agent`` and ``budget``): the checkout's
top-level ``configs/`` (``agents/configs`` links to it), or the copy an installed wheel ships in ``agents``."""

TB_LOG_NAME = "run"
"""TensorBoard logs go to ``<out_dir>/tb/run_1``, one run across resumes."""

NOT_TRAINING = (
    "out_dir",
    "overwrite",
    "evaluate",
    "eval_num_tasks",
    "eval_seeds",
    "tune_tasks",
    "progress_bar",
    "wandb",
)
"""Top-level config keys that do not change what is trained: they may differ when a run resumes."""

LOG = logging.getLogger(__name__)
"""What a run does, in ``<out_dir>/train.log`` (:func:`run_log`); not propagated to Hydra's handlers."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOG.propagate = False

AGENT_KEYS = (
    "algo",
    "policy",
    "torch_threads",
    "policy_kwargs",
    "hyperparameters",
    "reward_scale",
    "reward_shaping",
    "kickstart",
)
BUDGET_KEYS = ("total_timesteps", "checkpoint_every")


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

    from agents.rl2.acquisition_policy import AcquisitionPPO
    from agents.rl2.fast_recurrent import FastRecurrentPPO

    # "ppo" is SB3's PPO with one more policy alias: CandidateScorePolicy (MetaOpt-Acquisition-v0).
    return {"fast_recurrent_ppo": FastRecurrentPPO, "recurrent_ppo": RecurrentPPO, "ppo": AcquisitionPPO}


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
    """The batched SB3 VecEnv of ``cfg.env`` (RL² trials if ``episodes_per_trial``), monitored;
    with ``agent.reward_scale`` the learner sees each family's rewards scaled (:mod:`agents.rl2.reward_scale`)."""
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.rl2.reward_scale import FamilyRewardScale, FinalLossReward

    env = metaopt_envs.make_sb3_vec_env(
        cfg.env.id,
        num_envs=cfg.env.num_envs,
        seed=cfg.seed,
        episodes_per_trial=cfg.env.get("episodes_per_trial"),
        **config_dict(cfg.env.kwargs),
    )
    monitored: VecEnv = VecMonitor(env)
    if cfg.agent.get("reward_shaping"):
        monitored = FinalLossReward(monitored, cfg.agent.hyperparameters.get("gamma", 0.99))
    reward_scale = cfg.agent.get("reward_scale")
    return FamilyRewardScale(monitored, config_dict(reward_scale)) if reward_scale else monitored


def n_steps(cfg: DictConfig, env: VecEnv) -> int:
    """Steps per env and rollout: ``agent.hyperparameters.n_steps``, or one whole trial if it is null."""
    configured = cfg.agent.hyperparameters.get("n_steps")
    if configured is not None:
        return int(configured)
    return int(cfg.env.get("episodes_per_trial") or 1) * int(core_of(env).num_decisions)


def check_config(cfg: DictConfig, env: VecEnv | None = None) -> None:
    """The budget and the keys of ``agent`` and ``budget``; a ValueError names the key, value and what is allowed.

    ``budget.total_timesteps`` and ``budget.checkpoint_every`` are positive integers; with ``env``,
    ``checkpoint_every`` is at least one rollout (``n_steps x num_envs``): checkpoints are written at
    rollout boundaries only.
    """
    for group, known in (("agent", AGENT_KEYS), ("budget", BUDGET_KEYS)):
        for key in cfg[group]:
            if key not in known:
                hint = f" (PPO's arguments go under {group}.hyperparameters)" if group == "agent" else ""
                raise ValueError(f"{group}.{key} is not a key of {group}; the keys are {', '.join(known)}{hint}")
    shaping = cfg.agent.get("reward_shaping")
    if shaping is not None:
        from agents.rl2.reward_scale import REWARD_SHAPINGS

        if shaping not in REWARD_SHAPINGS:
            raise ValueError(
                f"agent.reward_shaping must be null or one of {', '.join(REWARD_SHAPINGS)}, got {shaping!r}"
            )
    kickstart = cfg.agent.get("kickstart")
    if kickstart:
        from agents.rl2.kickstart import check_kickstart

        if cfg.agent.algo != "fast_recurrent_ppo":
            raise ValueError(f"agent.kickstart needs agent.algo fast_recurrent_ppo, got {cfg.agent.algo!r}")
        check_kickstart(config_dict(kickstart))
    for key in BUDGET_KEYS:
        value = cfg.budget[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"budget.{key} must be a positive integer (environment steps), got {value!r}")
    if env is not None:
        rollout = n_steps(cfg, env) * env.num_envs
        every = int(cfg.budget.checkpoint_every)
        if every < rollout:
            raise ValueError(
                f"budget.checkpoint_every must be at least one rollout ({rollout} steps = n_steps "
                f"{n_steps(cfg, env)} x num_envs {env.num_envs}): checkpoints are written at rollout "
                f"boundaries, got {every}"
            )


def training_config(node: Any) -> dict[str, Any]:
    """The part of a config that decides what is trained, flattened to ``"a.b": value``: everything
    but :data:`NOT_TRAINING`, ``hydra`` and ``budget.checkpoint_every``."""
    container = OmegaConf.to_container(node, resolve=False)
    if not isinstance(container, dict):
        raise TypeError(f"expected a config mapping, got {type(container).__name__}")
    kept = {k: v for k, v in container.items() if k not in NOT_TRAINING and k != "hydra"}
    resolved = OmegaConf.to_container(OmegaConf.create(kept), resolve=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value

    walk("", resolved)
    flat.pop("budget.checkpoint_every", None)
    return flat


def claim_run_dir(cfg: DictConfig, out_dir: Path) -> None:
    """Make ``out_dir`` the directory of ``cfg``'s run, or refuse (ValueError) if it holds another's.

    A directory with a ``config.yaml`` resumes only the same training configuration (see
    :func:`training_config`); a larger ``budget.total_timesteps`` extends the run. ``overwrite=true``
    deletes the old run's checkpoints, TensorBoard logs and model first.
    """
    stored_path = out_dir / "config.yaml"
    checkpoints = out_dir / "checkpoints"
    if cfg.get("overwrite"):
        for old in (checkpoints, out_dir / "tb"):
            shutil.rmtree(old, ignore_errors=True)
        for name in ("model.zip", "config.yaml"):
            (out_dir / name).unlink(missing_ok=True)
    elif stored_path.exists():
        stored, new = training_config(OmegaConf.load(stored_path)), training_config(cfg)
        budget = "budget.total_timesteps"
        extended = stored.get(budget, 0) < new.get(budget, 0)
        changed = [k for k in sorted(stored.keys() | new.keys()) if stored.get(k) != new.get(k)]
        changed = [k for k in changed if not (k == budget and extended)]
        if changed:
            shown = ", ".join(f"{k}: {stored.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise ValueError(
                f"{out_dir} holds a run of another configuration ({shown}{more}); rerun with its own "
                f"configuration ({stored_path}) to resume it, or start over with another out_dir=... or "
                "overwrite=true"
            )
        if not extended:
            return
        say(f"extending the run in {out_dir} from {stored[budget]} to {new[budget]} steps")
    elif any(checkpoints.glob("*_steps.zip")):
        raise ValueError(
            f"{out_dir} holds checkpoints but no config.yaml to compare with; start over with another "
            "out_dir=... or overwrite=true"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    from agents.rl2.checkpoints import atomic_write

    text = OmegaConf.to_yaml(cfg, resolve=True).encode()
    atomic_write(stored_path, lambda file: file.write(text))


def rollout_size(model: BaseAlgorithm) -> int:
    """Environment steps per rollout: ``n_steps x num_envs``."""
    return int(model.n_steps) * int(model.n_envs)  # type: ignore[attr-defined]


def agent_label(algo: str) -> str:
    """The results name of a trained agent: ``RL² (<algo>)`` for a memory (recurrent) algorithm,
    ``PPO (no memory)`` for the feed-forward ``ppo`` ablation."""
    return "PPO (no memory)" if algo == "ppo" else f"RL² ({algo})"


def show_progress(cfg: DictConfig) -> bool:
    """SB3's progress bar: with ``cfg.progress_bar`` and only when stderr is a terminal (not in
    tests, CI logs or a redirected run, where a bar would fill the log with redraws)."""
    return bool(cfg.get("progress_bar")) and sys.stderr.isatty()


def run_log(out_dir: Path) -> logging.Handler:
    """Attach a handler appending :data:`LOG` to ``<out_dir>/train.log`` (resumes append); remove it when done."""
    handler = logging.FileHandler(out_dir / "train.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # Hydra's root handlers would print it again (and write it twice)
    return handler


def say(message: str) -> None:
    """Print ``message`` and log it to ``train.log``."""
    print(message, flush=True)
    LOG.info(message)


def summary(cfg: DictConfig) -> str:
    """One line of what is trained: env, agent, seed, budget and the hyperparameters set."""
    hyper = ", ".join(f"{k}={v}" for k, v in config_dict(cfg.agent.hyperparameters).items())
    return (
        f"training {agent_label(str(cfg.agent.algo))} with {cfg.agent.policy} on {cfg.env.id} "
        f"{config_dict(cfg.env.kwargs)} with {cfg.env.num_envs} envs, episodes_per_trial "
        f"{cfg.env.get('episodes_per_trial')}, seed {cfg.seed}; budget {cfg.budget.total_timesteps} steps, "
        f"a checkpoint every {cfg.budget.checkpoint_every}; hyperparameters: {hyper}"
        + (f"; reward scales {config_dict(cfg.agent.reward_scale)}" if cfg.agent.get("reward_scale") else "")
        + (f"; reward shaping {cfg.agent.reward_shaping}" if cfg.agent.get("reward_shaping") else "")
        + (f"; kickstarted by {config_dict(cfg.agent.kickstart)}" if cfg.agent.get("kickstart") else "")
    )


def build_model(cfg: DictConfig, env: VecEnv, out_dir: Path) -> BaseAlgorithm:
    """A fresh ``cfg.agent.algo`` on ``env``; ``n_steps: null`` means one whole trial per env and rollout."""
    algo = _algorithm(cfg)
    hyperparameters = config_dict(cfg.agent.hyperparameters)
    hyperparameters["n_steps"] = n_steps(cfg, env)
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
    """Train (or resume) as ``cfg`` says; returns paths and, with ``cfg.evaluate``, the results.

    What it does goes to ``<out_dir>/train.log`` too (appended across resumes): the config summary,
    the budget and its rounding, the checkpoint it resumes from and each it writes, the evaluation, the paths."""
    algo = _algorithm(cfg)
    check_config(cfg)
    torch.set_num_threads(int(cfg.agent.torch_threads))
    out_dir = Path(cfg.out_dir)
    env = make_env(cfg)
    check_config(cfg, env)
    handler = run_log(out_dir) if out_dir.is_dir() else None  # a refused directory exists already
    try:
        claim_run_dir(cfg, out_dir)
        handler = handler or run_log(out_dir)
        return _train(cfg, algo, env, out_dir)
    except Exception as error:
        LOG.exception(f"failed: {error}")
        raise
    finally:
        if handler is not None:
            LOG.removeHandler(handler)
            handler.close()


def _train(cfg: DictConfig, algo: type[BaseAlgorithm], env: VecEnv, out_dir: Path) -> TrainResult:
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.rl2.checkpoints import (
        RolloutCheckpoint,
        checkpoints_newest_first,
        restore_env,
        restore_rng,
        valid_checkpoints,
    )

    LOG.info(f"run directory {out_dir.resolve()}; config {out_dir / 'config.yaml'}")
    say(summary(cfg))
    checkpoints = out_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    resume_from: Path | None = None
    model: BaseAlgorithm | None = None
    # The checkpoint is loaded without unpickling anything from it (its pickled entries are rebuilt from
    # the run's own spec: the config's agent and the env's spaces), so a planted payload stays inert.
    resume_spec = run_spec(cfg, env, commit="")
    for path, state in valid_checkpoints(checkpoints):
        try:
            model = load_model(path, env=env, spec=resume_spec, tensorboard_log=str(out_dir / "tb"))
        except Exception as error:  # a zip that reads but does not load: the previous one
            message = f"skipping checkpoint {path}: {error}; falling back to an earlier checkpoint"
            LOG.warning(message)
            warnings.warn(message, stacklevel=1)
            continue
        restore_rng(state)
        moved_on = restore_env(model, state)
        resume_from = path
        note = f" ({moved_on} rows caught mid-episode moved on to their next task)" if moved_on else ""
        say(f"resuming from {path} at {model.num_timesteps} steps{note}")
        break
    if model is None and checkpoints_newest_first(checkpoints):
        raise ValueError(
            f"{checkpoints} holds no complete checkpoint to resume from (see the warnings above); "
            "start over with another out_dir=... or overwrite=true"
        )
    if model is None:
        model = build_model(cfg, env, out_dir)
        LOG.info("a fresh run (no checkpoint to resume from)")
    if cfg.agent.get("kickstart"):  # not saved with the model (the teachers hold the env's core): attached here
        from agents.rl2.kickstart import Kickstart

        model.kickstart = Kickstart.from_config(env, config_dict(cfg.agent.kickstart))  # type: ignore[attr-defined]
    rollout = rollout_size(model)
    total = int(cfg.budget.total_timesteps)
    if total % rollout:
        trained = -(-total // rollout) * rollout
        say(
            f"budget.total_timesteps={total} is trained as {trained} steps: whole rollouts of {rollout} "
            f"(n_steps {model.n_steps} x num_envs {model.n_envs})"  # type: ignore[attr-defined]
        )
    else:
        LOG.info(f"budget: {total} steps, {total // rollout} rollouts of {rollout}")
    checkpointer = RolloutCheckpoint(checkpoints, int(cfg.budget.checkpoint_every), lambda m: run_spec(cfg, m))
    callbacks: list[BaseCallback] = [checkpointer, _CheckpointLog(checkpointer)]
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
        LOG.info(f"wandb ({cfg.wandb.mode}) in {out_dir}")
    remaining = total - model.num_timesteps
    if remaining > 0:
        model.set_logger(_tensorboard_logger(model, out_dir / "tb" / f"{TB_LOG_NAME}_1", model.num_timesteps))
        target = model.num_timesteps + -(-remaining // rollout) * rollout
        say(f"training to {target} steps ({model.num_timesteps} done); TensorBoard logs: {out_dir / 'tb'}")
        started = time.perf_counter()
        model.learn(  # whole rollouts (as SB3 trains anyway), so the progress bar's total is what is trained
            total_timesteps=target - model.num_timesteps,
            callback=callbacks,
            progress_bar=show_progress(cfg),
            reset_num_timesteps=resume_from is None,
            tb_log_name=TB_LOG_NAME,
        )
        LOG.info(f"trained to {model.num_timesteps} steps in {time.perf_counter() - started:.1f} s")
    else:
        say(f"the run has its whole budget ({model.num_timesteps} steps): nothing more to train")
    model_path = out_dir / "model.zip"
    spec = run_spec(cfg, model)  # the run describes itself: in the zip (a copied model.zip) and as spec.json
    save_model(model, model_path, spec)
    write_run_spec(out_dir, spec)
    LOG.info(f"model: {model_path}; run spec: {out_dir / 'spec.json'}")
    if run is not None:
        run.finish()
    result = TrainResult(
        model=str(model_path),
        num_timesteps=model.num_timesteps,
        resumed_from=str(resume_from) if resume_from else None,
    )
    if cfg.evaluate:
        result["evaluation"] = evaluate_against_baselines(model, cfg, out_dir)
        LOG.info(f"results: {out_dir / 'results.md'}, {out_dir / 'results.json'}, {out_dir / 'curves.png'}")
    return result


def final_line(result: TrainResult) -> str:
    """The last line ``metaopt-train`` prints: where the results (or, without evaluation, the model) are."""
    model = f"model: {result['model']} ({result['num_timesteps']} steps)"
    if "evaluation" in result:
        return f"results: {Path(result['model']).parent / 'results.md'} ({model})"
    return model


class _CheckpointLog:  # built lazily as a BaseCallback subclass (SB3 is imported on call)
    def __new__(cls, checkpointer: Any) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class CheckpointLog(BaseCallback):
            """Logs each checkpoint ``checkpointer`` (the callback before it) has written."""

            def __init__(self) -> None:
                super().__init__()
                self.logged = 0

            def _log_new(self) -> None:
                for path in checkpointer.saved[self.logged :]:
                    LOG.info(f"checkpoint {path} at {self.model.num_timesteps} steps")
                self.logged = len(checkpointer.saved)

            def _on_rollout_start(self) -> None:
                self._log_new()

            def _on_training_end(self) -> None:
                self._log_new()

            def _on_step(self) -> bool:
                return True

        return CheckpointLog()


def evaluate_against_baselines(model: Any, cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The trained agent and the tuned baselines on the same held-out test tasks (the env's suite);
    prints the table and writes ``results.md``, ``results.json`` and ``curves.png`` to ``out_dir``."""
    from agents.evaluation.report import compare_with_baselines
    from agents.evaluation.suites import get_suite

    report, table = compare_with_baselines(
        get_suite(cfg.env.id),
        model,
        agent_label(str(cfg.agent.algo)),
        config_dict(cfg.env.kwargs),
        int(cfg.eval_num_tasks),
        tuple(cfg.eval_seeds),
        int(cfg.tune_tasks),
        cfg.env.get("episodes_per_trial"),
        out_dir,
    )
    print("\n" + table, flush=True)
    LOG.info("evaluation (test split):\n" + table)
    return report


def _tensorboard_logger(model: BaseAlgorithm, folder: Path, start: int) -> Any:
    """SB3's logger on ``folder``; resuming at ``start`` steps, TensorBoard drops what the killed
    run logged after its checkpoint (``purge_step``), so no step appears twice."""
    import sys

    from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger, TensorBoardOutputFormat
    from torch.utils.tensorboard import SummaryWriter

    class _TensorBoard(TensorBoardOutputFormat):
        def __init__(self) -> None:  # the base opens its own writer, without purge_step
            self.writer = SummaryWriter(log_dir=str(folder), purge_step=start + 1 if start else None)
            self._is_closed = False

    formats: list[KVWriter] = [_TensorBoard()]
    if model.verbose >= 1:
        formats.insert(0, HumanOutputFormat(sys.stdout))
    return Logger(folder=str(folder), output_formats=formats)


def _algorithm(cfg: DictConfig) -> type[BaseAlgorithm]:
    algos = algorithms()
    if cfg.agent.algo not in algos:
        raise ValueError(f"agent.algo must be one of {sorted(algos)}, got {cfg.agent.algo!r}")
    return algos[cfg.agent.algo]


__all__ = [
    "CONFIG_DIR",
    "TrainResult",
    "agent_label",
    "final_line",
    "algorithms",
    "build_model",
    "check_config",
    "claim_run_dir",
    "config_dict",
    "evaluate_against_baselines",
    "latest_checkpoint",
    "make_env",
    "n_steps",
    "rollout_size",
    "show_progress",
    "train",
    "training_config",
]
