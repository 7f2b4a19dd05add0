"""Simulated wireless links: profiles and the channel model (numpy only)."""

from .channel import (
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
    "DIRECTIONS", "ERROR_MODELS", "FADING_KINDS", "MIN_RATE_BPS", "MIN_SNR_DB", "PROFILES",
    "REASON_NO_LINK", "REASON_OK", "REASON_OUTAGE", "REASON_PACKET_LOSS",
    "LinkProfile", "Transmission",
    "client_distance", "client_rng", "compute_energy_j", "db_to_linear", "dbm_to_watts",
    "draw_fading_power", "get_profile", "linear_to_db", "mean_snr_db", "noise_power_dbm",
    "packet_error_probability", "path_loss_db", "poor_clients", "profile_for_client",
    "rayleigh_outage_probability", "round_air_time", "shannon_rate_bps", "straggler",
    "transmit", "with_overrides",
]
