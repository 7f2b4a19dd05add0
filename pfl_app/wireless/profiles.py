"""Radio-link profiles: what one client's wireless link looks like.

A :class:`LinkProfile` gathers everything :mod:`pfl_app.wireless.channel` needs to turn a
message size into an SNR, a rate, an air time, an energy and a delivery outcome. All
quantities are in SI units, or in dB / dBm where the field name says so.

:data:`PROFILES` holds a few named, documented presets; :func:`profile_for_client`
derives a heterogeneous population (spread distances, a fraction of poor links) from one
of them, deterministically from a seed so every process agrees on who is who.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from .fading import FADING_MODELS, fading_model
from .packet_errors import ERROR_MODELS_BY_NAME, error_model
from .registry import Model, keyword_parameters

# Live views of the registries, under the names the tuples they replace had: a model
# registered later (a plug-in's) is listed too.
FADING_KINDS = FADING_MODELS.keys()
ERROR_MODELS = ERROR_MODELS_BY_NAME.keys()


@dataclass(frozen=True)
class LinkProfile:
    """One client's radio link (uplink to the base station and downlink from it).

    Parameters
    ----------
    name : str
        Label carried into results (the preset's name).
    distance_m : float
        Client to base-station / access-point distance.
    path_loss_exponent : float
        Exponent ``n`` of the log-distance model: ``PL(d) = PL(d0) + 10 n log10(d / d0)``.
    reference_loss_db : float
        Path loss at ``reference_distance_m`` (dB).
    reference_distance_m : float
        The model's reference distance ``d0`` (m).
    fading : str
        Small-scale fading model: ``"rayleigh"``, ``"rician"``, ``"nakagami-m"``, ``"none"``,
        another name in :data:`pfl_app.wireless.fading.FADING_MODELS`, or a function of
        one's own as ``package.module:function``. A model's parameters are fields of this
        class (``rician_k``, ``nakagami_m``), passed to the models that take them.
    rician_k : float
        Linear Rician K-factor (LOS to scattered power); used only when ``fading="rician"``.
    nakagami_m : float
        Shape ``m`` >= 1/2 of Nakagami-m fading (1 is Rayleigh); used only when
        ``fading="nakagami-m"``.
    tx_power_dbm : float
        Client (uplink) transmit power.
    bs_tx_power_dbm : float
        Base-station / access-point (downlink) transmit power.
    noise_psd_dbm_hz : float
        Thermal noise power spectral density (-174 dBm/Hz at 290 K).
    noise_figure_db : float
        Receiver noise figure, added to the thermal noise.
    bandwidth_up_hz, bandwidth_down_hz : float
        Bandwidth granted to this client on each link.
    efficiency : float
        Fraction of the Shannon capacity actually achieved, in (0, 1].
    packet_bytes : int
        Payload bytes per packet (the unit of loss and retransmission).
    error_model : str
        ``"outage"`` (a packet fails iff the SNR is below ``outage_snr_db``) or ``"bler"``
        (a packet fails with the logistic probability ``1 / (1 + exp((snr - snr50) / slope))``),
        or another name in :data:`pfl_app.wireless.packet_errors.ERROR_MODELS_BY_NAME`, or
        ``package.module:function``.
    outage_snr_db : float
        Threshold of the outage model; ``-inf`` means the link never drops.
    bler_snr50_db, bler_slope_db : float
        Midpoint and width of the logistic BLER curve (dB).
    max_retransmissions : int
        ARQ retries per packet after the first attempt.
    overhead_bytes : int
        Protocol bytes added to every message (framing, metadata).
    overhead_s : float
        Fixed latency added to every message (access, scheduling, round trip).
    device_power_w : float
        Power the device draws while computing (for compute energy).
    """

    name: str
    distance_m: float
    path_loss_exponent: float
    reference_loss_db: float
    reference_distance_m: float = 1.0
    fading: str = "rayleigh"
    rician_k: float = 0.0
    nakagami_m: float = 1.0
    tx_power_dbm: float = 23.0
    bs_tx_power_dbm: float = 46.0
    noise_psd_dbm_hz: float = -174.0
    noise_figure_db: float = 7.0
    bandwidth_up_hz: float = 20e6
    bandwidth_down_hz: float = 20e6
    efficiency: float = 0.6
    packet_bytes: int = 1500
    error_model: str = "outage"
    outage_snr_db: float = -math.inf
    bler_snr50_db: float = 0.0
    bler_slope_db: float = 1.0
    max_retransmissions: int = 0
    overhead_bytes: int = 0
    overhead_s: float = 0.0
    device_power_w: float = 5.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> LinkProfile:
        """Check every field; return ``self`` so calls can be chained.

        Raises
        ------
        ValueError
            Naming the first bad field and what it may be.
        """
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"LinkProfile.name must be a non-empty string, got {self.name!r}")
        for rule in _RULES:
            rule(self)
        return self


def _number(name: str, value: object, allowed: str) -> float:
    # bool is an int subclass, but True metres is always a mistake.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"LinkProfile.{name} must be a number {allowed}, got {value!r}")
    return float(value)


def _real(name: str, *, low: float = -math.inf, high: float = math.inf,
          low_open: bool = False, allow_neg_inf: bool = False):
    """A rule: finite real in [low, high] (or (low, high] when ``low_open``)."""
    bracket = "(" if low_open else "["
    allowed = f"in {bracket}{low}, {high}]"
    if allow_neg_inf:
        allowed += " or -inf"

    def rule(p: LinkProfile) -> None:
        x = _number(name, getattr(p, name), allowed)
        if allow_neg_inf and x == -math.inf:
            return
        ok = math.isfinite(x) and (x > low if low_open else x >= low) and x <= high
        if not ok:
            raise ValueError(f"LinkProfile.{name} must be {allowed}, got {x!r}")

    return rule


def _integer(name: str, low: int):
    def rule(p: LinkProfile) -> None:
        x = getattr(p, name)
        if isinstance(x, bool) or not isinstance(x, Integral) or x < low:
            raise ValueError(f"LinkProfile.{name} must be an integer >= {low}, got {x!r}")

    return rule


def _model(name: str, lookup: Callable[[str], Model], positional: int):
    """A rule: the field names a model ``lookup`` finds, whose required parameters (after
    its ``positional`` ones) are all fields of the profile, which fills them."""

    def rule(p: LinkProfile) -> None:
        try:
            fn = lookup(getattr(p, name))
        except ValueError as err:
            raise ValueError(f"LinkProfile.{name}: {err}") from err
        fields = {f.name for f in dataclasses.fields(LinkProfile)}
        missing = [n for n in keyword_parameters(fn, positional)[1] if n not in fields]
        if missing:
            raise ValueError(
                f"LinkProfile.{name} = {getattr(p, name)!r} requires parameter(s) {', '.join(missing)}, which "
                "are not LinkProfile fields: give them a default, or name them like a field"
            )

    return rule


_RULES = (
    _real("distance_m", low=0.0, low_open=True),
    _real("path_loss_exponent", low=0.0, high=10.0, low_open=True),
    _real("reference_loss_db"),
    _real("reference_distance_m", low=0.0, low_open=True),
    _model("fading", fading_model, 2),  # model(rng, size, **parameters)
    _real("rician_k", low=0.0),
    _real("nakagami_m", low=0.5),
    _real("tx_power_dbm"),
    _real("bs_tx_power_dbm"),
    _real("noise_psd_dbm_hz"),
    _real("noise_figure_db", low=0.0),
    _real("bandwidth_up_hz", low=0.0, low_open=True),
    _real("bandwidth_down_hz", low=0.0, low_open=True),
    _real("efficiency", low=0.0, high=1.0, low_open=True),
    _integer("packet_bytes", 1),
    _model("error_model", error_model, 1),  # model(snr_db, **parameters)
    _real("outage_snr_db", allow_neg_inf=True),
    _real("bler_snr50_db"),
    _real("bler_slope_db", low=0.0, low_open=True),
    _integer("max_retransmissions", 0),
    _integer("overhead_bytes", 0),
    _real("overhead_s", low=0.0),
    _real("device_power_w", low=0.0),
)

# --- Presets -------------------------------------------------------------------------------
# The numbers are typical, not measured: they aim at plausible orders of magnitude for
# mean SNRs and rates. Interference, shadowing and antenna gains are not modelled, so the
# reference losses below are taken straight from the cited path-loss fits.
# Device compute power is the same everywhere (5 W, a phone-class SoC under sustained
# load) so that energy differences between presets come from the link alone.

PROFILES: dict[str, LinkProfile] = {
    # A link that never limits anything: 1 m, no fading, 10 GHz at full Shannon
    # efficiency (mean SNR ~104 dB, ~0.35 Tb/s) and an outage threshold of -inf.
    "ideal": LinkProfile(
        name="ideal",
        distance_m=1.0,
        path_loss_exponent=2.0,
        reference_loss_db=0.0,
        fading="none",
        tx_power_dbm=30.0,
        bs_tx_power_dbm=30.0,
        noise_figure_db=0.0,
        bandwidth_up_hz=10e9,
        bandwidth_down_hz=10e9,
        efficiency=1.0,
        error_model="outage",
        outage_snr_db=-math.inf,
    ),
    # Indoor 802.11ac/ax at 5.2 GHz, 80 MHz channel, 15 m through walls.
    # Reference loss: free space at 1 m and 5.2 GHz, 20 log10(4 pi f / c) = 46.8 dB;
    # exponent 3.5 for indoor NLOS beyond the breakpoint (IEEE 802.11 TGn models).
    # Rician K = 2 (3 dB, TGn model D). Client and AP at 20 / 23 dBm (regulatory EIRP).
    # MCS0 decodes from ~4 dB SNR; 7 attempts per frame (dot11ShortRetryLimit).
    # CSMA/CA, preambles and ACKs leave ~half of Shannon. Mean SNR ~20 dB up, ~23 dB down.
    "wifi": LinkProfile(
        name="wifi",
        distance_m=15.0,
        path_loss_exponent=3.5,
        reference_loss_db=46.8,
        fading="rician",
        rician_k=2.0,
        tx_power_dbm=20.0,
        bs_tx_power_dbm=23.0,
        noise_figure_db=7.0,
        bandwidth_up_hz=80e6,
        bandwidth_down_hz=80e6,
        efficiency=0.5,
        packet_bytes=1500,
        error_model="outage",
        outage_snr_db=4.0,
        max_retransmissions=6,
        overhead_bytes=1024,
        overhead_s=0.005,
    ),
    # LTE macro cell edge at 2 GHz, 700 m: 3GPP TR 36.814 urban macro NLOS,
    # PL = 128.1 + 37.6 log10(d / km), i.e. 15.3 dB at 1 m with exponent 3.76. Rayleigh
    # (no line of sight). UE 23 dBm (power class 3), eNB 46 dBm over a 20 MHz carrier;
    # a power-limited cell-edge UE is granted ~5 MHz (25 PRBs) of uplink. The lowest CQI
    # decodes at 10% BLER near -6.7 dB, hence the BLER midpoint at -7.5 dB; HARQ allows
    # 4 transmissions. Mean SNR ~1 dB up, ~18 dB down (optimistic: no interference);
    # about 1 in 5 uplink messages of 1 MB is not delivered whole.
    "lte-cell-edge": LinkProfile(
        name="lte-cell-edge",
        distance_m=700.0,
        path_loss_exponent=3.76,
        reference_loss_db=15.3,
        fading="rayleigh",
        tx_power_dbm=23.0,
        bs_tx_power_dbm=46.0,
        noise_figure_db=7.0,
        bandwidth_up_hz=5e6,
        bandwidth_down_hz=20e6,
        efficiency=0.5,
        packet_bytes=1500,
        error_model="bler",
        bler_snr50_db=-7.5,
        bler_slope_db=1.0,
        max_retransmissions=3,
        overhead_bytes=1024,
        overhead_s=0.05,
    ),
    # 5G NR urban micro at 3.5 GHz (band n78), 100 m: 3GPP TR 38.901 UMi street canyon
    # NLOS, PL = 22.4 + 35.3 log10(d) + 21.3 log10(f / GHz) = 34.0 + 35.3 log10(d).
    # Rayleigh. UE 23 dBm, gNB 46 dBm over a 100 MHz TDD carrier, of which the uplink
    # gets the equivalent of 50 MHz. BLER midpoint -8 dB (lowest-SE MCS table);
    # HARQ allows 4 transmissions. Mean SNR ~8 dB up, ~28 dB down; about 1 in 25
    # uplink messages of 1 MB is not delivered whole (deep fades).
    "5g-urban": LinkProfile(
        name="5g-urban",
        distance_m=100.0,
        path_loss_exponent=3.53,
        reference_loss_db=34.0,
        fading="rayleigh",
        tx_power_dbm=23.0,
        bs_tx_power_dbm=46.0,
        noise_figure_db=7.0,
        bandwidth_up_hz=50e6,
        bandwidth_down_hz=100e6,
        efficiency=0.6,
        packet_bytes=1500,
        error_model="bler",
        bler_snr50_db=-8.0,
        bler_slope_db=1.0,
        max_retransmissions=3,
        overhead_bytes=1024,
        overhead_s=0.01,
    ),
}


def get_profile(profile: LinkProfile | str) -> LinkProfile:
    """Return ``profile`` itself, or the preset it names.

    Raises
    ------
    ValueError
        If the name is not in :data:`PROFILES`.
    """
    if isinstance(profile, LinkProfile):
        return profile
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile]
    raise ValueError(f"link profile must be one of {', '.join(PROFILES)}; got {profile!r}")


def with_overrides(profile: LinkProfile | str, **fields: object) -> LinkProfile:
    """A validated copy of ``profile`` with some fields replaced.

    Raises
    ------
    ValueError
        If a field name is unknown (all are listed) or a new value is out of range.
    """
    base = get_profile(profile)
    known = [f.name for f in dataclasses.fields(LinkProfile)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(
            f"unknown LinkProfile field(s) {', '.join(unknown)}; allowed: {', '.join(known)}"
        )
    # replace() re-runs __post_init__, hence validate().
    return dataclasses.replace(base, **fields)


def _count(fraction: float, n: int) -> int:
    # Round half up: 0.3 * 10 is 3.0000000000000004 and 0.29 * 100 is 28.999999999999996.
    return min(n, int(math.floor(fraction * n + 0.5)))


def poor_clients(num_clients: int, poor_fraction: float, seed: int = 0) -> frozenset[int]:
    """The client ids switched to the poor profile: ``round(poor_fraction * num_clients)``
    of them, picked by a seeded permutation (the same set whichever client asks)."""
    if not 0.0 <= poor_fraction <= 1.0:
        raise ValueError(f"poor_fraction must be in [0, 1], got {poor_fraction!r}")
    order = np.random.default_rng([seed, num_clients, 0]).permutation(num_clients)
    return frozenset(int(c) for c in order[: _count(poor_fraction, num_clients)])


def client_distance(client_id: int, num_clients: int, spread: tuple[float, float],
                    seed: int = 0) -> float:
    """Distance of one client: ``num_clients`` evenly spaced points over ``spread``,
    dealt to the clients by a seeded permutation so distance does not follow client id."""
    low, high = (float(x) for x in spread)
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low <= high):
        raise ValueError(
            f"distance_spread must be (low, high) with 0 < low <= high, got {spread!r}"
        )
    if num_clients == 1:
        return (low + high) / 2.0
    slot = int(np.random.default_rng([seed, num_clients, 1]).permutation(num_clients)[client_id])
    return low + (high - low) * slot / (num_clients - 1)


def profile_for_client(
    base: LinkProfile | str,
    client_id: int,
    num_clients: int,
    *,
    distance_spread: tuple[float, float] | None = None,
    poor_fraction: float = 0.0,
    poor_profile: str | LinkProfile = "lte-cell-edge",
    seed: int = 0,
) -> LinkProfile:
    """The link of one client in a heterogeneous population.

    Parameters
    ----------
    base : LinkProfile or str
        Profile (or preset name) of the ordinary clients.
    client_id : int
        In ``[0, num_clients)``.
    num_clients : int
        Population size; the assignment depends on it and on ``seed`` only.
    distance_spread : (float, float), optional
        Give ordinary clients distances evenly spread over ``[low, high]`` metres
        (see :func:`client_distance`); ``None`` keeps the base distance.
    poor_fraction : float
        Fraction of clients, in [0, 1], given ``poor_profile`` instead (exactly
        ``round(poor_fraction * num_clients)`` of them). Poor clients keep the poor
        profile's own distance: the spread describes the ordinary population.
    poor_profile : str or LinkProfile
        Profile (or preset name) of the poor clients.
    seed : int
        Seeds both the poor-client choice and the distance deal.

    Returns
    -------
    LinkProfile
        Validated; its ``name`` is that of the profile it came from.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, Integral) or num_clients < 1:
        raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    if isinstance(client_id, bool) or not isinstance(client_id, Integral) \
            or not 0 <= client_id < num_clients:
        raise ValueError(f"client_id must be an integer in [0, {num_clients}), got {client_id!r}")
    base_profile = get_profile(base)
    poor = get_profile(poor_profile)
    if client_id in poor_clients(num_clients, poor_fraction, seed):
        return poor
    if distance_spread is None:
        return base_profile
    distance = client_distance(client_id, num_clients, distance_spread, seed)
    return with_overrides(base_profile, distance_m=distance)


@dataclass(frozen=True)
class LinkPopulation:
    """Every client's link in a run, as :func:`profile_for_client` deals them.

    The one description of "who has which link" that both sides use: the client's channel
    builds its own link from it, and the server's scheduler computes every client's channel
    state from it (:mod:`pfl_app.wireless.csi`). Built from the run config by
    :attr:`pfl_app.config.RunConfig.link_population`.

    Parameters
    ----------
    base : LinkProfile or str
        Profile (or preset name) of the ordinary clients.
    distance_spread : (float, float), optional
        See :func:`profile_for_client`.
    poor_fraction : float
        See :func:`profile_for_client`.
    poor_profile : LinkProfile or str
        See :func:`profile_for_client`.
    seed : int
        Seeds the deal (and, in a run, the channel draws: both are the run's ``seed``).
    overrides : tuple of (str, value) pairs
        :class:`LinkProfile` fields replaced on every client's profile, poor ones included
        (``wireless.fading``, ``wireless.nakagami-m``, ``wireless.max-retransmissions``).
    """

    base: LinkProfile | str = "ideal"
    distance_spread: tuple[float, float] | None = None
    poor_fraction: float = 0.0
    poor_profile: LinkProfile | str = "lte-cell-edge"
    seed: int = 0
    overrides: tuple[tuple[str, object], ...] = ()

    def profile(self, client_id: int, num_clients: int) -> LinkProfile:
        """The link of client ``client_id`` of ``num_clients`` (validated).

        Raises
        ------
        ValueError
            As :func:`profile_for_client` and :func:`with_overrides` do.
        """
        return _population_profile(self, client_id, num_clients)


@functools.lru_cache(maxsize=1024)  # the server asks for every candidate's link every round
def _population_profile(population: LinkPopulation, client_id: int, num_clients: int) -> LinkProfile:
    profile = profile_for_client(
        population.base, client_id, num_clients, distance_spread=population.distance_spread,
        poor_fraction=population.poor_fraction, poor_profile=population.poor_profile, seed=population.seed,
    )
    return with_overrides(profile, **dict(population.overrides)) if population.overrides else profile
