"""Small-scale fading models: the power gain ``|h|^2`` of one block, normalised to mean 1.

A fading model is a function ``model(rng, size=None, **parameters)`` that draws its gains
from ``rng`` (a ``numpy.random.Generator``): a float when ``size`` is ``None``, else an
array of that shape. It is registered once, where it is defined::

    @register_fading("my-fading")
    def my_fading(rng, size=None, *, rician_k=0.0): ...

Its keyword parameters named like a :class:`~pfl_app.wireless.profiles.LinkProfile` field
receive the client's value of that field (``rician_k``, ``nakagami_m``, ``distance_m``,
...); the others keep their defaults (:func:`pfl_app.wireless.registry.call_model`). The
profile's ``fading`` (and the run config's ``wireless.fading``) names a model in
:data:`FADING_MODELS`, or a function of one's own by ``package.module:function``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from .registry import Model, call_model, registrar, resolve

#: Every registered fading model, by name, in the order they were registered.
FADING_MODELS: dict[str, Model] = {}

#: ``@register_fading(name)``: add a fading model to :data:`FADING_MODELS`.
register_fading = registrar(FADING_MODELS, "fading model")


def fading_model(name: str) -> Model:
    """The fading model ``name`` stands for (registered, or a ``package.module:function`` path).

    Raises
    ------
    ValueError
        Naming the allowed models.
    """
    return resolve(FADING_MODELS, name, "fading model")


def fading_names() -> tuple[str, ...]:
    """The names a ``fading`` setting may be, read from :data:`FADING_MODELS` when asked:
    ``""`` (the profile's own) and every registered model (the run config's choices)."""
    return ("", *FADING_MODELS)


def fading_problem(path: str) -> str | None:
    """Why a ``package.module:function`` path leads to no fading model, or ``None``."""
    try:
        fading_model(path)
    except ValueError as err:
        return str(err)
    return None


def draw_fading_power(rng: np.random.Generator, kind: str, rician_k: float = 0.0,
                      size: int | tuple[int, ...] | None = None, **parameters: Any) -> Any:
    """Small-scale power gain ``|h|^2`` of model ``kind``, normalised to mean 1.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    kind : str
        A model of :data:`FADING_MODELS` or a ``package.module:function`` path.
    rician_k : float
        Linear K-factor of ``"rician"``, >= 0 (K = 0 is Rayleigh).
    size : int or tuple, optional
        Shape of the output; ``None`` gives a float.
    **parameters
        The model's other parameters (``nakagami_m=2.0``); those it does not take are ignored.
    """
    return call_model(fading_model(kind), (rng, size), SimpleNamespace(rician_k=rician_k, **parameters))


def profile_fading_power(rng: np.random.Generator, profile: object,
                         size: int | tuple[int, ...] | None = None) -> Any:
    """The gain of ``profile.fading``, its parameters taken from the profile's fields."""
    return call_model(fading_model(profile.fading), (rng, size), profile)


# -- The built-in models, in the order their names are listed ---------------------------


@register_fading("rayleigh")
def rayleigh(rng: np.random.Generator, size: int | tuple[int, ...] | None = None) -> Any:
    """No line of sight: ``|h|^2 ~ Exp(1)``."""
    return rng.exponential(1.0, size)


@register_fading("rician")
def rician(rng: np.random.Generator, size: int | tuple[int, ...] | None = None, *,
           rician_k: float = 0.0) -> Any:
    """A line-of-sight path plus scatter: ``|sqrt(K/(K+1)) + sqrt(1/(K+1)) z|^2`` with
    ``z ~ CN(0, 1)`` and ``K = rician_k`` (linear, >= 0; K = 0 is Rayleigh)."""
    if not (math.isfinite(rician_k) and rician_k >= 0):
        raise ValueError(f"rician_k must be a finite number >= 0, got {rician_k!r}")
    los = math.sqrt(rician_k / (rician_k + 1.0))
    # CN(0, 1) has independent real and imaginary parts of variance 1/2 each.
    sigma = math.sqrt(1.0 / (rician_k + 1.0) / 2.0)
    re = los + sigma * rng.standard_normal(size)
    im = sigma * rng.standard_normal(size)
    return re * re + im * im


@register_fading("none")
def no_fading(rng: np.random.Generator, size: int | tuple[int, ...] | None = None) -> Any:
    """Exactly 1, with no draw (the generator is left as it was)."""
    return 1.0 if size is None else np.ones(size)


@register_fading("nakagami-m")
def nakagami(rng: np.random.Generator, size: int | tuple[int, ...] | None = None, *,
             nakagami_m: float = 1.0) -> Any:
    """Nakagami-m: ``|h|^2 ~ Gamma(shape=m, scale=1/m)``, mean 1 and variance ``1/m``, with
    ``m = nakagami_m`` >= 1/2. m = 1 is Rayleigh; larger m fades less (m = (K+1)^2/(2K+1)
    matches a Rician K's variance)."""
    if not (math.isfinite(nakagami_m) and nakagami_m >= 0.5):
        raise ValueError(f"nakagami_m must be a finite number >= 0.5, got {nakagami_m!r}")
    return rng.gamma(nakagami_m, 1.0 / nakagami_m, size)
