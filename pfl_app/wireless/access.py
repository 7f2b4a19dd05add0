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

References
----------
D. Tse and P. Viswanath, *Fundamentals of Wireless Communication*, Cambridge University
Press, 2005: section 4.1 (narrowband cellular systems: orthogonal time and frequency
division), section 6.1.3 (uplink AWGN: orthogonal multiple access, user ``k`` with a
fraction ``alpha`` of the band and power ``P`` gets ``alpha W log2(1 + P / (alpha N0 W))``)
and section 6.2 (downlink: the base station's power divided among the users).
A. Goldsmith, *Wireless Communications*, Cambridge University Press, 2005, chapter 14.
"""

from __future__ import annotations

import math

from .channel import COHERENCE_MESSAGE, Transmission
from .interface import Cohort
from .link import LinkChannel
from .profiles import LinkProfile, with_overrides

ACCESS_DEDICATED = "dedicated"
ACCESS_TDMA = "tdma"
ACCESS_OFDMA = "ofdma"
#: The values of ``wireless.access``, the default first.
ACCESS_SCHEMES = (ACCESS_DEDICATED, ACCESS_TDMA, ACCESS_OFDMA)


def _check_share(share: float) -> float:
    if isinstance(share, bool) or not (isinstance(share, (int, float)) and math.isfinite(share) and 0 < share <= 1):
        raise ValueError(f"a client's share of the cell must be a number in (0, 1], got {share!r}")
    return float(share)


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
