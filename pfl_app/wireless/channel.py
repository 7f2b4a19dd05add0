"""The channel model: path loss, fading, SNR, rate, packet errors and ARQ.

One call to :func:`transmit` sends one message over one link and says how long it took,
how much energy the device spent and which packets got through. The model, in order:

1. Mean SNR from a log-distance path loss (:func:`mean_snr_db`).
2. Fading, at one of two coherences (:data:`COHERENCES`):

   - ``"message"`` (block fading): one small-scale power gain ``|h|^2`` (mean 1) for the
     whole message, drawn by the profile's fading model (:mod:`pfl_app.wireless.fading`).
     The fading is therefore redrawn per message; a caller that wants one fade per round for
     both directions draws it once and passes ``fading_power`` to both calls.
   - ``"packet"`` (fast fading): an independent gain for every attempt of every packet, so
     that a longer message has more chances to meet a deep fade.
3. Rate: ``efficiency * B * log2(1 + SNR)`` at the faded SNR (ideal link adaptation), per
   message or per attempt.
4. The message plus ``overhead_bytes`` is cut into packets of ``packet_bytes``; each
   attempt of each packet fails independently with the probability that the profile's
   packet-error model (:mod:`pfl_app.wireless.packet_errors`) gives at that SNR, and is
   retried up to ``max_retransmissions`` times. All packets are sent even after one is
   lost, so ``lost_packets`` says which parts of the message are missing.

All randomness goes through the ``rng`` argument; :func:`client_rng` derives one from
``(seed, client, round, direction)`` so results do not depend on call order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from numbers import Integral
from typing import Any

import numpy as np

from .fading import draw_fading_power, profile_fading_power
from .packet_errors import packet_error_probability
from .profiles import LinkProfile

# draw_fading_power and packet_error_probability were defined here: other modules and the
# tests still import them from here.
__all__ = [
    "COHERENCES", "DIRECTIONS", "MIN_RATE_BPS", "MIN_SNR_DB", "REASON_NO_LINK", "REASON_OK", "REASON_OUTAGE",
    "REASON_PACKET_LOSS", "Transmission", "client_rng", "compute_energy_j", "db_to_linear",
    "dbm_to_watts", "draw_fading_power", "linear_to_db", "mean_snr_db", "noise_power_dbm",
    "packet_error_probability", "path_loss_db", "rayleigh_outage_probability", "round_air_time",
    "shannon_rate_bps", "straggler", "transmit",
]

DIRECTIONS = ("up", "down")

#: How long a fade lasts: a whole message (block fading, the default) or one attempt of one
#: packet (fast fading). See :func:`transmit`.
COHERENCE_MESSAGE = "message"
COHERENCE_PACKET = "packet"
COHERENCES = (COHERENCE_MESSAGE, COHERENCE_PACKET)

# Below this rate no practical modem keeps a link up: the message is abandoned at once
# (reason "no-link") rather than reporting astronomically long, or infinite, air times.
MIN_RATE_BPS = 1e3

# SNR floor, so that a zero fading draw still gives a finite snr_db (JSON has no -inf).
MIN_SNR_DB = -300.0

REASON_OK = ""
REASON_OUTAGE = "outage"
REASON_PACKET_LOSS = "packet-loss"
REASON_NO_LINK = "no-link"


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")


def db_to_linear(db: Any) -> Any:
    """``10 ** (db / 10)``."""
    return np.power(10.0, np.asarray(db, dtype=float) / 10.0)[()]


def linear_to_db(x: Any) -> Any:
    """``10 log10(x)``."""
    return (10.0 * np.log10(np.asarray(x, dtype=float)))[()]


def dbm_to_watts(dbm: float) -> float:
    """Power in watts of a level in dBm."""
    return float(10.0 ** ((dbm - 30.0) / 10.0))


def path_loss_db(distance_m: Any, exponent: float, reference_loss_db: float,
                 reference_distance_m: float = 1.0) -> Any:
    """Log-distance path loss ``PL(d0) + 10 n log10(d / d0)`` in dB.

    Parameters
    ----------
    distance_m : float or array
        Distance(s), > 0.
    exponent : float
        Path-loss exponent ``n`` (2 in free space, 3-4 in cluttered environments).
    reference_loss_db : float
        Loss at the reference distance.
    reference_distance_m : float
        The reference distance ``d0``.
    """
    d = np.asarray(distance_m, dtype=float)
    if np.any(~(d > 0)) or not reference_distance_m > 0:
        raise ValueError(
            f"distance_m and reference_distance_m must be > 0, got {distance_m!r}, "
            f"{reference_distance_m!r}"
        )
    return (reference_loss_db + 10.0 * exponent * np.log10(d / reference_distance_m))[()]


def noise_power_dbm(noise_psd_dbm_hz: float, bandwidth_hz: float, noise_figure_db: float) -> float:
    """Receiver noise power ``N0 + 10 log10(B) + NF`` in dBm."""
    return float(noise_psd_dbm_hz + 10.0 * math.log10(bandwidth_hz) + noise_figure_db)


def mean_snr_db(profile: LinkProfile, direction: str) -> float:
    """Average SNR (before fading) of one direction of the link, in dB.

    ``"up"`` uses the client's ``tx_power_dbm`` over ``bandwidth_up_hz``; ``"down"`` uses
    the base station's ``bs_tx_power_dbm`` over ``bandwidth_down_hz``. Same path loss and
    noise figure both ways.
    """
    _check_direction(direction)
    up = direction == "up"
    power = profile.tx_power_dbm if up else profile.bs_tx_power_dbm
    bandwidth = profile.bandwidth_up_hz if up else profile.bandwidth_down_hz
    loss = path_loss_db(profile.distance_m, profile.path_loss_exponent,
                        profile.reference_loss_db, profile.reference_distance_m)
    noise = noise_power_dbm(profile.noise_psd_dbm_hz, bandwidth, profile.noise_figure_db)
    return float(power - loss - noise)


def shannon_rate_bps(bandwidth_hz: Any, snr_linear: Any, efficiency: float = 1.0) -> Any:
    """Achieved rate ``efficiency * B * log2(1 + SNR)`` in bit/s (SNR linear)."""
    snr = np.asarray(snr_linear, dtype=float)
    return (efficiency * np.asarray(bandwidth_hz, dtype=float) * np.log2(1.0 + snr))[()]


def rayleigh_outage_probability(threshold_snr_db: Any, mean_snr_db: Any) -> Any:
    """``P(SNR < threshold)`` under Rayleigh fading: ``1 - exp(-g_th / g_mean)`` (linear)."""
    ratio = db_to_linear(np.asarray(threshold_snr_db, dtype=float) - np.asarray(mean_snr_db))
    return (-np.expm1(-ratio))[()]


@dataclass(frozen=True)
class Transmission:
    """What happened to one message on one link.

    Attributes
    ----------
    direction : str
        ``"up"`` (client to server) or ``"down"``.
    nbytes : int
        Payload size, without ``overhead_bytes``.
    fading_power : float
        The block-fading power gain the message saw.
    snr_db : float
        Instantaneous SNR (mean SNR times fading), floored at :data:`MIN_SNR_DB`.
    rate_bps : float
        Achieved rate at that SNR.
    packets : int
        Packets the message (plus overhead) was cut into.
    transmissions : int
        Packet attempts in total, retransmissions included.
    retransmissions : int
        ``transmissions - packets`` (0 when nothing was sent).
    air_time_s : float
        Time on the air of all attempts plus ``overhead_s``; 0 when nothing was sent.
    energy_j : float
        Device transmit energy: ``tx_power`` (W) times ``air_time_s`` on the uplink
        (the radio is taken to be on for the fixed overhead too). Receive energy is not
        modelled, so downlink messages cost the device 0 J.
    delivered : bool
        Every packet got through.
    lost_packets : tuple of int
        Indices of the packets still failed after all retransmissions.
    reason : str
        ``""`` when delivered, else ``"outage"``, ``"packet-loss"`` or ``"no-link"``.
    """

    direction: str
    nbytes: int
    fading_power: float
    snr_db: float
    rate_bps: float
    packets: int
    transmissions: int
    retransmissions: int
    air_time_s: float
    energy_j: float
    delivered: bool
    lost_packets: tuple[int, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``lost_packets`` as a list)."""
        out = asdict(self)
        out["lost_packets"] = list(self.lost_packets)
        return out


def client_rng(seed: int, client_id: int, server_round: int, direction: str) -> np.random.Generator:
    """The generator for one client's message in one round and direction.

    Seeded with ``[seed, client_id, server_round, 0 for "down" / 1 for "up"]``, so each
    message's fades and losses depend on those four values only, not on call order.
    """
    _check_direction(direction)
    for name, value in (("seed", seed), ("client_id", client_id), ("server_round", server_round)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return np.random.default_rng([int(seed), int(client_id), int(server_round),
                                  1 if direction == "up" else 0])


def _attempts(rng: np.random.Generator, p_fail: float, packets: int,
              max_attempts: int) -> np.ndarray:
    """Attempts each packet needs to get through, uncapped: a count above
    ``max_attempts`` means the packet was lost (the caller caps it)."""
    if p_fail <= 0.0:
        return np.ones(packets, dtype=np.int64)
    if p_fail >= 1.0:
        return np.full(packets, max_attempts + 1, dtype=np.int64)
    # Attempts until the first success are geometric in the success probability.
    return rng.geometric(1.0 - p_fail, size=packets)


def transmit(rng: np.random.Generator, profile: LinkProfile, nbytes: int, direction: str, *,
             fading_power: float | None = None, coherence: str = COHERENCE_MESSAGE) -> Transmission:
    """Send one message of ``nbytes`` over one direction of a link.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the fading (unless given) and then the packet errors.
    profile : LinkProfile
        The link.
    nbytes : int
        Payload bytes; ``profile.overhead_bytes`` is added on top.
    direction : str
        ``"up"`` or ``"down"``.
    fading_power : float, optional
        Use this block-fading gain instead of drawing one (e.g. to share one fade
        between the two directions of a round). Only with ``coherence="message"``.
    coherence : str
        ``"message"``: block fading, one gain for the whole message (the draws are those
        of the model before this argument existed). ``"packet"``: fast fading, an
        independent gain for each attempt of each packet (:func:`_transmit_fast`).

    Returns
    -------
    Transmission

    Notes
    -----
    Block fading is the quasi-static channel, fast fading the fully interleaved one, of
    Tse & Viswanath, *Fundamentals of Wireless Communication* (2005), sections 3.1 and 5.4.
    Without ARQ, a message of ``n`` packets at mean SNR ``g`` is delivered with probability
    ``E_h[(1 - p(g h))^n]`` under block fading (one ``h`` for all packets; ``1 - P(outage)``
    with the outage model, whatever ``n``) and ``(1 - E_h[p(g h)])^n`` under fast fading,
    where ``p`` is the packet-error model.
    """
    _check_direction(direction)
    if isinstance(nbytes, bool) or not isinstance(nbytes, Integral) or nbytes < 0:
        raise ValueError(f"nbytes must be an integer >= 0, got {nbytes!r}")
    if coherence not in COHERENCES:
        raise ValueError(f"coherence must be one of {', '.join(COHERENCES)}; got {coherence!r}")
    if coherence == COHERENCE_PACKET:
        if fading_power is not None:
            raise ValueError("fading_power is one gain for the whole message: it cannot be given with "
                             "coherence='packet', which draws a gain per attempt")
        return _transmit_fast(rng, profile, int(nbytes), direction)
    if fading_power is None:
        fading_power = float(profile_fading_power(rng, profile))
    elif not (math.isfinite(fading_power) and fading_power >= 0):
        raise ValueError(f"fading_power must be a finite number >= 0, got {fading_power!r}")

    up = direction == "up"
    snr_db = max(mean_snr_db(profile, direction) + float(linear_to_db(max(fading_power, 1e-300))),
                 MIN_SNR_DB)
    bandwidth = profile.bandwidth_up_hz if up else profile.bandwidth_down_hz
    rate = float(shannon_rate_bps(bandwidth, db_to_linear(snr_db), profile.efficiency))

    total_bytes = int(nbytes) + profile.overhead_bytes
    packets = -(-total_bytes // profile.packet_bytes)  # ceil
    base = dict(direction=direction, nbytes=int(nbytes), fading_power=float(fading_power),
                snr_db=snr_db, rate_bps=rate, packets=packets)

    if rate < MIN_RATE_BPS and packets > 0:
        return Transmission(**base, transmissions=0, retransmissions=0, air_time_s=0.0,
                            energy_j=0.0, delivered=False,
                            lost_packets=tuple(range(packets)), reason=REASON_NO_LINK)

    max_attempts = profile.max_retransmissions + 1
    p_fail = float(packet_error_probability(profile, snr_db))
    raw = _attempts(rng, p_fail, packets, max_attempts)
    lost = np.flatnonzero(raw > max_attempts)
    attempts = np.minimum(raw, max_attempts)

    # Every packet is full except possibly the last.
    bits = np.full(packets, 8 * profile.packet_bytes, dtype=np.int64)
    if packets:
        bits[-1] = 8 * (total_bytes - (packets - 1) * profile.packet_bytes)
    sent_bits = int(np.dot(attempts, bits))
    air_time = (sent_bits / rate if sent_bits else 0.0) + profile.overhead_s
    tx_watts = dbm_to_watts(profile.tx_power_dbm) if up else 0.0

    delivered = lost.size == 0
    if delivered:
        reason = REASON_OK
    else:
        reason = REASON_OUTAGE if profile.error_model == "outage" else REASON_PACKET_LOSS
    transmissions = int(attempts.sum())
    return Transmission(**base, transmissions=transmissions,
                        retransmissions=transmissions - packets, air_time_s=float(air_time),
                        energy_j=tx_watts * float(air_time), delivered=bool(delivered),
                        lost_packets=tuple(int(i) for i in lost), reason=reason)


def _transmit_fast(rng: np.random.Generator, profile: LinkProfile, nbytes: int, direction: str) -> Transmission:
    """:func:`transmit` under fast fading: each attempt of each packet sees its own gain.

    The gains of every possible attempt are drawn first, as a ``(packets, attempts)`` array
    (packet by packet, attempts in order), then one uniform per possible attempt decides its
    error at its own SNR; a packet's attempts after its first success are not made. Each
    attempt is sent at the rate of its own SNR (ideal link adaptation, as under block
    fading); one whose rate is below :data:`MIN_RATE_BPS` is not sent (no time on the air)
    and counts as failed. The result's ``fading_power`` is the mean gain of the attempts
    made, ``snr_db`` the mean SNR times it, and ``rate_bps`` the effective rate: bits sent
    over their time on the air.
    """
    up = direction == "up"
    mean_db = mean_snr_db(profile, direction)
    bandwidth = profile.bandwidth_up_hz if up else profile.bandwidth_down_hz
    total_bytes = nbytes + profile.overhead_bytes
    packets = -(-total_bytes // profile.packet_bytes)  # ceil
    max_attempts = profile.max_retransmissions + 1

    gains = np.asarray(profile_fading_power(rng, profile, size=(packets, max_attempts)), dtype=float)
    snr = np.maximum(mean_db + linear_to_db(np.maximum(gains, 1e-300)), MIN_SNR_DB)
    rates = np.asarray(shannon_rate_bps(bandwidth, db_to_linear(snr), profile.efficiency), dtype=float)
    p_fail = np.asarray(packet_error_probability(profile, snr), dtype=float)
    linked = rates >= MIN_RATE_BPS
    ok = (rng.random((packets, max_attempts)) >= p_fail) & linked

    # Attempts made: up to the first success, or all of them when none succeeds.
    first = np.where(ok.any(axis=1), ok.argmax(axis=1), max_attempts - 1)
    made = np.arange(max_attempts)[None, :] <= first[:, None]
    sent = made & linked
    bits = np.full(packets, 8 * profile.packet_bytes, dtype=np.int64)
    if packets:
        bits[-1] = 8 * (total_bytes - (packets - 1) * profile.packet_bytes)
    on_air = float(np.sum(np.where(sent, bits[:, None] / np.where(linked, rates, 1.0), 0.0)))
    sent_bits = int(np.sum(np.where(sent, bits[:, None], 0)))
    lost = np.flatnonzero(~ok.any(axis=1))

    fade = float(gains[made].mean()) if packets else 1.0
    snr_db = max(mean_db + float(linear_to_db(max(fade, 1e-300))), MIN_SNR_DB)
    rate = sent_bits / on_air if sent_bits else float(shannon_rate_bps(bandwidth, db_to_linear(snr_db),
                                                                       profile.efficiency))
    # As under block fading, a message with no attempt on the air took no time at all.
    air_time = on_air + profile.overhead_s if sent.any() or not packets else 0.0
    transmissions = int(made.sum())
    delivered = lost.size == 0
    if delivered:
        reason = REASON_OK
    elif not sent.any():
        reason = REASON_NO_LINK
    else:
        reason = REASON_OUTAGE if profile.error_model == "outage" else REASON_PACKET_LOSS
    tx_watts = dbm_to_watts(profile.tx_power_dbm) if up else 0.0
    return Transmission(direction=direction, nbytes=nbytes, fading_power=fade, snr_db=snr_db, rate_bps=float(rate),
                        packets=packets, transmissions=transmissions, retransmissions=transmissions - packets,
                        air_time_s=float(air_time), energy_j=tx_watts * float(air_time), delivered=bool(delivered),
                        lost_packets=tuple(int(i) for i in lost), reason=reason)


def compute_energy_j(profile: LinkProfile, seconds: float) -> float:
    """Energy the device spends computing for ``seconds``: ``device_power_w * seconds``."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
    return profile.device_power_w * float(seconds)


def straggler(air_time_s: float, deadline_s: float | None) -> bool:
    """Whether a client taking ``air_time_s`` misses the deadline (never without one)."""
    return deadline_s is not None and air_time_s > deadline_s


def round_air_time(transmissions_or_times: Iterable[Transmission | float],
                   deadline_s: float | None = None) -> float:
    """How long the round spends waiting on the air.

    Parameters
    ----------
    transmissions_or_times : iterable of Transmission or float
        One entry per client: its :class:`Transmission`, or its time in seconds (taken as
        delivered; sum a client's downlink, compute and uplink times first if the round
        should include them all, with its waits for the air under a shared access scheme,
        :meth:`pfl_app.wireless.interface.Channel.wait_s`: a Transmission's ``air_time_s``
        holds no wait).
    deadline_s : float, optional
        The server stops waiting at this time.

    Returns
    -------
    float
        The slowest delivered client's time; or ``deadline_s`` when a deadline is set and
        some client missed it (late or undelivered). 0 for an empty round.
    """
    if deadline_s is not None and not (math.isfinite(deadline_s) and deadline_s >= 0):
        raise ValueError(f"deadline_s must be None or a finite number >= 0, got {deadline_s!r}")
    slowest = 0.0
    missed = False
    for item in transmissions_or_times:
        if isinstance(item, Transmission):
            time, delivered = item.air_time_s, item.delivered
        else:
            time, delivered = float(item), True
        if not delivered or straggler(time, deadline_s):
            missed = True
        elif time > slowest:
            slowest = time
    if missed and deadline_s is not None:
        return float(deadline_s)
    return slowest
