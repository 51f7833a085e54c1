"""Agent specs: the one parser of the strings that name an agent on the command line and in configs.

Three forms:

- ``path/to/model.zip`` or a run directory (``runs/<run>``): a saved SB3 / sb3-contrib model, loaded
  without executing code from the file (:func:`agents.rl2.runs.load_model`); one saved by
  ``metaopt-train`` carries its run spec and is evaluated on the env it was trained on;
- ``baseline:NAME`` or ``baseline:NAME?key=value&key2=value2``: a hand-designed controller of the
  env's family (:mod:`agents.controllers`), with constructor arguments; values are read as
  ``int``, ``float``, ``true`` / ``false`` or, failing those, kept as strings;
- ``module:Class`` or ``module:Class?key=value&...``: a user's class with SB3's ``predict``, imported
  (the CLIs put the current directory first on ``sys.path``, as ``python -m`` does) and built with the
  spec's arguments, after the env facts the baselines get (the LR family's ``lr_range``) where its
  constructor takes them; a value ``grid(v1,v2,...)`` is tuned on the training split like the baselines
  (every combination of the grids; the best by the suite's tuning score).

Every malformed spec raises ``ValueError`` naming the spec and the allowed forms.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metaopt_envs.core.registry import _IDENTIFIER, import_class, is_class_spec, parse_query, parse_value

FORMS = (
    "'path/to/model.zip' (or a run directory), 'baseline:NAME[?key=value&key2=value2]' or "
    "'module:Class[?key=value&key2=grid(v1,v2)]'"
)


@dataclass(frozen=True)
class Grid:
    """The values ``grid(v1,v2,...)`` of a user agent's argument, tuned on the training split."""

    values: tuple[Any, ...]

    def __str__(self) -> str:
        return f"grid({','.join(str(v) for v in self.values)})"


def parse_agent_value(text: str) -> Any:
    """:func:`parse_value`, and ``grid(v1,v2,...)`` -> :class:`Grid`."""
    if text.startswith("grid(") and text.endswith(")"):
        values = tuple(parse_value(v.strip()) for v in text[len("grid(") : -1].split(","))
        if any(value == "" for value in values):
            raise ValueError(f"{text!r} is not grid(v1,v2,...)")
        return Grid(values)
    return parse_value(text)


def grid_points(kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the :class:`Grid` values in ``kwargs`` (one point, ``{}``, without a grid)."""
    grids = {key: value.values for key, value in kwargs.items() if isinstance(value, Grid)}
    return [dict(zip(grids, values)) for values in itertools.product(*grids.values())]


@dataclass(frozen=True)
class AgentSpec:
    """A parsed agent spec: ``kind`` is ``"model"`` (``path``), ``"baseline"`` (``name``, ``kwargs``) or ``"class"``."""

    text: str
    kind: Literal["model", "baseline", "class"]
    name: str = ""  # the baseline's name, or the class name
    kwargs: dict[str, Any] = field(default_factory=dict)  # a baseline's constructor arguments
    path: str = ""  # the model's path, or the module of a class


def _error(spec: str, problem: str) -> ValueError:
    return ValueError(f"agent spec {spec!r}: {problem}; an agent spec is {FORMS}")


def parse_agent_spec(spec: str) -> AgentSpec:
    """Parse ``spec`` (see the module docstring); ValueError for a malformed one."""
    if not isinstance(spec, str) or not spec.strip():
        raise _error(str(spec), "empty")
    if spec.startswith("baseline:"):
        name, _, query = spec[len("baseline:") :].partition("?")
        if not _IDENTIFIER.fullmatch(name):
            raise _error(spec, "the baseline's name is missing or not an identifier")
        try:
            kwargs = parse_query(query)
        except ValueError as error:
            raise _error(spec, str(error)) from None
        if any(isinstance(value, str) and value.startswith("grid(") for value in kwargs.values()):
            raise _error(
                spec, "grid(...) values are for module:Class agents; 'baseline:NAME' (or 'baselines') is tuned"
            )
        return AgentSpec(spec, "baseline", name=name, kwargs=kwargs)
    if spec.endswith(".zip") or Path(spec).is_dir():  # a model, or a run directory that holds model.zip
        return AgentSpec(spec, "model", path=spec)
    if is_class_spec(spec):
        head, _, query = spec.partition("?")
        module, _, name = head.partition(":")
        try:
            kwargs = parse_query(query, parse_agent_value)
        except ValueError as error:
            raise _error(spec, str(error)) from None
        return AgentSpec(spec, "class", name=name, kwargs=kwargs, path=module)
    raise _error(spec, "not one of the forms")


def load_model(path: str, trust_model: bool = False) -> Any:
    """A saved SB3 model (a ``model.zip`` or a run directory), loaded without executing code from the file.

    A model saved by ``metaopt-train`` comes with its run spec, as an
    :class:`agents.rl2.runs.TrainedModel` that the suites run on the env kwargs and trial length it was
    trained with; any other SB3 model is tried as RecurrentPPO, then PPO (on the CPU). ``trust_model=True``
    is SB3's own load, which unpickles the file's objects (code): only for files you trust.
    """
    from agents.rl2 import runs

    try:
        if runs.read_spec(path) is not None:
            return runs.load_trained(path, trust=trust_model)
        return runs.load_model(path, trust=trust_model)
    except (ValueError, OSError, KeyError) as error:
        raise ValueError(f"agent spec {path!r}: {error}") from error


def build_baseline(spec: AgentSpec, baselines: Mapping[str, type], family: str = "", **defaults: Any) -> Any:
    """The baseline ``spec`` names, from ``baselines``, built with ``defaults`` then the spec's arguments."""
    if spec.name not in baselines:
        raise ValueError(
            f"agent spec {spec.text!r}: unknown {family + ' ' if family else ''}baseline {spec.name!r}; "
            f"choose from {sorted(baselines)}"
        )
    cls = baselines[spec.name]
    parameters = inspect.signature(cls).parameters
    unknown = sorted(set(spec.kwargs) - set(parameters))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(
            f"agent spec {spec.text!r}: baseline {spec.name!r} takes no argument {unknown[0]!r}; "
            f"its arguments are {sorted(parameters)}"
        )
    kwargs = {key: value for key, value in defaults.items() if key in parameters}
    return cls(**{**kwargs, **spec.kwargs})


def load_agent(
    spec: str | AgentSpec,
    baselines: Mapping[str, type],
    family: str = "",
    *,
    trust_model: bool = False,
    **defaults: Any,
) -> Any:
    """The agent ``spec`` names; baselines come from ``baselines`` (``defaults``: arguments they take from the env),
    a saved model through :func:`load_model` (``trust_model``: SB3's own load, which unpickles)."""
    parsed = spec if isinstance(spec, AgentSpec) else parse_agent_spec(spec)
    if parsed.kind == "baseline":
        return build_baseline(parsed, baselines, family, **defaults)
    if parsed.kind == "model":
        return load_model(parsed.path, trust_model=trust_model)
    return build_user_agent(parsed, grid_points(parsed.kwargs)[0], **defaults)


def build_user_agent(spec: AgentSpec, point: Mapping[str, Any] | None = None, **defaults: Any) -> Any:
    """The user's class ``spec`` names, built with ``defaults`` it takes, the spec's arguments and ``point``
    (values for its grids); ValueError naming the spec for a missing class, a bad argument or no ``predict``."""
    try:
        cls = import_class(spec.path, spec.name)
    except ValueError as error:
        raise ValueError(f"agent spec {spec.text!r}: {error}") from None
    if not callable(cls):
        raise ValueError(f"agent spec {spec.text!r}: {spec.path}.{spec.name} is not a class")
    kwargs = {**spec.kwargs, **(point or {})}
    if any(isinstance(value, Grid) for value in kwargs.values()):
        raise ValueError(f"agent spec {spec.text!r}: no value given for a grid")
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown and parameters and not takes_any:
        raise ValueError(
            f"agent spec {spec.text!r}: {spec.name} takes no argument {unknown[0]!r}; "
            f"its arguments are {sorted(parameters)}"
        )
    given = {key: value for key, value in defaults.items() if key in parameters and key not in kwargs}
    try:
        agent = cls(**given, **kwargs)
    except TypeError as error:
        raise ValueError(f"agent spec {spec.text!r}: cannot construct {spec.name}: {error}") from None
    if not callable(getattr(agent, "predict", None)):
        raise ValueError(
            f"agent spec {spec.text!r}: {spec.name} has no predict(observation, state, episode_start, "
            "deterministic) method"
        )
    return agent


__all__ = [
    "FORMS",
    "AgentSpec",
    "Grid",
    "build_baseline",
    "build_user_agent",
    "grid_points",
    "load_agent",
    "load_model",
    "parse_agent_spec",
    "parse_agent_value",
    "parse_value",
]
