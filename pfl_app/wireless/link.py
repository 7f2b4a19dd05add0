"""The built-in channel: each client alone on its own link (:mod:`pfl_app.wireless.channel`).

Block fading (``coherence="message"``, the default): one fade per client and round, shared
by both directions. It is the first draw of the round's downlink generator, whose packet
draws then continue the same stream (so none of them reuses the fade's draw); the uplink's
packets come from the uplink's own generator. Fast fading (``coherence="packet"``): every
attempt of every packet draws its own fade from the generator of its direction. Both
generators are :func:`~pfl_app.wireless.channel.client_rng` of
``(seed, client, round, direction)``.
"""

from __future__ import annotations

import numpy as np

from .channel import COHERENCE_MESSAGE, COHERENCES, Transmission, client_rng, transmit
from .fading import profile_fading_power
from .interface import Channel
from .profiles import LinkProfile


class LinkChannel(Channel):
    """The client's link as its :class:`~pfl_app.wireless.profiles.LinkProfile` describes it,
    unaffected by the other clients (the cohort is not used).

    Parameters
    ----------
    profile, seed, client_id, num_clients
        As :class:`~pfl_app.wireless.interface.Channel`.
    coherence : str
        How long a fade lasts (:data:`~pfl_app.wireless.channel.COHERENCES`): ``"message"``,
        one fade per round for both directions (block fading); ``"packet"``, one per
        attempt of each packet (fast fading). Run config: ``wireless.coherence``.
    """

    _fade: tuple[int, float] | None = None  # (round, fade) once drawn

    def __init__(self, profile: LinkProfile, *, seed: int, client_id: int, num_clients: int,
                 coherence: str = COHERENCE_MESSAGE) -> None:
        super().__init__(profile, seed=seed, client_id=client_id, num_clients=num_clients)
        if coherence not in COHERENCES:
            raise ValueError(f"coherence must be one of {', '.join(COHERENCES)}; got {coherence!r}")
        self.coherence = coherence

    def fading_power(self, server_round: int) -> float:
        """The block fade of ``server_round``, shared by both directions.

        Raises
        ------
        ValueError
            Under ``coherence="packet"``, where there is no one fade for the round.
        """
        if self.coherence != COHERENCE_MESSAGE:
            raise ValueError(f"a LinkChannel with coherence={self.coherence!r} has no block fade: each attempt "
                             "of each packet draws its own")
        if self._fade is None or self._fade[0] != server_round:
            self._downlink_generator(server_round)
        return self._fade[1]

    def _downlink_generator(self, server_round: int) -> np.random.Generator:
        """The round's downlink generator after its first draw, the fade (kept for the uplink)."""
        rng = client_rng(self.seed, self.client_id, server_round, "down")
        self._fade = (server_round, float(profile_fading_power(rng, self.profile)))
        return rng

    def _send(self, profile: LinkProfile, server_round: int, nbytes: int, direction: str) -> Transmission:
        """Send ``nbytes`` over ``profile`` (the client's own, or a share of it: see
        :class:`~pfl_app.wireless.access.CellChannel`) with this channel's fading."""
        if self.coherence != COHERENCE_MESSAGE:
            return transmit(client_rng(self.seed, self.client_id, server_round, direction), profile, nbytes,
                            direction, coherence=self.coherence)
        if direction == "down":
            rng = self._downlink_generator(server_round)
            return transmit(rng, profile, nbytes, "down", fading_power=self._fade[1])
        return transmit(client_rng(self.seed, self.client_id, server_round, "up"), profile, nbytes, "up",
                        fading_power=self.fading_power(server_round))

    def downlink(self, server_round: int, nbytes: int) -> Transmission:
        return self._send(self.profile, server_round, nbytes, "down")

    def uplink(self, server_round: int, nbytes: int) -> Transmission:
        return self._send(self.profile, server_round, nbytes, "up")
