"""Checkpoints of a training run that resume exactly: the model, the env's task stream and the RNGs.

A checkpoint is a pair in ``<out_dir>/checkpoints``: ``model_<steps>_steps.zip`` (SB3's save: the
policy, its optimizer, ``num_timesteps``; with the run spec, like ``model.zip``, so that
``metaopt-bench --agents <out_dir>/checkpoints/model_<steps>_steps.zip`` evaluates it) and
``model_<steps>_steps.state.pt`` (tensors and numbers only, loaded with ``weights_only=True``): the
env's per-row key and episode counters
(``row_key``, ``episode_index``, ``inner_episode``, ``task_key`` of the family core, the RL² trial's
``episodes_done``), the rows whose episode had just started, and the torch, numpy and Python RNG
states. Both files are written to a temporary file in the same directory and moved into place with
:func:`os.replace`, the state first, so a kill leaves the previous checkpoint intact.

:class:`RolloutCheckpoint` writes one at a rollout boundary (when the next rollout starts, i.e.
after the update on the last one: every counted step has been trained on, and no step of a pending
rollout is in the model), and one when training ends. :func:`restore_env` puts the env back: a row
whose episode had just started restarts that same episode (the env's tasks are a pure function of
the counters, so it is the very same task and initialization); a row caught mid-episode (an early
termination broke the trial/rollout alignment) moves on to its next task, never back to one it
has seen.
"""

from __future__ import annotations

import io
import os
import random
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from metaopt_envs.core import BatchedCore

COUNTERS = ("row_key", "episode_index", "inner_episode", "task_key")
"""The family core's per-row key bookkeeping (see :class:`metaopt_envs.core.BatchedCore`)."""

_STEPS = re.compile(r"^model_(\d+)_steps\.zip$")


def checkpoint_path(directory: Path, steps: int) -> Path:
    """``<directory>/model_<steps>_steps.zip`` (its state file: :func:`state_path`)."""
    return directory / f"model_{steps}_steps.zip"


def state_path(checkpoint: Path) -> Path:
    """The env and RNG state written next to ``checkpoint`` (``.zip`` -> ``.state.pt``)."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".zip") + ".state.pt")


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """``write(file)`` into a temporary file next to ``path``, flushed, then moved onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def core_of_vec_env(env: Any) -> BatchedCore:
    """The (possibly RL² trial) core behind an SB3 VecEnv and its wrappers (VecMonitor)."""
    core = getattr(env.unwrapped, "core", None)
    if not isinstance(core, BatchedCore):
        raise TypeError(f"expected an SB3 VecEnv over a MetaOpt batched core, got {type(env).__name__}")
    return core


def capture_state(model: BaseAlgorithm) -> dict[str, Any]:
    """What :func:`restore_env` and :func:`restore_rng` need, as tensors and plain numbers."""
    core = core_of_vec_env(model.get_env())
    family = core.unwrapped
    env_state = {name: getattr(family, name).detach().cpu().clone() for name in COUNTERS}
    if core is not family:
        env_state["episodes_done"] = core.episodes_done.detach().cpu().clone()  # type: ignore[attr-defined]
    starts = model._last_episode_starts
    if starts is None:
        starts = np.ones(core.num_envs, dtype=bool)
    env_state["episode_starts"] = torch.as_tensor(np.asarray(starts, dtype=bool))
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    return {
        "num_timesteps": int(model.num_timesteps),
        "env": env_state,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached_gaussian": float(np_state[4]),
            },
            "python": _python_state_to_plain(random.getstate()),
        },
    }


def save_checkpoint(model: BaseAlgorithm, directory: Path, spec: Mapping[str, Any] | None = None) -> Path:
    """Write ``model_<num_timesteps>_steps.zip`` and its state file atomically; the zip's path.

    With ``spec`` (the run spec, :func:`agents.rl2.runs.run_spec`) the zip carries it as a saved model
    does, so ``metaopt-bench`` evaluates a checkpoint on the env settings and trials it was trained with."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, int(model.num_timesteps))
    state = capture_state(model)
    atomic_write(state_path(path), lambda file: torch.save(state, file))

    def write(file: Any) -> None:
        from agents.rl2.runs import save_model

        buffer = io.BytesIO()
        if spec is None:
            model.save(buffer)
        else:
            save_model(model, buffer, spec)
        file.write(buffer.getvalue())

    atomic_write(path, write)
    return path


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The state file of ``checkpoint``; raises if it is missing or unreadable."""
    state = torch.load(state_path(checkpoint), weights_only=True)
    if not isinstance(state, dict) or {"num_timesteps", "env", "rng"} - set(state):
        raise ValueError(f"{state_path(checkpoint)} is not a checkpoint state file")
    return state


def check_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """The state of a complete, readable checkpoint; raises (naming the file) otherwise."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            names = set(archive.namelist())
            if "data" not in names or "policy.pth" not in names:
                raise ValueError(f"it lacks {sorted({'data', 'policy.pth'} - names)}")
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} is corrupt")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"checkpoint {checkpoint} is corrupt or incomplete: {error}") from error
    if not state_path(checkpoint).exists():
        raise ValueError(
            f"checkpoint {checkpoint} has no state file {state_path(checkpoint).name} (an older version's "
            "checkpoint, or one whose write was interrupted): it cannot continue the task stream"
        )
    try:
        state = load_state(checkpoint)
    except Exception as error:
        raise ValueError(f"checkpoint state {state_path(checkpoint)} is missing or corrupt: {error}") from error
    return state


def checkpoints_newest_first(directory: Path) -> list[Path]:
    """The ``model_<steps>_steps.zip`` files in ``directory``, most steps first."""
    found = [(int(m.group(1)), p) for p in directory.glob("model_*_steps.zip") if (m := _STEPS.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def valid_checkpoints(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The complete checkpoints in ``directory``, newest first, with their states; a corrupt or
    incomplete one is skipped with a warning that names it."""
    for path in checkpoints_newest_first(directory):
        try:
            yield path, check_checkpoint(path)
        except ValueError as error:
            warnings.warn(f"skipping {error}; falling back to an earlier checkpoint", stacklevel=2)


def restore_rng(state: dict[str, Any]) -> None:
    """The torch, numpy and Python global RNGs as they were when the checkpoint was written."""
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np_state = rng["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    python = rng["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


def restore_env(model: BaseAlgorithm, state: dict[str, Any]) -> int:
    """Put the model's env back on its task stream as the checkpoint left it; sets the model's
    ``_last_obs`` and ``_last_episode_starts`` (so ``learn`` does not reset the env). Returns the
    number of rows caught mid-episode, which moved on to their next task."""
    core = core_of_vec_env(model.get_env())
    family = core.unwrapped
    saved = state["env"]
    device = family.row_key.device
    for name in COUNTERS:
        getattr(family, name).copy_(saved[name].to(device))
    if core is not family and "episodes_done" in saved:
        core.episodes_done.copy_(saved["episodes_done"].to(device))  # type: ignore[attr-defined]
    started = saved["episode_starts"].to(device=device, dtype=torch.bool)
    seeded = started & (family.episode_index == 0) & (family.inner_episode == 0)
    if bool(seeded.any()):  # the first episode since seeding: the seed's reset again
        core.reset_rows(seeded, keys=family.row_key.clone())
    replay = started & ~seeded
    family.episode_index[replay] -= 1  # the reset of the episode that had just started, again
    core.reset_rows(replay)
    mid = ~started  # its episode's state is not in the checkpoint: on to the next task
    core.reset_rows(mid)
    vec_env: Any = model.env.unwrapped if model.env is not None else None
    vec_env._seeded = True  # a later reset() must not draw new seeds
    model._last_obs = core.observe().cpu().numpy()
    model._last_episode_starts = np.ones(core.num_envs, dtype=bool)
    return int(mid.sum())


class RolloutCheckpoint(BaseCallback):
    """A checkpoint when a rollout starts at least ``every`` steps after the last one, and at the end;
    ``spec(model)``, if given, is the run spec each checkpoint carries."""

    def __init__(
        self, directory: Path, every: int, spec: Callable[[BaseAlgorithm], Mapping[str, Any]] | None = None
    ) -> None:
        super().__init__()
        self.directory, self.every, self.spec = directory, int(every), spec
        self.last_saved: int | None = None
        self.saved: list[Path] = []

    def _on_training_start(self) -> None:
        self.last_saved = int(self.model.num_timesteps)

    def _on_rollout_start(self) -> None:
        assert self.last_saved is not None
        if self.model.num_timesteps - self.last_saved >= self.every:
            self._save()

    def _on_training_end(self) -> None:
        if self.model.num_timesteps != self.last_saved:
            self._save()

    def _on_step(self) -> bool:
        return True

    def _save(self) -> None:
        spec = self.spec(self.model) if self.spec is not None else None
        self.saved.append(save_checkpoint(self.model, self.directory, spec))
        self.last_saved = int(self.model.num_timesteps)


def _python_state_to_plain(state: tuple[Any, ...]) -> list[Any]:
    return [state[0], list(state[1]), state[2]]


__all__ = [
    "COUNTERS",
    "RolloutCheckpoint",
    "atomic_write",
    "capture_state",
    "check_checkpoint",
    "checkpoint_path",
    "checkpoints_newest_first",
    "load_state",
    "restore_env",
    "restore_rng",
    "save_checkpoint",
    "state_path",
    "valid_checkpoints",
]
