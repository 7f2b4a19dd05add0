"""Packet-error models: the probability that one attempt of one packet fails at an SNR.

A packet-error model is a function ``model(snr_db, **parameters)`` of an SNR in dB (a float
or an array) that returns a probability in [0, 1] of the same shape. It is registered once,
where it is defined (``@register_error_model("bler")``); its keyword parameters named like a
:class:`~pfl_app.wireless.profiles.LinkProfile` field receive the client's value of that
field, as a fading model's do (:func:`pfl_app.wireless.registry.call_model`). A profile's
``error_model`` names a model in :data:`ERROR_MODELS_BY_NAME` or a ``package.module:function``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .registry import Model, call_model, registrar, resolve

#: Every registered packet-error model, by name, in the order they were registered.
ERROR_MODELS_BY_NAME: dict[str, Model] = {}

#: ``@register_error_model(name)``: add a packet-error model to :data:`ERROR_MODELS_BY_NAME`.
register_error_model = registrar(ERROR_MODELS_BY_NAME, "packet-error model")


def error_model(name: str) -> Model:
    """The packet-error model ``name`` stands for.

    Raises
    ------
    ValueError
        Naming the allowed models.
    """
    return resolve(ERROR_MODELS_BY_NAME, name, "packet-error model")


def packet_error_probability(profile: Any, snr_db: Any) -> Any:
    """Probability that one attempt of one packet fails at ``snr_db``, by the profile's
    ``error_model`` with its parameters taken from the profile's fields."""
    return call_model(error_model(profile.error_model), (np.asarray(snr_db, dtype=float),), profile)


@register_error_model("outage")
def outage(snr_db: Any, *, outage_snr_db: float) -> Any:
    """1 below ``outage_snr_db``, else 0: a packet gets through iff the SNR reaches the threshold."""
    return np.where(np.asarray(snr_db, dtype=float) < outage_snr_db, 1.0, 0.0)[()]


@register_error_model("bler")
def bler(snr_db: Any, *, bler_snr50_db: float, bler_slope_db: float) -> Any:
    """The logistic block-error curve ``1 / (1 + exp((snr - snr50) / slope))``."""
    z = (np.asarray(snr_db, dtype=float) - bler_snr50_db) / bler_slope_db
    # 1 / (1 + e^z) written with tanh: no overflow warning for large |z|.
    return (0.5 * (1.0 - np.tanh(z / 2.0)))[()]
