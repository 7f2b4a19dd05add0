"""Plug-ins named by a ``package.module:name`` path, as torchtune names its components.

A user swaps one of pfl-app's parts (a method, a channel, a fading model, a data source) for
their own by writing its path in the run config; the object is imported where it is used,
on the server or on each client. This module only finds the object and says clearly why it
could not; what the object must be is checked by the part that uses it.
"""

from __future__ import annotations

import importlib
import re

# A dotted module path, a colon, and a dotted attribute path: "my_pkg.methods:MyMethod".
_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


class PluginError(ValueError):
    """A ``package.module:name`` path that does not lead to an object."""


def is_plugin_path(value: str) -> bool:
    """Whether ``value`` has the form of a ``package.module:name`` path (it may still not import)."""
    return bool(_PATH.fullmatch(value))


def load_object(path: str, what: str, noun: str = "attribute") -> object:
    """Import ``package.module:name`` and return the object it names.

    Parameters
    ----------
    path : str
        ``package.module:name``; ``name`` may be dotted (``module:Class.attribute``).
    what : str
        What the object is for, used in error messages (``"method"``, ``"data source"``).
    noun : str
        What the object is, in the message when it is missing (``"class"``, ``"function"``).

    Raises
    ------
    PluginError
        When ``path`` has not that form, the module does not import, or it has no such name.
    """
    if not is_plugin_path(path):
        raise PluginError(f"{what} {path!r} is not of the form 'package.module:name'")
    module_name, _, attrs = path.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"Cannot import {module_name!r} for {what} {path!r}: {exc}. The module must be importable "
            "where it is used (installed, on PYTHONPATH, or a file of the Flower app, which Flower puts "
            "on the path of the ServerApp and the ClientApps)"
        ) from exc
    for attr in attrs.split("."):
        if not hasattr(obj, attr):
            raise PluginError(f"{what} {path!r}: module {module_name!r} has no {noun} {attrs!r}")
        obj = getattr(obj, attr)
    return obj
