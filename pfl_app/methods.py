"""The registry of federated methods: what each one is, declared once, where it is defined.

A method is a strategy class (a subclass of :class:`pfl_app.strategies.PersonalizedFedAvg`)
and the few facts the rest of pfl-app needs to run it, read from the class itself:

- ``client_kind``: which client handlers train it, ``"task"`` (task tuning) or ``"rlhf"``
  (GRPO with the reward models, which the server prepares);
- ``model_parts``: parts its model carries beyond the adapters and the LoRA, e.g.
  ``("local-lora",)`` for FedDPA's second, private LoRA;
- ``delivered_model``: the model a plot or report counts as the method's result,
  ``"personalized"`` (each client's) or ``"global"`` (the aggregated one).

A built-in method is registered by the ``@register_method("name")`` decorator on its class.
The run config's ``method`` is such a name, the ``package.module:Class`` path of a user's own
strategy class (:mod:`pfl_app.plugins`), or a name an installed package declares in the
``pfl_app.methods`` entry-point group; the facts are read from the class's attributes,
inherited from the class it extends.

This module sits below the run config and both sides of the app: it imports none of them.
The built-in methods, which live on the ServerApp side, are imported by name the first time
a name is looked up, the same way a user's method is imported by its path.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .plugins import PluginError, is_plugin_path, load_object

CLIENT_KINDS = ("task", "rlhf")
MODEL_PARTS = ("local-lora",)
DELIVERED_MODELS = ("personalized", "global")
#: Where the built-in methods are defined (and registered, on import).
BUILTIN_PACKAGE = "pfl_app.strategies"
#: The entry-point group in which an installed package names methods of its own.
ENTRY_POINT_GROUP = "pfl_app.methods"


class MethodError(ValueError):
    """A method name or path that names no usable method."""


@dataclass(frozen=True)
class MethodSpec:
    """What pfl-app needs to know of a method to run it.

    Parameters
    ----------
    name : str
        The run config's ``method`` value: a registered name or a ``package.module:Class`` path.
    strategy : type
        The strategy class the ServerApp builds.
    client_kind : str
        One of :data:`CLIENT_KINDS`.
    model_parts : tuple of str
        Extra parts of the client's model, from :data:`MODEL_PARTS`.
    delivered_model : str
        One of :data:`DELIVERED_MODELS`.
    """

    name: str
    strategy: type
    client_kind: str = "task"
    model_parts: tuple[str, ...] = ()
    delivered_model: str = "personalized"

    @property
    def uses_reward_models(self) -> bool:
        """RLHF methods: the server prepares the reward models and the clients run GRPO."""
        return self.client_kind == "rlhf"

    @property
    def second_lora(self) -> bool:
        """A private second LoRA beside the (shared) first one."""
        return "local-lora" in self.model_parts

    @classmethod
    def of(cls, name: str, strategy: type) -> MethodSpec:
        """The spec of ``strategy`` under ``name``, from its class attributes.

        Raises
        ------
        MethodError
            When the attributes are not what pfl-app can run, naming the attribute.
        """
        spec = cls(name, strategy, getattr(strategy, "client_kind", "task"),
                   tuple(getattr(strategy, "model_parts", ())), getattr(strategy, "delivered_model", "personalized"))
        for attr, value, allowed in (("client_kind", spec.client_kind, CLIENT_KINDS),
                                     ("delivered_model", spec.delivered_model, DELIVERED_MODELS)):
            if value not in allowed:
                raise MethodError(f"method {name!r}: {strategy.__name__}.{attr} = {value!r}; allowed: "
                                  f"{', '.join(allowed)}")
        unknown = [p for p in spec.model_parts if p not in MODEL_PARTS]
        if unknown:
            raise MethodError(f"method {name!r}: {strategy.__name__}.model_parts has {unknown}; allowed: "
                              f"{', '.join(MODEL_PARTS)}")
        return spec


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: register a strategy class as the method ``name``.

    Registering a second class under a name already taken raises ``MethodError``;
    registering the same class again (a module imported twice) does nothing.
    """
    if not name or is_plugin_path(name) or ":" in name:
        raise MethodError(f"method name {name!r}: a non-empty name without ':' (paths are for the run config)")

    def decorate(strategy: type) -> type:
        spec = MethodSpec.of(name, strategy)
        taken = _REGISTRY.get(name)
        if taken is not None and _qualname(taken.strategy) != _qualname(strategy):
            raise MethodError(f"method {name!r} is registered already, to {_qualname(taken.strategy)}")
        _REGISTRY[name] = spec
        return strategy

    return decorate


def unregister_method(name: str) -> None:
    """Forget the method ``name`` (tests, notebooks that redefine a method)."""
    _REGISTRY.pop(name, None)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_builtins() -> None:
    importlib.import_module(BUILTIN_PACKAGE)


@functools.cache
def _entry_points() -> dict[str, str]:
    """``name -> package.module:Class`` of the methods installed packages declare in the
    ``pfl_app.methods`` entry-point group; a built-in name cannot be taken.

    Read once per process: scanning every installed distribution takes ~10 ms, and the run
    config (whose ``method`` choices include these names) is validated often."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def method_names() -> tuple[str, ...]:
    """The methods' names: the registered ones, built-in first, in the order they were
    registered, then those installed packages declare as entry points."""
    _load_builtins()
    return tuple(dict.fromkeys([*_REGISTRY, *_entry_points()]))


def method_spec(method: str) -> MethodSpec:
    """The spec of the run config's ``method``: a registered name or a ``package.module:Class`` path.

    Raises
    ------
    MethodError
        Naming what was given and what is allowed.
    """
    _load_builtins()
    if method in _REGISTRY:
        return _REGISTRY[method]
    path = method
    if ":" not in method:
        path = _entry_points().get(method, "")
        if not path:
            names = method_names()
            close = difflib.get_close_matches(method, names, n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise MethodError(f"{method!r} is not a method{hint}; allowed values: {', '.join(names)}, "
                              "or a strategy class of your own as 'package.module:Class'")
    try:
        strategy = load_object(path, "method", "class")
    except PluginError as err:
        raise MethodError(str(err)) from None
    if not isinstance(strategy, type) or not callable(getattr(strategy, "from_run_config", None)) \
            or not hasattr(strategy, "shared_groups"):
        raise MethodError(f"method {method!r} is not a strategy class: it must extend "
                          "pfl_app.strategies.PersonalizedFedAvg (or RlhfFedAvg)")
    return MethodSpec.of(method, strategy)


def method_label(method: str) -> str:
    """``method`` as a run's default folder name starts: a path's class name (``Class`` of
    ``package.module:Class``), else the name itself."""
    return method.rpartition(":")[2].rpartition(".")[2] if ":" in method else method


def method_problem(method: str) -> str | None:
    """Why ``method`` names no usable method, or ``None``."""
    try:
        method_spec(method)
    except MethodError as err:
        return str(err)
    return None


class StrategyTable(MutableMapping):
    """The registered methods as ``name -> strategy class``: the old ``STRATEGIES`` dict,
    kept for code that reads it or adds to it. Setting an entry registers a method;
    deleting one unregisters it."""

    def __getitem__(self, name: str) -> type:
        try:  # a registered name, or a user's package.module:Class
            return method_spec(name).strategy
        except MethodError as err:
            raise KeyError(name) from err

    def __setitem__(self, name: str, strategy: type) -> None:
        register_method(name)(strategy)

    def __delitem__(self, name: str) -> None:
        _load_builtins()
        del _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        return iter(method_names())

    def __len__(self) -> int:
        return len(method_names())

    def __repr__(self) -> str:
        return f"StrategyTable({ {n: s.strategy.__name__ for n, s in _REGISTRY.items()} })"


def recorded_spec(summary: Mapping[str, Any]) -> tuple[str, str]:
    """``(client_kind, delivered_model)`` of a finished run, from its ``summary.json``.

    A summary records both (a user's method may not import where its results are read);
    an older one that does not is looked up by its ``method``, and a method no longer
    known counts as task tuning that delivers personalized models.
    """
    kind, delivered = summary.get("client_kind"), summary.get("delivered_model")
    if kind in CLIENT_KINDS and delivered in DELIVERED_MODELS:
        return kind, delivered
    try:
        spec = method_spec(str(summary.get("method", "")))
    except MethodError:
        return "task", "personalized"
    return spec.client_kind, spec.delivered_model
