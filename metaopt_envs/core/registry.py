"""One registry of task families, per environment kind, and the one way to make a family.

Each environment kind (``"lr"``, ``"ensemble"``, ``"hpo"``) registers its
built-in families by name in its ``families`` package, with
:func:`register_task_family`; the registry imports that package the first
time a kind is asked for, so nothing is imported before it is needed.

>>> from metaopt_envs.core.registry import make_task_family, task_family_names
>>> task_family_names("hpo")
('branin', 'hartmann3', 'hartmann6', 'gp', 'sklearn', 'mixture')
>>> family = make_task_family("hpo", "gp", dims=(2, 3))

A user's family instance is returned as it is (it must be of the kind). A string
``"module:Class"`` or ``"module:Class?key=value&key2=value2"`` that is not a registered name
names a user's family class (a subclass of the kind's base, e.g.
``metaopt_envs.lr.families.LRTaskFamily``): it is imported from ``sys.path`` and built with the
spec's arguments (values read by :func:`parse_value`), then ``task_family_kwargs``; so
``gym.make("MetaOpt-LR-v0", task_family="my_module:MyFamily")`` works, and so do both CLIs.
:func:`env_task_family` is what the environments call: it also runs the cheap
part of :func:`metaopt_envs.check_task_family` on every family the package
does not ship (an instance, or a name a user registered), so a buggy family
fails at construction with a message that names the problem.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from metaopt_envs.core.family import ENV_IDS, KINDS, TaskFamily, check_kind, describe

F = TypeVar("F", bound=TaskFamily)
"""A kind's family base (``LRTaskFamily``, ``StreamFamily``, ``ObjectiveFamily``)."""

_INT = re.compile(r"[+-]?\d+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CLASS_FORM = "'module:Class' or 'module:Class?key=value&key2=value2'"


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


def parse_query(query: str, value: Callable[[str], Any] = parse_value) -> dict[str, Any]:
    """``"a=1&b=x"`` -> ``{"a": 1, "b": "x"}`` (values through ``value``); ValueError naming a bad part."""
    kwargs: dict[str, Any] = {}
    for part in query.split("&") if query else ():
        key, equals, text = part.partition("=")
        if not equals or not _IDENTIFIER.fullmatch(key) or not text:
            raise ValueError(f"argument {part!r} is not key=value")
        if key in kwargs:
            raise ValueError(f"argument {key!r} is given twice")
        kwargs[key] = value(text)
    return kwargs


def is_class_spec(text: Any) -> bool:
    """Whether ``text`` has the form ``module.path:Class[?query]`` (the query is not checked)."""
    if not isinstance(text, str):
        return False
    module, colon, name = text.partition("?")[0].partition(":")
    return (
        bool(colon) and bool(_IDENTIFIER.fullmatch(name)) and all(_IDENTIFIER.fullmatch(p) for p in module.split("."))
    )


def parse_class_spec(text: str, value: Callable[[str], Any] = parse_value) -> tuple[str, str, dict[str, Any]]:
    """``"pkg.mod:Class?a=1"`` -> ``("pkg.mod", "Class", {"a": 1})``; ValueError for another form."""
    if not is_class_spec(text):
        raise ValueError(f"{text!r} is not of the form {CLASS_FORM}")
    head, _, query = text.partition("?")
    module, _, name = head.partition(":")
    return module, name, parse_query(query, value)


def import_class(module: str, name: str) -> Any:
    """``module.name``, imported (ValueError naming the module or the missing attribute).

    The module is imported from ``sys.path``: the CLIs put the current directory first on it, as
    ``python -m`` does.
    """
    try:
        loaded = importlib.import_module(module)
    except ImportError as error:
        raise ValueError(
            f"cannot import module {module!r} ({error}); run from the directory that holds it "
            "or add that directory to PYTHONPATH"
        ) from error
    obj = getattr(loaded, name, None)
    if obj is None:
        raise ValueError(f"module {module!r} has no class {name!r}")
    return obj


_FAMILY_MODULES = {kind: f"metaopt_envs.{kind}.families" for kind in KINDS}
"""The package that registers each kind's built-in families on import."""

_REGISTRY: dict[str, dict[str, Callable[..., TaskFamily]]] = {kind: {} for kind in KINDS}
_BUILT_IN: dict[str, set[str]] = {kind: set() for kind in KINDS}
"""The names the package ships (tested by its own suite): environments skip the checker for them."""


def register_task_family(kind: str, name: str, factory: Callable[..., TaskFamily], *, built_in: bool = False) -> None:
    """Register ``factory`` (a family class, or any callable returning a family) as ``name`` of ``kind``.

    ``make_task_family(kind, name, **kwargs)`` then returns ``factory(**kwargs)``,
    and environments accept ``task_family=name``. ``built_in`` is for the
    package's own families: environments run the quick checks on every other
    family they build, registered by name or passed as an instance.
    Registering a name again with the same factory is a no-op; with another one it is an error.
    """
    check_kind(kind)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ValueError(f"factory must be a task-family class or a callable, got {factory!r}")
    known = _REGISTRY[kind].get(name)
    if known is not None and known is not factory:
        raise ValueError(f"a {kind} task family named {name!r} is already registered ({known!r})")
    _REGISTRY[kind][name] = factory
    if built_in:
        _BUILT_IN[kind].add(name)


def _load(kind: str) -> dict[str, Callable[..., TaskFamily]]:
    check_kind(kind)
    importlib.import_module(_FAMILY_MODULES[kind])  # registers the built-ins (once)
    return _REGISTRY[kind]


def task_family_names(kind: str) -> tuple[str, ...]:
    """The names ``make_task_family(kind, ...)`` accepts, in registration order."""
    return tuple(_load(kind))


def registered_task_families(kind: str) -> dict[str, Callable[..., TaskFamily]]:
    """A copy of the registry of ``kind``: name -> factory."""
    return dict(_load(kind))


def make_task_family(kind: str, task_family: str | TaskFamily = "mixture", **kwargs: Any) -> TaskFamily:
    """The task family of environment kind ``kind`` named ``task_family``, built with ``kwargs``;
    or ``task_family`` itself if it is a family instance of that kind (then ``kwargs`` must be empty).

    Raises ``ValueError`` naming the argument, the value and the allowed values.
    """
    registry = _load(kind)
    if isinstance(task_family, TaskFamily):
        if task_family.kind != kind:
            raise ValueError(
                f"task_family must be a task family of kind {kind!r} (for {ENV_IDS[kind]}), got "
                f"{describe(task_family)} of kind {task_family.kind!r}; "
                f"subclass {_FAMILY_MODULES[kind]}.{_base_name(kind)}"
            )
        if kwargs:
            raise ValueError(
                f"task_family_kwargs cannot be combined with a task family instance ({describe(task_family)}), "
                f"got {kwargs!r}; configure the instance itself"
            )
        return task_family
    if isinstance(task_family, str) and task_family not in registry and is_class_spec(task_family):
        return _make_user_family(kind, task_family, kwargs)
    if not isinstance(task_family, str) or task_family not in registry:
        raise ValueError(
            f"task_family must be one of {tuple(registry)}, {CLASS_FORM} (a user's subclass of "
            f"{_FAMILY_MODULES[kind]}.{_base_name(kind)}) or a task family instance of kind {kind!r}, "
            f"got {task_family!r}"
        )
    family = registry[task_family](**kwargs)
    if not isinstance(family, TaskFamily) or family.kind != kind:
        raise TypeError(f"the factory registered as {kind} family {task_family!r} returned {family!r}")
    return family


def _make_user_family(kind: str, spec: str, kwargs: dict[str, Any]) -> TaskFamily:
    """The family ``module:Class?key=value`` names, built with the spec's arguments then ``kwargs``."""
    try:
        module, name, arguments = parse_class_spec(spec)
        cls = import_class(module, name)
    except ValueError as error:
        raise ValueError(f"task_family {spec!r}: {error}") from None
    base = getattr(importlib.import_module(_FAMILY_MODULES[kind]), _base_name(kind))
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(
            f"task_family {spec!r}: {module}.{name} is not a subclass of {_FAMILY_MODULES[kind]}.{_base_name(kind)} "
            f"(the {kind} task families, for {ENV_IDS[kind]})"
        )
    try:
        family = cls(**{**arguments, **kwargs})
    except TypeError as error:
        raise ValueError(
            f"task_family {spec!r}: cannot construct {name} with { ({**arguments, **kwargs})!r}: {error}"
        ) from None
    if not isinstance(family, TaskFamily) or family.kind != kind:
        raise ValueError(
            f"task_family {spec!r}: {name}(...) is of kind {getattr(family, 'kind', None)!r}, not {kind!r}"
        )
    return family


def env_task_family(
    kind: str,
    base: type[F],
    task_family: str | TaskFamily,
    task_family_kwargs: dict[str, Any] | None,
    device: torch.device | str = "cpu",
) -> F:
    """What an environment's core calls: :func:`make_task_family`, moved to ``device``, as the kind's ``base``.

    A user's family (an instance, a name registered without ``built_in``, or a
    built-in mixture with an instance among its members) also passes the cheap
    checks of :func:`~metaopt_envs.core.checker.check_task_family`
    (``quick=True``); the built-in names are tested once in the test suite, so
    they construct fast.
    """
    kwargs = task_family_kwargs or {}
    family = make_task_family(kind, task_family, **kwargs)
    built_in = isinstance(task_family, str) and task_family in _BUILT_IN[kind]
    if not built_in or any(_holds_instance(value) for value in kwargs.values()):
        from metaopt_envs.core.checker import check_task_family  # the checker imports this module

        check_task_family(family, kind, quick=True, device=device)  # also checks that to(device) works
    family = family.to(device)
    if not isinstance(family, base):  # make_task_family checks the kind; this narrows the type for the core
        raise TypeError(f"a {ENV_IDS[kind]} core needs a {base.__name__}, got {describe(family)}")
    return family


def _holds_instance(value: Any) -> bool:
    """Whether ``value`` is a family instance or a list or tuple holding one (a mixture's members)."""
    return isinstance(value, TaskFamily) or (
        isinstance(value, (list, tuple)) and any(isinstance(item, TaskFamily) for item in value)
    )


def _base_name(kind: str) -> str:
    return {"lr": "LRTaskFamily", "ensemble": "StreamFamily", "hpo": "ObjectiveFamily"}[kind]
