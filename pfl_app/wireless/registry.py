"""Registries of channel models by name: fading models, packet-error models.

A model is a function registered once, where it is defined, with a decorator
(``@register_fading("rayleigh")``), in a plain ``dict`` from name to function. A model is
looked up by its registered name, or by a ``package.module:function`` path to a function
of the user's own (:func:`pfl_app.plugins.load_object`), which need not be registered.

A model's keyword parameters named like a :class:`~pfl_app.wireless.profiles.LinkProfile`
field receive that field's value for the client's link (:func:`call_model`): a Rician
model asks for ``rician_k``, a distance-dependent one for ``distance_m``. Other keyword
parameters keep their defaults.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ..plugins import is_plugin_path, load_object

Model = Callable[..., Any]


def registrar(registry: dict[str, Model], what: str) -> Callable[[str], Callable[[Model], Model]]:
    """The ``register(name)`` decorator that fills ``registry``.

    Parameters
    ----------
    registry : dict of str to callable
        Where the models go.
    what : str
        What the models are, for messages (``"fading model"``).

    Returns
    -------
    callable
        ``register(name)``: a decorator that adds the function under ``name`` and returns
        it unchanged. A name is registered once: a second function under a taken name raises
        ``ValueError`` (the same function again, as when its module is imported twice, is
        accepted).
    """

    def register(name: str) -> Callable[[Model], Model]:
        if not isinstance(name, str) or not name or ":" in name:
            # A colon would make the name read as a package.module:function path.
            raise ValueError(f"a {what} name must be a non-empty string without ':', got {name!r}")

        def decorate(fn: Model) -> Model:
            if not callable(fn):
                raise TypeError(f"{what} {name!r} must be a function, got {fn!r}")
            old = registry.get(name)
            if old is not None and _origin(old) != _origin(fn):
                raise ValueError(f"{what} {name!r} is already registered, by {_origin(old)}")
            registry[name] = fn
            return fn

        return decorate

    return register


def _origin(fn: Model) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def allowed_text(registry: Mapping[str, Model]) -> str:
    """The names a registry accepts, for messages: its names in the order they were
    registered, and the path form."""
    return f"{', '.join(registry)}, or a function given as package.module:function"


def resolve(registry: Mapping[str, Model], name: str, what: str) -> Model:
    """The model ``name`` stands for: a registered one, or the function a path names.

    Raises
    ------
    ValueError
        Listing the registered names when ``name`` is neither; saying why when a path does
        not lead to a function (:class:`pfl_app.plugins.PluginError` is a ``ValueError``).
    """
    if isinstance(name, str) and name in registry:
        return registry[name]
    if isinstance(name, str) and is_plugin_path(name):
        fn = load_object(name, what)
        if not callable(fn):
            raise ValueError(f"{what} {name!r} is not a function but {type(fn).__name__}")
        return fn
    raise ValueError(f"{what} must be one of {allowed_text(registry)}; got {name!r}")


def keyword_parameters(fn: Model, positional: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(names, required names)`` of the parameters of ``fn`` after its first ``positional``
    ones: those a caller fills by keyword."""
    try:
        return _keyword_parameters(fn, positional)
    except TypeError:  # an unhashable callable: read its signature every time
        return _keyword_parameters.__wrapped__(fn, positional)


@functools.lru_cache(maxsize=256)  # a signature is read once per model, not per message
def _keyword_parameters(fn: Model, positional: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    params = list(inspect.signature(fn).parameters.values())
    free = [p for p in params[positional:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return (tuple(p.name for p in free), tuple(p.name for p in free if p.default is p.empty))


def call_model(fn: Model, args: tuple, source: object) -> Any:
    """Call ``fn(*args, **parameters)``, where ``parameters`` are the attributes of ``source``
    (a link profile) named like the keyword parameters of ``fn`` that follow ``args``.

    Raises
    ------
    ValueError
        When ``fn`` requires a parameter ``source`` has no attribute for.
    """
    names, required = keyword_parameters(fn, len(args))
    missing = [n for n in required if not hasattr(source, n)]
    if missing:
        raise ValueError(
            f"{_origin(fn)} requires parameter(s) {', '.join(missing)}, which the link profile does not "
            "have: give them a default, or name them like a LinkProfile field"
        )
    return fn(*args, **{n: getattr(source, n) for n in names if hasattr(source, n)})
