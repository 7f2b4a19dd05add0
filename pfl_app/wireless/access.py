"""Multiple access in a cell: the clients scheduled in a round share the base station's band.

The run config's ``wireless.access`` (:data:`ACCESS_SCHEMES`) says how. Each client's link
profile describes the cell's whole band (``bandwidth_up_hz``, ``bandwidth_down_hz``), and
a client's *share* ``s`` of it comes from the round's cohort
(:attr:`~pfl_app.wireless.interface.Cohort.share`: the server's explicit share, else
``1 / K`` for ``K`` clients):

- ``dedicated``: every client has the whole band to itself, however many transmit (the
  model before this module; ``s`` is not used).
- ``tdma``: the whole band for a fraction ``s`` of the time. The cell runs a fixed frame,
  short against a message, in which each client owns a slot of ``s`` of the frame. A
  message is sent at the full band's rate, so its own time on the air ``a`` and its energy
  are those of the whole band; it completes after ``a / s``, having waited
  ``a (1 / s - 1)`` for the other clients' slots (:func:`tdma_wait_s`). A slot whose client
  has finished stays idle (a fixed schedule). With ``K`` equal clients at ``1 / K`` each,
  the round lasts ``K a``, the sum of their slots; shares proportional to each client's
  ``a`` bring every client's completion to ``sum(a)``.
- ``ofdma``: a fraction ``s`` of the band all the time (:func:`ofdma_profile`). The noise
  is that of the narrower band, ``s N0 B``. On the uplink each device keeps its own
  transmit power ``P``, so its SNR grows by ``1 / s`` and its rate is
  ``s B log2(1 + SNR / s)`` (more than ``s`` times the full band's); on the downlink the
  base station splits its power in the same shares, so the SNR stays that of the whole band
  and the rate is exactly ``s`` times the full band's.

``K = 1`` (or ``s = 1``) gives the ``dedicated`` link under every scheme, bit for bit.
Interference between cells and the frame's guard times are not modelled.

Who decides the shares is the run config's ``wireless.access-shares`` (:data:`ACCESS_SHARES`):
``equal`` (``1 / K``, the cohort carries none) or ``proportional-fair``, where the server gives
each scheduled client a share proportional to its proportional-fair metric ``R / T``
(:func:`proportional_fair_shares`) and sends the shares in the cohort.

References
----------
D. Tse and P. Viswanath, *Fundamentals of Wireless Communication*, Cambridge University
Press, 2005: section 6.7 (proportional fair scheduling: :func:`proportional_fair_shares`),
section 4.1 (narrowband cellular systems: orthogonal time and frequency division), section
6.1.3 (uplink AWGN: orthogonal multiple access, user ``k`` with a fraction ``alpha`` of the
band and power ``P`` gets ``alpha W log2(1 + P / (alpha N0 W))``) and section 6.2
(downlink: the base station's power divided among the users).
A. Goldsmith, *Wireless Communications*, Cambridge University Press, 2005, chapter 14.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from .channel import COHERENCE_MESSAGE, MIN_RATE_BPS, Transmission
from .interface import Cohort
from .link import LinkChannel
from .profiles import LinkProfile, with_overrides

ACCESS_DEDICATED = "dedicated"
ACCESS_TDMA = "tdma"
ACCESS_OFDMA = "ofdma"
#: The values of ``wireless.access``, the default first.
ACCESS_SCHEMES = (ACCESS_DEDICATED, ACCESS_TDMA, ACCESS_OFDMA)

SHARES_EQUAL = "equal"
SHARES_PROPORTIONAL_FAIR = "proportional-fair"
#: The values of ``wireless.access-shares``, the default first.
ACCESS_SHARES = (SHARES_EQUAL, SHARES_PROPORTIONAL_FAIR)


def _check_share(share: float) -> float:
    if isinstance(share, bool) or not (isinstance(share, (int, float)) and math.isfinite(share) and 0 < share <= 1):
        raise ValueError(f"a client's share of the cell must be a number in (0, 1], got {share!r}")
    return float(share)


def proportional_fair_shares(rates_bps: Sequence[float | None],
                             average_rates_bps: Sequence[float]) -> tuple[float, ...]:
    """Each scheduled client's share of the cell, proportional to its proportional-fair metric.

    Client ``k`` has the metric ``m_k = R_k / T_k``: ``R_k`` its instantaneous uplink rate
    this round (what the base station knows of its channel), ``T_k`` the exponentially averaged
    rate it was served in past rounds (proportional fair scheduling's ``T``). The shares are
    ``s_k = m_k / sum_j m_j``: a client whose channel is above its own average gets more of
    the cell, one below it less, and a client of a poor link is weighed against its own past,
    not against the others' rates. This is the proportional fair metric of Tse & Viswanath
    (2005, section 6.7), used there to pick the one user of a time slot, after Jalali,
    Padovani & Pankaj (IEEE VTC 2000) and Kelly's proportional fairness (1997), spread here
    over the round's cohort as a share of its air.

    Two cases have no finite metric:

    - **Unknown channel** (``R_k`` is ``None``: the server has not yet heard which client the
      node is) or **no past** (``T_k = 0``: never served, so ``R_k / T_k`` is infinite).
      Such a client gets the equal share ``1 / K``, what it would have had without the
      metric: it is neither starved (it must be heard once for its channel and rate to be
      known) nor allowed to take the whole cell with an infinite metric. The other clients
      split the rest, ``1 - u / K`` for ``u`` such clients, in proportion to their metrics.
    - **No link** (``R_k`` below :data:`~pfl_app.wireless.channel.MIN_RATE_BPS`, where the
      channel sends nothing): ``R_k`` counts as ``MIN_RATE_BPS``, so the share stays > 0 (a
      cohort's shares must be) while being negligible next to any linked client's.

    The metrics are compared in the log domain, so that no ratio overflows; a share too small
    for a float is raised to the smallest normal one (``sys.float_info.min``).

    Parameters
    ----------
    rates_bps : sequence of float or None
        ``R_k`` of each scheduled client, in bit/s; ``None`` when its channel is unknown.
    average_rates_bps : sequence of float
        ``T_k``, aligned with ``rates_bps``, in bit/s; 0 for a client never served.

    Returns
    -------
    tuple of float
        The shares, aligned with the inputs: each in (0, 1], summing to 1.

    Raises
    ------
    ValueError
        When the sequences are empty or of different lengths, or a rate is negative or not
        finite.

    References
    ----------
    D. Tse and P. Viswanath, *Fundamentals of Wireless Communication*, Cambridge University
    Press, 2005, section 6.7. A. Jalali, R. Padovani and R. Pankaj, "Data throughput of
    CDMA-HDR, a high efficiency-high data rate personal communication wireless system",
    IEEE VTC 2000. F. Kelly, "Charging and rate control for elastic traffic", European
    Transactions on Telecommunications 8, 1997.
    """
    rates, averages = list(rates_bps), [float(t) for t in average_rates_bps]
    if not rates or len(rates) != len(averages):
        raise ValueError(f"proportional_fair_shares needs as many average rates as rates, at least one; got "
                         f"{len(rates)} and {len(averages)}")
    for name, values in (("rate", [r for r in rates if r is not None]), ("average rate", averages)):
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"proportional_fair_shares: every {name} must be a finite number >= 0, got {values}")
    k = len(rates)
    weighed = [i for i in range(k) if rates[i] is not None and averages[i] > 0]
    shares = [1.0 / k] * k
    if not weighed:
        return tuple(shares)
    rest = 1.0 - (k - len(weighed)) / k
    logs = [math.log(max(float(rates[i]), MIN_RATE_BPS)) - math.log(averages[i]) for i in weighed]
    top = max(logs)
    weights = [math.exp(x - top) for x in logs]  # the largest is 1: the sum is in [1, K]
    total = math.fsum(weights)
    for i, w in zip(weighed, weights):
        shares[i] = max(rest * w / total, sys.float_info.min)
    return tuple(shares)


def ofdma_profile(profile: LinkProfile, share: float) -> LinkProfile:
    """The link of a client granted ``share`` of the cell's band under OFDMA.

    Both bandwidths are scaled by ``share``, which scales the noise (``N0 B``) with them
    (:func:`~pfl_app.wireless.channel.mean_snr_db`). The device's transmit power is kept,
    so the uplink SNR grows by ``1 / share``; the base station's is scaled by ``share``,
    so the downlink SNR is unchanged (Tse & Viswanath 2005, sections 6.1.3 and 6.2).

    Parameters
    ----------
    profile : LinkProfile
        The client's link over the cell's whole band.
    share : float
        In (0, 1]; 1 returns ``profile`` itself.

    Returns
    -------
    LinkProfile
    """
    share = _check_share(share)
    if share == 1.0:
        return profile
    return with_overrides(profile, bandwidth_up_hz=profile.bandwidth_up_hz * share,
                          bandwidth_down_hz=profile.bandwidth_down_hz * share,
                          bs_tx_power_dbm=profile.bs_tx_power_dbm + 10.0 * math.log10(share))


def tdma_wait_s(transmission: Transmission, share: float, overhead_s: float) -> float:
    """Seconds a TDMA message waits for the other clients' slots: ``a (1 / share - 1)``.

    ``a`` is the message's own time on the air, ``air_time_s`` less the fixed per-message
    latency ``overhead_s`` (access and round trip, not spent in slots). A client holding
    ``share`` of every frame completes ``a`` seconds of its own transmissions after
    ``a / share`` (Tse & Viswanath 2005, section 4.1). 0 when nothing was sent.

    Parameters
    ----------
    transmission : Transmission
        What the message did at the full band's rate.
    share : float
        The client's share of the frame, in (0, 1].
    overhead_s : float
        The profile's ``overhead_s``, included in ``air_time_s``.
    """
    share = _check_share(share)
    active = max(transmission.air_time_s - overhead_s, 0.0) if transmission.transmissions else 0.0
    return active / share - active


class CellChannel(LinkChannel):
    """The built-in link, in a cell whose band the round's cohort shares by ``access``.

    Parameters
    ----------
    profile, seed, client_id, num_clients, coherence
        As :class:`~pfl_app.wireless.link.LinkChannel`; the profile's bandwidths are the
        cell's whole band.
    access : str
        One of :data:`ACCESS_SCHEMES` (run config: ``wireless.access``).

    Notes
    -----
    The fades and packet draws are those of :class:`LinkChannel` (the same generators);
    only the rate, SNR and waiting change with the share. ``tdma`` and ``ofdma`` need the
    round's cohort: :meth:`begin_round` refuses ``None``.
    """

    def __init__(self, profile: LinkProfile, *, seed: int, client_id: int, num_clients: int,
                 access: str = ACCESS_TDMA, coherence: str = COHERENCE_MESSAGE) -> None:
        super().__init__(profile, seed=seed, client_id=client_id, num_clients=num_clients, coherence=coherence)
        if access not in ACCESS_SCHEMES:
            raise ValueError(f"access must be one of {', '.join(ACCESS_SCHEMES)}; got {access!r}")
        self.access = access
        self._share: float | None = None
        self._waits: dict[str, float] = {}

    @property
    def share(self) -> float:
        """This client's share of the cell in the current round (1 under ``dedicated``).

        Raises
        ------
        ValueError
            Before :meth:`begin_round` under ``tdma`` or ``ofdma``.
        """
        if self.access == ACCESS_DEDICATED:
            return 1.0
        if self._share is None:
            raise ValueError(f"CellChannel(access={self.access!r}) does not know its share: call begin_round first")
        return self._share

    def begin_round(self, server_round: int, cohort: Cohort | None) -> None:
        """Take this client's share from ``cohort`` (:attr:`Cohort.share`).

        Raises
        ------
        ValueError
            Under ``tdma`` or ``ofdma`` when ``cohort`` is ``None``: the server's message
            did not say who shares the cell (its strategy is not a PersonalizedFedAvg).
        """
        self._waits = {}
        if self.access == ACCESS_DEDICATED:
            return
        if cohort is None:
            raise ValueError(f"wireless.access = {self.access!r} shares the cell among the clients of a round, but "
                             "the server's train message has no 'wireless-cohort' record saying who they are (its "
                             "strategy must be a pfl_app.strategies.PersonalizedFedAvg)")
        self._share = _check_share(cohort.share)

    def _link(self) -> LinkProfile:
        return ofdma_profile(self.profile, self.share) if self.access == ACCESS_OFDMA else self.profile

    def _sent(self, t: Transmission) -> Transmission:
        self._waits[t.direction] = self.wait_s(t)
        return t

    def downlink(self, server_round: int, nbytes: int) -> Transmission:
        return self._sent(self._send(self._link(), server_round, nbytes, "down"))

    def uplink(self, server_round: int, nbytes: int) -> Transmission:
        return self._sent(self._send(self._link(), server_round, nbytes, "up"))

    def wait_s(self, transmission: Transmission) -> float:
        """Under ``tdma``, :func:`tdma_wait_s` at this client's share; 0 otherwise (an
        OFDMA client's narrower band is already in its ``air_time_s``)."""
        if self.access != ACCESS_TDMA:
            return 0.0
        return tdma_wait_s(transmission, self.share, self.profile.overhead_s)

    def metrics(self) -> dict[str, float]:
        """``access-share`` (this client's share), ``wait-s-down`` and ``wait-s-up`` (its
        waits for its slots; 0 for a message not sent)."""
        return {"access-share": self.share, "wait-s-down": self._waits.get("down", 0.0),
                "wait-s-up": self._waits.get("up", 0.0)}
