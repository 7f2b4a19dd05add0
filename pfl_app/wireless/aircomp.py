"""Over-the-air aggregation (AirComp) of the shared tensors.

Every scheduled client transmits its analog update at the same time on the same band, and
the base station receives the superposition ``y = sum_k h_k p_k x_k + n``: the sum the
server wants, computed by the channel, in one analog uplink whatever the number of
clients. Power control is Zhu, Wang & Huang's *truncated channel inversion* ("Broadband
analog aggregation for low-latency federated edge learning", IEEE Trans. Wireless Commun.
19(1), 2020; arXiv:1812.11494), under a per-device power budget ``P``:

- ``g_k = |h_k|^2 = G_k f_k`` is client *k*'s channel power gain: its large-scale gain
  ``G_k = 10^(-PL_k / 10)`` (path loss of its link profile) times the round's block fade
  ``f_k`` (:class:`~pfl_app.wireless.csi.BaseStationCSI`, the very fade its channel draws);
- a client whose fade is below the threshold, ``f_k < f_th``, is *truncated*: it does not
  transmit (``p_k = 0``);
- the others invert their channel to a common receive amplitude ``sqrt(eta)``:
  ``p_k = sqrt(eta) / |h_k|``, capped at the budget ``sqrt(P)``; a capped client arrives
  with ``|h_k| p_k = sqrt(P g_k) < sqrt(eta)`` (misalignment);
- ``eta = P f_th min_k G_k`` over the transmitting clients: the largest receive level every
  client above the threshold surely reaches within its budget (with ``f_th = 0``,
  ``eta = P min_k g_k``); a caller may set another ``eta``, and clients are then capped.

Signal: client *k* transmits ``x_k = c_k (w_k - w) / s`` per element, the difference
between its tensors and the global ones ``w`` the server sent (bounded power), scaled by a
common per-tensor scale ``s = max_k rms(w_k - w)`` the server announces (Zhu et al.'s
normalised update: ``E|x_k|^2 <= 1`` per element) and by ``c_k = omega_k / max_j omega_j``,
``omega`` the aggregation weights renormalised over the transmitting clients. The server
estimates ``w + s max(omega) y / sqrt(eta)``: with every client aligned that is
``w + sum_k omega_k (w_k - w) + e``, FedAvg over the transmitting clients plus Gaussian
noise ``e`` of variance per element::

    Var(e) = s^2 max(omega)^2 sigma^2 / eta,

``sigma^2`` the receiver noise power over the band (``noise_power_dbm``, in watts).

Air time: one analog uplink of ``n`` channel uses (one symbol per tensor element at a
symbol rate equal to the bandwidth), ``n / B``, for all clients together; client *k*
spends ``p_k^2 n / B`` joules transmitting it (``E|x_k|^2 <= 1``: an upper bound).

Base layer: numpy and the channel model only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .channel import dbm_to_watts, noise_power_dbm, path_loss_db
from .profiles import LinkProfile

#: ``wireless.aggregation``: digital (every update a message of its own) or aircomp.
AGGREGATION_DIGITAL = "digital"
AGGREGATION_AIRCOMP = "aircomp"
AGGREGATIONS = (AGGREGATION_DIGITAL, AGGREGATION_AIRCOMP)


def large_scale_gain(profile: LinkProfile) -> float:
    """``G = 10^(-PL / 10)``, the link's mean channel power gain (path loss only)."""
    loss = path_loss_db(profile.distance_m, profile.path_loss_exponent, profile.reference_loss_db,
                        profile.reference_distance_m)
    return float(10.0 ** (-float(loss) / 10.0))


def uplink_noise_power_w(profile: LinkProfile) -> float:
    """``sigma^2``: the receiver noise power over the uplink band, in watts."""
    return dbm_to_watts(noise_power_dbm(profile.noise_psd_dbm_hz, profile.bandwidth_up_hz, profile.noise_figure_db))


def analog_air_time_s(num_elements: int, bandwidth_hz: float) -> float:
    """``n / B``: one symbol per element at a symbol rate equal to the bandwidth, for every
    client at once."""
    return float(num_elements) / float(bandwidth_hz)


@dataclass(frozen=True)
class AirCompPlan:
    """The power control of one round.

    Attributes
    ----------
    transmitting : tuple of bool
        Per client: above the truncation threshold (it transmits).
    power_w : tuple of float
        ``p_k^2``, each client's transmit power (0 if truncated).
    amplitude : tuple of float
        ``|h_k| p_k / sqrt(eta)``, each client's received amplitude relative to the common
        level: 1 when its inversion is exact, < 1 when capped by the budget, 0 if truncated.
    eta : float
        The receive power level ``eta`` (0 when no client transmits).
    noise_power_w : float
        ``sigma^2``, the receiver noise power over the band.
    """

    transmitting: tuple[bool, ...]
    power_w: tuple[float, ...]
    amplitude: tuple[float, ...]
    eta: float
    noise_power_w: float


def truncated_inversion(gains: Sequence[float], fades: Sequence[float], power_w: float, threshold: float,
                        noise_power_w: float, eta: float | None = None) -> AirCompPlan:
    """Zhu et al.'s truncated channel inversion under a per-device budget.

    Parameters
    ----------
    gains : sequence of float
        ``G_k``, each client's large-scale power gain (linear).
    fades : sequence of float
        ``f_k``, each client's block fade ``|h|^2`` relative to its mean.
    power_w : float
        ``P``, the per-device transmit power budget (W), > 0; ``inf`` for no budget.
    threshold : float
        ``f_th``: a client with ``f_k < f_th`` is truncated.
    noise_power_w : float
        ``sigma^2`` (W), >= 0.
    eta : float, optional
        The receive power level; default ``P f_th min G_k`` over the transmitting clients
        (with ``P`` infinite: 1, every client inverted exactly).

    Returns
    -------
    AirCompPlan
    """
    if not power_w > 0:
        raise ValueError(f"power_w must be > 0, got {power_w!r}")
    g = np.asarray(gains, dtype=float) * np.asarray(fades, dtype=float)
    on = np.asarray(fades, dtype=float) >= threshold
    if eta is None:
        if not on.any():
            eta = 0.0
        elif math.isinf(power_w):
            eta = 1.0
        elif threshold > 0:
            eta = power_w * threshold * float(np.min(np.asarray(gains, dtype=float)[on]))
        else:  # no truncation: the level the weakest channel reaches at full power
            eta = power_w * float(np.min(g[on]))
    power = np.where(on, np.minimum(eta / np.where(g > 0, g, np.inf), power_w), 0.0)
    amplitude = np.where(on & (eta > 0), np.sqrt(power * g / eta) if eta > 0 else 0.0, 0.0)
    return AirCompPlan(tuple(bool(b) for b in on), tuple(float(p) for p in power),
                       tuple(float(min(a, 1.0)) for a in amplitude), float(eta), float(noise_power_w))


def aircomp_aggregate(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float],
                      current: Mapping[str, np.ndarray], plan: AirCompPlan,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """What the analog superposition delivers, as the server's new tensors.

    Parameters
    ----------
    updates : sequence of mapping of str to ndarray
        Each client's tensors (names and shapes of ``current``).
    weights : sequence of float
        The aggregation weights, one per update (renormalised over the transmitting ones).
    current : mapping of str to ndarray
        The global tensors sent this round: the updates travel as differences from them.
    plan : AirCompPlan
        The round's power control, one entry per update.
    rng : numpy.random.Generator
        The receiver noise's generator.

    Returns
    -------
    dict of str to ndarray
        ``w + s max(omega) (sum_k sqrt(eta) a_k c_k d_k / s + n) / sqrt(eta)`` per tensor (see
        the module docstring); ``current`` unchanged when no client transmits.
    """
    on = [i for i, t in enumerate(plan.transmitting) if t]
    if not on or plan.eta <= 0:
        return {k: np.array(v, copy=True) for k, v in current.items()}
    w = np.asarray([weights[i] for i in on], dtype=float)
    omega = w / w.sum() if w.sum() > 0 else np.full(len(on), 1.0 / len(on))
    top = float(omega.max())
    out: dict[str, np.ndarray] = {}
    for name, base in current.items():
        base64 = np.asarray(base, dtype=np.float64)
        diffs = [np.asarray(updates[i][name], dtype=np.float64) - base64 for i in on]
        scale = max(float(np.sqrt(np.mean(d ** 2))) if d.size else 0.0 for d in diffs)
        # Received, in units of sqrt(eta) s / max(omega): sum_k a_k omega_k d_k / max(omega) / s.
        signal = sum(plan.amplitude[i] * o * d for i, o, d in zip(on, omega, diffs, strict=True))
        noise_std = scale * top * math.sqrt(plan.noise_power_w / plan.eta)
        noise = rng.standard_normal(base64.shape) * noise_std if noise_std > 0 else 0.0
        out[name] = (base64 + signal + noise).astype(np.asarray(base).dtype, copy=False)
    return out


def estimate_noise_variance(scale: float, weights: Sequence[float], plan: AirCompPlan) -> float:
    """The closed-form per-element variance of the estimate's noise,
    ``s^2 max(omega)^2 sigma^2 / eta`` (``omega`` over the transmitting clients)."""
    w = np.asarray([wt for wt, t in zip(weights, plan.transmitting, strict=True) if t], dtype=float)
    if w.size == 0 or plan.eta <= 0:
        return 0.0
    top = float((w / w.sum()).max()) if w.sum() > 0 else 1.0 / w.size
    return float(scale ** 2 * top ** 2 * plan.noise_power_w / plan.eta)
