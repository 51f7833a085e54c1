"""Self-describing runs: the spec a model was trained on, saved inside the model and beside it, and safe loading.

A run directory (``metaopt-train``'s ``out_dir``) holds ``model.zip`` and ``spec.json``; the same
spec is also an entry of the zip (:data:`SPEC_ENTRY`), so a copied ``model.zip`` still says what it
is. The spec (:func:`run_spec`) records the env (id, every kwarg, ``num_envs``, ``episodes_per_trial``),
the observation and action spaces, the agent (algo, policy, policy kwargs, hyperparameters with
``n_steps`` resolved), the seed, the commit, package versions and the budget actually trained.

:func:`load_model` loads a model without executing code from the file: every cloudpickled entry of
the zip's ``data`` is replaced (SB3's ``custom_objects``) by an object rebuilt from the spec or from
the JSON-safe parts of ``data``, and the tensors load with ``torch.load(weights_only=True)``.
``trust=True`` is SB3's plain load, which unpickles the file's objects (arbitrary code): use it only
for a file you made yourself, e.g. a model with custom classes in ``policy_kwargs`` that cannot be
rebuilt from JSON.

    from agents.rl2.runs import load_model, load_trained
    model = load_model("runs/lr_quadratic-rl2-seed0")         # a run directory or a model.zip
    agent = load_trained("runs/lr_quadratic-rl2-seed0")       # the model and its spec, for evaluation
    agent.env_kwargs, agent.episodes_per_trial                # what metaopt-bench runs it with
"""

from __future__ import annotations

import datetime
import inspect
import io
import json
import re
import zipfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SPEC_ENTRY = "metaopt_spec.json"
"""The name of the spec's entry inside a saved model's zip."""
SPEC_FILE = "spec.json"
"""The spec beside the model in a run directory."""
MODEL_FILE = "model.zip"
SPEC_FORMAT = 1
TASK_SELECTION = ("task_family", "task_family_kwargs", "split")
"""Env kwargs that choose the tasks: the evaluation chooses them, not the model."""
AGENT_OPTIONS = ("action_mode", "share_filters", "hypergradient_beta")
"""Env kwargs that shape what one agent does and sees (its action mode, extra observation features), not the
tasks: a model runs with its own, and they are never handed to the other agents of a comparison."""
PACKAGES = ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "metaopt-envs", "numpy")


# --------------------------------------------------------------------------- the spec
def package_versions() -> dict[str, str]:
    """The installed version of each of :data:`PACKAGES` (``"not installed"`` where absent)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def space_to_json(space: Any) -> dict[str, Any]:
    """A ``gymnasium.spaces.Box`` as plain JSON (shape, dtype, low, high); TypeError for other spaces."""
    from gymnasium import spaces

    if not isinstance(space, spaces.Box):
        raise TypeError(f"only Box spaces are recorded in a run spec, got {space!r}")
    return {
        "type": "Box",
        "shape": list(space.shape),
        "dtype": str(space.dtype),
        "low": space.low.tolist(),
        "high": space.high.tolist(),
    }


def space_from_json(record: Mapping[str, Any]) -> Any:
    """The Box :func:`space_to_json` recorded."""
    from gymnasium import spaces

    if record.get("type") != "Box":
        raise ValueError(f"unsupported space in a run spec: {record!r}")
    dtype = np.dtype(record["dtype"])
    return spaces.Box(
        low=np.asarray(record["low"], dtype=dtype).reshape(record["shape"]),
        high=np.asarray(record["high"], dtype=dtype).reshape(record["shape"]),
        dtype=dtype,
    )


def run_spec(cfg: Any, model: Any, commit: str | None = None) -> dict[str, Any]:
    """The spec of ``model`` trained from the composed config ``cfg`` (JSON-ready).

    ``model`` may also be the run's env (its spaces; ``num_timesteps`` 0): the spec a resume loads a
    checkpoint with before there is a model."""
    from agents.evaluation.report import git_commit
    from agents.rl2.training import config_dict

    hyperparameters = config_dict(cfg.agent.hyperparameters)
    if hyperparameters.get("n_steps") is None and hasattr(model, "n_steps"):
        hyperparameters["n_steps"] = int(model.n_steps)  # the resolved "one whole trial per rollout"
    trial = cfg.env.get("episodes_per_trial")
    return {
        "format": SPEC_FORMAT,
        "env": {
            "id": str(cfg.env.id),
            "kwargs": config_dict(cfg.env.kwargs),
            "num_envs": int(cfg.env.num_envs),
            "episodes_per_trial": None if trial is None else int(trial),
        },
        "observation_space": space_to_json(model.observation_space),
        "action_space": space_to_json(model.action_space),
        "agent": {
            "algo": str(cfg.agent.algo),
            "policy": str(cfg.agent.policy),
            "policy_kwargs": config_dict(cfg.agent.policy_kwargs),
            "hyperparameters": hyperparameters,
            **({"kickstart": config_dict(cfg.agent.kickstart)} if cfg.agent.get("kickstart") else {}),
        },
        "seed": int(cfg.seed),
        "commit": commit if commit is not None else git_commit(),
        "versions": package_versions(),
        "budget": {
            "total_timesteps": int(cfg.budget.total_timesteps),
            "num_timesteps": int(getattr(model, "num_timesteps", 0)),
        },
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save_model(model: Any, path: str | Path | io.BufferedIOBase, spec: Mapping[str, Any]) -> Any:
    """``model.save(path)``, then ``spec`` as the zip's :data:`SPEC_ENTRY`; returns ``path`` (a file path,
    or a seekable binary buffer such as ``io.BytesIO``)."""
    target = Path(path) if isinstance(path, str | Path) else path
    model.save(target)
    with zipfile.ZipFile(target, "a") as archive:
        archive.writestr(SPEC_ENTRY, json.dumps(spec, indent=1))
    return target


def write_run_spec(run_dir: str | Path, spec: Mapping[str, Any]) -> Path:
    """``<run_dir>/spec.json``."""
    path = Path(run_dir) / SPEC_FILE
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return path


def model_path(path: str | Path) -> Path:
    """``path`` itself for a file, ``<path>/model.zip`` for a run directory; ValueError if neither exists."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ValueError(f"no such model file {str(path)!r}: give a model.zip or a run directory that holds one")
    return path


def read_spec(path: str | Path) -> dict[str, Any] | None:
    """The spec of a model (its zip entry) or run directory (``spec.json``, else its model's entry); None if none."""
    path = Path(path)
    if path.is_dir() and (path / SPEC_FILE).is_file():
        return dict(json.loads((path / SPEC_FILE).read_text()))
    zip_path = model_path(path)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            if SPEC_ENTRY in archive.namelist():
                return dict(json.loads(archive.read(SPEC_ENTRY)))
    except zipfile.BadZipFile as error:
        raise ValueError(f"{str(zip_path)!r} is not a saved model (not a zip file)") from error
    sibling = zip_path.parent / SPEC_FILE
    if zip_path.name == MODEL_FILE and sibling.is_file():
        return dict(json.loads(sibling.read_text()))
    return None


# --------------------------------------------------------------------------- safe loading
_CONSTANT = re.compile(r"ConstantSchedule\(val=([^)]+)\)")


class NeedsTrustError(ValueError):
    """A pickled entry of a model's ``data`` that cannot be rebuilt without unpickling it (``entry``, ``problem``):
    only SB3's own load (``trust=True``) can load the file."""

    def __init__(self, path: str | Path, entry: str, problem: str) -> None:
        self.path, self.entry, self.problem = str(path), entry, problem
        super().__init__(
            f"{path}: the model's data entry {entry!r} {problem}; "
            "load it with trust=True (trust_model=True) only if you trust the file"
        )


def _check_weights_only() -> None:
    """Refuse to load if the installed SB3 would unpickle tensors (it loads them weights-only since 2.x)."""
    import stable_baselines3
    from stable_baselines3.common import save_util

    try:
        weights_only = "weights_only=True" in inspect.getsource(save_util.load_from_zip_file)
    except (OSError, TypeError):  # installed without sources: SB3 loads weights-only since 2.3
        weights_only = tuple(int(p) for p in re.findall(r"\d+", stable_baselines3.__version__)[:2]) >= (2, 3)
    if not weights_only:
        raise RuntimeError(
            "the installed stable-baselines3 does not load tensors with torch.load(weights_only=True); "
            "upgrade it (>= 2.3), or load with trust=True if you trust the file"
        )


def _box_from_data(entry: Mapping[str, Any], key: str) -> Any:
    """A Box rebuilt from the JSON-safe fields SB3 writes beside a pickled space (shape, dtype, low, high)."""
    from gymnasium import spaces

    try:
        shape = tuple(int(n) for n in entry["_shape"])
        dtype = np.dtype(entry["dtype"])
        low, high = (np.array(_parse_array(entry[name]), dtype=dtype).reshape(shape) for name in ("low", "high"))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"cannot rebuild {key} from the model's data ({error})") from error
    return spaces.Box(low=low, high=high, dtype=dtype)


def _parse_array(text: str) -> list[float]:
    if "..." in text:
        raise ValueError("the array is abbreviated")
    return [float(token) for token in text.replace("[", " ").replace("]", " ").split()]


def _schedule(path: str | Path, entry: Mapping[str, Any], key: str, value: Any) -> Any:
    """A constant schedule (SB3's ``FloatSchedule``) from the recorded hyperparameter or the entry's repr."""
    from stable_baselines3.common.utils import FloatSchedule

    if isinstance(value, (int, float)):
        return FloatSchedule(float(value))
    match = _CONSTANT.fullmatch(str(entry.get("value_schedule", "")))
    if match is None:
        raise NeedsTrustError(
            path, key, f"is not a constant schedule ({entry.get('value_schedule')!r}): it cannot be rebuilt safely"
        )
    return FloatSchedule(float(match.group(1)))


def safe_custom_objects(path: str | Path, algo: Any, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """A replacement for every cloudpickled entry of the zip's ``data``, so SB3's load unpickles nothing.

    Spaces come from ``spec`` (else from the JSON-safe fields of ``data``), the policy class from the
    algorithm's aliases, schedules from the hyperparameters (else the constant in ``data``); buffers that
    training refills are left empty, and SB3 chooses PPO's default rollout buffer class again.
    :class:`NeedsTrustError` (a ValueError) naming the entry for anything else.
    """
    with zipfile.ZipFile(model_path(path)) as archive:
        data = json.loads(archive.read("data"))
    agent = (spec or {}).get("agent", {})
    hyperparameters = agent.get("hyperparameters", {})
    window = int(data.get("_stats_window_size", 100))
    objects: dict[str, Any] = {}
    for key, entry in data.items():
        if not (isinstance(entry, dict) and ":serialized:" in entry):
            continue
        if key in ("observation_space", "action_space"):
            objects[key] = space_from_json(spec[key]) if spec and key in spec else _box_from_data(entry, key)
        elif key == "policy_class":
            policy = agent.get("policy") or _default_policy(algo)
            if policy not in algo.policy_aliases:
                raise NeedsTrustError(
                    path, key, f"names policy {policy!r}, not one of {algo.__name__}'s {sorted(algo.policy_aliases)}"
                )
            objects[key] = algo.policy_aliases[policy]
        elif key == "lr_schedule":
            learning_rate = hyperparameters.get("learning_rate", data.get("learning_rate"))
            objects[key] = _schedule(path, entry, key, learning_rate)
        elif key in ("clip_range", "clip_range_vf"):
            objects[key] = _schedule(path, entry, key, hyperparameters.get(key))
        elif key in ("ep_info_buffer", "ep_success_buffer"):
            objects[key] = deque(maxlen=window)
        elif key == "rollout_buffer_class":  # PPO's: None lets SB3 choose its default buffer again
            if not re.fullmatch(
                r"<function (Dict)?RolloutBuffer\.__init__ at 0x[0-9a-f]+>", str(entry.get("__init__"))
            ):
                raise NeedsTrustError(path, key, "is not SB3's default rollout buffer: it cannot be rebuilt safely")
            objects[key] = None
        elif key in ("_last_obs", "_last_episode_starts", "_last_original_obs", "_last_lstm_states"):
            objects[key] = None  # the next learn() resets the env
        else:
            raise NeedsTrustError(path, key, "is a pickled object that cannot be rebuilt safely")
    return objects


def _default_policy(algo: Any) -> str:
    return "MlpLstmPolicy" if "MlpLstmPolicy" in algo.policy_aliases else "MlpPolicy"


def _algorithms_to_try(spec: Mapping[str, Any] | None) -> list[Any]:
    from agents.rl2.training import algorithms

    algos = algorithms()
    name = (spec or {}).get("agent", {}).get("algo")
    if name is not None:
        if name not in algos:
            raise ValueError(f"the run spec's agent.algo {name!r} is not one of {sorted(algos)}")
        return [algos[name]]
    return [algos["recurrent_ppo"], algos["ppo"]]  # a model without a spec: as metaopt-bench always tried


def needs_trust(path: str | Path, spec: Mapping[str, Any] | None = None) -> NeedsTrustError | None:
    """Why the model at ``path`` can only load with ``trust=True`` (a pickled entry that cannot be rebuilt
    under any algorithm :func:`load_model` would try), or None; reads only the zip's ``data`` (cheap)."""
    zip_path = model_path(path)
    spec = read_spec(path) if spec is None else spec
    refusals = []
    for algo in _algorithms_to_try(spec):
        try:
            safe_custom_objects(zip_path, algo, spec)
        except NeedsTrustError as error:
            refusals.append(error)
        except KeyError:  # no data entry: not this check's to report (loading says what is wrong)
            return None
        else:
            return None
    return refusals[0] if refusals else None


def load_model(
    path: str | Path,
    trust: bool = False,
    env: Any = None,
    device: str = "cpu",
    spec: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """The SB3 model at ``path`` (a ``model.zip`` or a run directory), loaded without executing code from it.

    ``spec`` (default: the model's own, :func:`read_spec`) gives the algorithm (``agent.algo``; without
    one: RecurrentPPO, then PPO) and the spaces; pass the run's spec for a checkpoint saved without one.
    ``env`` and ``kwargs`` go to the algorithm's ``load`` (to resume training). ``trust=True`` is
    SB3's own load, which unpickles the file's objects: only for files you trust. Without it, a file
    whose pickled entries cannot be rebuilt (under every algorithm tried) raises :class:`NeedsTrustError`.
    """
    zip_path = model_path(path)
    spec = read_spec(path) if spec is None else spec
    if not trust:
        _check_weights_only()
    errors, needs_trust = [], []
    for algo in _algorithms_to_try(spec):
        try:
            custom_objects = None if trust else safe_custom_objects(zip_path, algo, spec)
            return algo.load(zip_path, env=env, device=device, custom_objects=custom_objects, **kwargs)
        except NeedsTrustError as error:
            needs_trust.append(error)
            errors.append(f"{algo.__name__}: {error}")
        except Exception as error:  # whatever failed, try the next algorithm, then report them all
            errors.append(f"{algo.__name__}: {error}")
    if needs_trust and len(needs_trust) == len(errors):
        raise needs_trust[0]
    raise ValueError(f"could not load {str(zip_path)!r} as an SB3 model: {'; '.join(errors)}")


# --------------------------------------------------------------------------- a model with its spec
@dataclass
class TrainedModel:
    """A loaded model and the spec it was trained on: an agent for :mod:`agents.evaluation`.

    It declares the env arguments it must run with (:attr:`env_kwargs`: the recorded kwargs without the
    task selection, and :attr:`action_mode`) and its :attr:`episodes_per_trial`; the suites build its
    core from them. :meth:`with_overrides` applies explicit ones.
    """

    model: Any
    spec: dict[str, Any]
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    episodes_per_trial: int | None = None

    @classmethod
    def from_spec(cls, model: Any, spec: Mapping[str, Any]) -> TrainedModel:
        recorded = dict(spec["env"]["kwargs"])
        kwargs = {key: value for key, value in recorded.items() if key not in TASK_SELECTION}
        return cls(model, dict(spec), kwargs, spec["env"].get("episodes_per_trial"))

    @property
    def action_mode(self) -> str | None:
        mode = self.env_kwargs.get("action_mode")
        return mode if isinstance(mode, str) else None

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        return self.model.predict(observation, state=state, episode_start=episode_start, deterministic=deterministic)

    def with_overrides(
        self, env_kwargs: Mapping[str, Any] | None = None, episodes_per_trial: int | None = None, name: str = ""
    ) -> TrainedModel:
        """This model with explicit env kwargs and trial length; prints one line naming what changed.

        ValueError, naming the argument, for an override that changes the observation shape (the
        model could not run on it).
        """
        changes = {k: v for k, v in (env_kwargs or {}).items() if self.env_kwargs.get(k, _MISSING) != v}
        trial = self.episodes_per_trial
        if episodes_per_trial is not None and episodes_per_trial != trial:
            changes["episodes_per_trial"] = episodes_per_trial
            trial = episodes_per_trial
        if not changes:
            return self
        kwargs = {**self.env_kwargs, **(env_kwargs or {})}
        self._check_shape(changes)
        recorded = {
            k: (self.episodes_per_trial if k == "episodes_per_trial" else self.env_kwargs.get(k)) for k in changes
        }
        print(f"{name or 'model'}: overriding its training spec {recorded} with {changes}", flush=True)
        return TrainedModel(self.model, self.spec, kwargs, trial)

    def _check_shape(self, changes: Mapping[str, Any]) -> None:
        expected = tuple(self.spec["observation_space"]["shape"])
        for key, value in changes.items():
            shape = self._observation_shape({key: value})
            if shape != expected:
                was = self.episodes_per_trial if key == "episodes_per_trial" else self.env_kwargs.get(key)
                raise ValueError(
                    f"overriding {key}={value!r} gives observations of shape {shape}, but the model was trained "
                    f"on {expected} ({key}={was!r}); drop the {key} override"
                )

    def _observation_shape(self, change: Mapping[str, Any]) -> tuple[int, ...]:
        import metaopt_envs

        env = self.spec["env"]
        kwargs = {**env["kwargs"], **{k: v for k, v in change.items() if k != "episodes_per_trial"}}
        trial = change.get("episodes_per_trial", env.get("episodes_per_trial"))
        core = metaopt_envs.make_core(env["id"], num_envs=1, episodes_per_trial=trial, **kwargs)
        return tuple(core.single_observation_space.shape)


_MISSING = object()


def problem_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded env kwargs that define the inner problems beside the tasks (horizon, optimizer, budget,
    padding), for every agent of a comparison: all but the task selection and :data:`AGENT_OPTIONS`."""
    return {k: v for k, v in spec["env"]["kwargs"].items() if k not in (*TASK_SELECTION, *AGENT_OPTIONS)}


def shared_setting(
    specs: list[Mapping[str, Any]], env_id: str, families: Sequence[str] = ()
) -> tuple[dict[str, Any], int | None]:
    """The problem kwargs on which the runs ``specs`` all agree, and their ``episodes_per_trial`` if they agree
    on it (else None).

    A kwarg that some runs set differently (or only some set) is left out, so the comparison's defaults keep
    every setting the runs share (two runs trained with different divergence penalties still give the
    baselines their common horizon); :func:`setting_disagreements` names what was left out. Where the
    evaluation's ``families`` are just the one the runs were trained on, its ``task_family_kwargs`` are
    shared too (the trainer's own tasks). ValueError for a run trained on another env id than ``env_id``.
    """
    settings = _run_settings(specs, env_id, families)
    if not settings:
        return {}, None
    first, rest = settings[0], settings[1:]
    kwargs = {
        key: value
        for key, value in first[0].items()
        if all(key in other and _same(other[key], value) for other, _ in rest)
    }
    trials = {trial for _, trial in settings}
    return kwargs, trials.pop() if len(trials) == 1 else None


def setting_disagreements(specs: list[Mapping[str, Any]], env_id: str, families: Sequence[str] = ()) -> list[str]:
    """The problem kwargs (and ``episodes_per_trial``) the runs ``specs`` do not all share: sorted names."""
    settings = _run_settings(specs, env_id, families)
    shared, _ = shared_setting(specs, env_id, families)
    keys = {key for kwargs, _ in settings for key in kwargs} - set(shared)
    if len({trial for _, trial in settings}) > 1:
        keys.add("episodes_per_trial")
    return sorted(keys)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _run_settings(
    specs: list[Mapping[str, Any]], env_id: str, families: Sequence[str]
) -> list[tuple[dict[str, Any], int | None]]:
    """Each run's (problem kwargs, episodes_per_trial); ValueError for a run of another env id."""
    out = []
    for spec in specs:
        trained_on = spec["env"]["id"]
        if trained_on != env_id:
            raise ValueError(
                f"a model was trained on {trained_on}, not {env_id}; evaluate it with --env-id {trained_on}"
            )
        kwargs, recorded = problem_kwargs(spec), spec["env"]["kwargs"]
        if list(families) == [recorded.get("task_family")] and recorded.get("task_family_kwargs") is not None:
            kwargs["task_family_kwargs"] = recorded["task_family_kwargs"]
        out.append((kwargs, spec["env"].get("episodes_per_trial")))
    return out


def load_trained(path: str | Path, trust: bool = False) -> TrainedModel:
    """The model at ``path`` with its spec (ValueError if it has none: it was saved without metaopt-train)."""
    spec = read_spec(path)
    if spec is None:
        raise ValueError(
            f"{str(path)!r} has no run spec ({SPEC_ENTRY} in the zip or {SPEC_FILE} beside it): it was not saved by "
            "metaopt-train; evaluate it with explicit --episodes-per-trial and --model-env-kwargs"
        )
    return TrainedModel.from_spec(load_model(path, trust=trust), spec)


__all__ = [
    "MODEL_FILE",
    "NeedsTrustError",
    "SPEC_ENTRY",
    "SPEC_FILE",
    "TrainedModel",
    "load_model",
    "load_trained",
    "needs_trust",
    "model_path",
    "package_versions",
    "read_spec",
    "run_spec",
    "problem_kwargs",
    "AGENT_OPTIONS",
    "safe_custom_objects",
    "save_model",
    "setting_disagreements",
    "shared_setting",
    "space_from_json",
    "space_to_json",
    "write_run_spec",
]
