"""Simulated wireless links: profiles, the channel model and its plug-in points (numpy only).

A channel is a :class:`Channel` (``interface``); the built-in one, :class:`LinkChannel`
(``link``), runs the link model of ``channel`` over a client's :class:`LinkProfile`
(``profiles``), and :class:`CellChannel` (``access``) shares a cell's band among the
clients of a round (TDMA, OFDMA). Fading and packet-error models are looked up by name in registries
(``fading``, ``packet_errors``) that ``register_fading`` / ``register_error_model`` fill;
device profiles, for compute time and energy, in ``device`` (``register_device``).
"""

from .access import ACCESS_SCHEMES, ACCESS_SHARES, CellChannel, ofdma_profile, proportional_fair_shares, tdma_wait_s
from .channel import (
    COHERENCES,
    DIRECTIONS,
    MIN_RATE_BPS,
    MIN_SNR_DB,
    REASON_NO_LINK,
    REASON_OK,
    REASON_OUTAGE,
    REASON_PACKET_LOSS,
    Transmission,
    client_rng,
    compute_energy_j,
    db_to_linear,
    dbm_to_watts,
    draw_fading_power,
    linear_to_db,
    mean_snr_db,
    noise_power_dbm,
    packet_error_probability,
    path_loss_db,
    rayleigh_outage_probability,
    round_air_time,
    shannon_rate_bps,
    straggler,
    transmit,
)
from .device import DEVICES, DeviceProfile, device_profile, forward_flops, register_device, training_flops
from .fading import FADING_MODELS, fading_model, register_fading
from .interface import Channel, Cohort, load_channel_class
from .link import LinkChannel
from .packet_errors import ERROR_MODELS_BY_NAME, error_model, register_error_model
from .profiles import (
    ERROR_MODELS,
    FADING_KINDS,
    PROFILES,
    LinkProfile,
    client_distance,
    get_profile,
    poor_clients,
    profile_for_client,
    with_overrides,
)

__all__ = [
    "ACCESS_SCHEMES", "ACCESS_SHARES", "COHERENCES", "DEVICES", "DIRECTIONS", "ERROR_MODELS", "ERROR_MODELS_BY_NAME",
    "FADING_KINDS",
    "FADING_MODELS", "MIN_RATE_BPS", "MIN_SNR_DB", "PROFILES", "REASON_NO_LINK", "REASON_OK", "REASON_OUTAGE",
    "REASON_PACKET_LOSS", "CellChannel", "Channel", "Cohort", "DeviceProfile", "LinkChannel", "LinkProfile", "Transmission",
    "client_distance", "client_rng", "compute_energy_j", "db_to_linear", "dbm_to_watts", "device_profile",
    "draw_fading_power", "error_model", "fading_model", "forward_flops", "get_profile", "linear_to_db",
    "load_channel_class", "mean_snr_db", "noise_power_dbm",
    "packet_error_probability", "path_loss_db", "poor_clients", "profile_for_client",
    "rayleigh_outage_probability", "register_device", "register_error_model", "register_fading", "round_air_time",
    "shannon_rate_bps", "straggler",
    "ofdma_profile", "proportional_fair_shares", "tdma_wait_s", "training_flops", "transmit", "with_overrides",
]
