"""Channel state at the base station: what a scheduler knows of each client's link this round.

The scheduler of a cellular base station knows the channel of the users it schedules
(from pilots / sounding reference signals); the usual idealisation, and the one made here,
is *perfect CSI*: the server knows each client's instantaneous channel of the round exactly,
before anyone transmits.

In this simulator the channel is drawn on the clients, by the built-in link model
(:class:`~pfl_app.wireless.link.LinkChannel`), from seeded generators: client *c*'s block
fade in round *r* is the first draw of ``client_rng(seed, c, r, "down")`` under the fading
model of its link profile, and is shared by both directions. The server can therefore
compute the very SNR the client's channel will see, given the client's link profile (from
the run's :class:`~pfl_app.wireless.profiles.LinkPopulation`), its client id and the seed;
``tests/wireless/test_csi.py`` checks it against what :class:`LinkChannel` transmits.

What the server cannot know is the packet errors (they are drawn after the fade): an air
time estimated here (:func:`air_time_s`) is that of a message whose packets all get
through at the first attempt, a lower bound on the real one. A channel of one's own
(``wireless.channel``) may draw differently: the state here is then that of the built-in
link model.

Base layer: numpy and the channel model only; the caller hands in the profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .channel import MIN_RATE_BPS, MIN_SNR_DB, client_rng, db_to_linear, linear_to_db, mean_snr_db, shannon_rate_bps
from .fading import profile_fading_power
from .profiles import LinkPopulation, LinkProfile


@dataclass(frozen=True)
class ChannelState:
    """One client's channel in one round, as the base station knows it.

    Attributes
    ----------
    client_id, server_round : int
        Whose channel, and when.
    fading_power : float
        The round's block fade ``|h|^2`` (both directions).
    snr_db_up, snr_db_down : float
        Instantaneous SNR of each direction, as the channel's ``Transmission.snr_db``.
    rate_bps_up, rate_bps_down : float
        The rate at that SNR (``efficiency * B * log2(1 + SNR)``), as ``Transmission.rate_bps``.
    """

    client_id: int
    server_round: int
    fading_power: float
    snr_db_up: float
    snr_db_down: float
    rate_bps_up: float
    rate_bps_down: float


def block_fade(profile: LinkProfile, seed: int, client_id: int, server_round: int) -> float:
    """The block fade the built-in link model draws for the client and round: the first draw
    of its downlink generator under the profile's fading model."""
    return float(profile_fading_power(client_rng(seed, client_id, server_round, "down"), profile))


def faded_snr_db(profile: LinkProfile, direction: str, fading_power: float) -> float:
    """Mean SNR of ``direction`` times the fade, in dB, floored as the channel floors it."""
    return max(mean_snr_db(profile, direction) + float(linear_to_db(max(fading_power, 1e-300))), MIN_SNR_DB)


def channel_state(profile: LinkProfile, seed: int, client_id: int, server_round: int) -> ChannelState:
    """The client's channel in ``server_round`` (see the module docstring for what is assumed).

    Parameters
    ----------
    profile : LinkProfile
        The client's link.
    seed : int
        The run's seed (the channel's).
    client_id : int
        The client (its partition id).
    server_round : int
        The round, from 1.

    Returns
    -------
    ChannelState
    """
    fade = block_fade(profile, seed, client_id, server_round)
    up, down = faded_snr_db(profile, "up", fade), faded_snr_db(profile, "down", fade)
    return ChannelState(
        client_id=client_id, server_round=server_round, fading_power=fade, snr_db_up=up, snr_db_down=down,
        rate_bps_up=float(shannon_rate_bps(profile.bandwidth_up_hz, db_to_linear(up), profile.efficiency)),
        rate_bps_down=float(shannon_rate_bps(profile.bandwidth_down_hz, db_to_linear(down), profile.efficiency)),
    )


def air_time_s(profile: LinkProfile, nbytes: int, rate_bps: float) -> float:
    """Air time of a message of ``nbytes`` at ``rate_bps`` if every packet gets through at the
    first attempt: ``8 (nbytes + overhead_bytes) / rate + overhead_s``; ``inf`` below the
    rate at which the channel gives up (no link)."""
    if rate_bps < MIN_RATE_BPS:
        return math.inf
    return 8.0 * (int(nbytes) + profile.overhead_bytes) / rate_bps + profile.overhead_s


class BaseStationCSI:
    """Every client's channel state, from the run's link population.

    Parameters
    ----------
    population : LinkPopulation
        Who has which link; its ``seed`` is also the seed of the channel draws (in a run
        both are the run config's ``seed``).
    """

    def __init__(self, population: LinkPopulation) -> None:
        self.population = population

    def profile(self, client_id: int, num_clients: int) -> LinkProfile:
        """The client's link."""
        return self.population.profile(client_id, num_clients)

    def state(self, client_id: int, num_clients: int, server_round: int) -> ChannelState:
        """The client's channel in ``server_round`` (:func:`channel_state`)."""
        return channel_state(self.profile(client_id, num_clients), self.population.seed, client_id, server_round)

    def round_time_s(self, client_id: int, num_clients: int, server_round: int, bytes_down: int, bytes_up: int,
                     compute_s: float = 0.0, access: str = "dedicated", share: float = 1.0) -> float:
        """The client's round time as the wireless mod counts it (downlink + ``compute_s`` +
        uplink), with every packet through at the first attempt: a lower bound.

        Under ``access`` ``tdma`` the client holds ``share`` of the frame, so each message's
        time on the air (less its fixed latency) stretches by ``1 / share``
        (:func:`~pfl_app.wireless.access.tdma_wait_s`); under ``ofdma`` it has ``share`` of the
        band (:func:`~pfl_app.wireless.access.ofdma_profile`); ``dedicated`` ignores ``share``.
        """
        from .access import ACCESS_OFDMA, ACCESS_TDMA, ofdma_profile  # access imports this module

        profile = self.profile(client_id, num_clients)
        if access == ACCESS_OFDMA:
            profile = ofdma_profile(profile, share)
        state = channel_state(profile, self.population.seed, client_id, server_round)
        down = air_time_s(profile, bytes_down, state.rate_bps_down)
        up = air_time_s(profile, bytes_up, state.rate_bps_up)
        if access == ACCESS_TDMA:
            down, up = ((t - profile.overhead_s) / share + profile.overhead_s for t in (down, up))
        return down + compute_s + up
