"""Agent specs: the one parser of the strings that name an agent on the command line and in configs.

Three forms:

- ``path/to/model.zip`` or a run directory (``runs/<run>``): a saved SB3 / sb3-contrib model, loaded
  without executing code from the file (:func:`agents.rl2.runs.load_model`); one saved by
  ``metaopt-train`` carries its run spec and is evaluated on the env it was trained on;
- ``baseline:NAME`` or ``baseline:NAME?key=value&key2=value2``: a hand-designed controller of the
  env's family (:mod:`agents.controllers`), with constructor arguments; values are read as
  ``int``, ``float``, ``true`` / ``false`` or, failing those, kept as strings;
- ``module:Class``: a user's class with SB3's ``predict``, imported and constructed without arguments.

Every malformed spec raises ``ValueError`` naming the spec and the allowed forms.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FORMS = "'path/to/model.zip' (or a run directory), 'baseline:NAME[?key=value&key2=value2]' or 'module:Class'"
_INT = re.compile(r"[+-]?\d+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class AgentSpec:
    """A parsed agent spec: ``kind`` is ``"model"`` (``path``), ``"baseline"`` (``name``, ``kwargs``) or ``"class"``."""

    text: str
    kind: Literal["model", "baseline", "class"]
    name: str = ""  # the baseline's name, or the class name
    kwargs: dict[str, Any] = field(default_factory=dict)  # a baseline's constructor arguments
    path: str = ""  # the model's path, or the module of a class


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.1"`` / ``"1e-3"`` -> float, ``"true"`` / ``"false"`` -> bool, else the string."""
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


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
        kwargs: dict[str, Any] = {}
        for part in query.split("&") if query else ():
            key, equals, value = part.partition("=")
            if not equals or not _IDENTIFIER.fullmatch(key) or not value:
                raise _error(spec, f"argument {part!r} is not key=value")
            if key in kwargs:
                raise _error(spec, f"argument {key!r} is given twice")
            kwargs[key] = parse_value(value)
        return AgentSpec(spec, "baseline", name=name, kwargs=kwargs)
    if spec.endswith(".zip") or Path(spec).is_dir():  # a model, or a run directory that holds model.zip
        return AgentSpec(spec, "model", path=spec)
    module, colon, name = spec.partition(":")
    if colon and module and _IDENTIFIER.fullmatch(name) and all(_IDENTIFIER.fullmatch(p) for p in module.split(".")):
        return AgentSpec(spec, "class", name=name, path=module)
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


def load_agent(spec: str | AgentSpec, baselines: Mapping[str, type], family: str = "", **defaults: Any) -> Any:
    """The agent ``spec`` names; baselines come from ``baselines`` (``defaults``: arguments they take from the env)."""
    parsed = spec if isinstance(spec, AgentSpec) else parse_agent_spec(spec)
    if parsed.kind == "baseline":
        return build_baseline(parsed, baselines, family, **defaults)
    if parsed.kind == "model":
        return load_model(parsed.path)
    try:
        module = importlib.import_module(parsed.path)
    except ImportError as error:
        raise ValueError(f"agent spec {parsed.text!r}: cannot import module {parsed.path!r} ({error})") from error
    cls = getattr(module, parsed.name, None)
    if not callable(cls):
        raise ValueError(f"agent spec {parsed.text!r}: module {parsed.path!r} has no class {parsed.name!r}")
    agent = cls()
    if not callable(getattr(agent, "predict", None)):
        raise ValueError(
            f"agent spec {parsed.text!r}: {parsed.name} has no predict(observation, state, episode_start, "
            "deterministic) method"
        )
    return agent


__all__ = ["FORMS", "AgentSpec", "build_baseline", "load_agent", "load_model", "parse_agent_spec", "parse_value"]
