"""The built-in channel: each client alone on its own link (:mod:`pfl_app.wireless.channel`).

Block fading: one fade per client and round, shared by both directions. It is the first
draw of the round's downlink generator, whose packet draws then continue the same stream
(so none of them reuses the fade's draw); the uplink's packets come from the uplink's own
generator. Both generators are :func:`~pfl_app.wireless.channel.client_rng` of
``(seed, client, round, direction)``.
"""

from __future__ import annotations

import numpy as np

from .channel import Transmission, client_rng, transmit
from .fading import profile_fading_power
from .interface import Channel


class LinkChannel(Channel):
    """The client's link as its :class:`~pfl_app.wireless.profiles.LinkProfile` describes it,
    unaffected by the other clients (the cohort is not used). Constructor as :class:`Channel`."""

    _fade: tuple[int, float] | None = None  # (round, fade) once drawn

    def fading_power(self, server_round: int) -> float:
        """The block fade of ``server_round``, shared by both directions."""
        if self._fade is None or self._fade[0] != server_round:
            self._downlink_generator(server_round)
        return self._fade[1]

    def _downlink_generator(self, server_round: int) -> np.random.Generator:
        """The round's downlink generator after its first draw, the fade (kept for the uplink)."""
        rng = client_rng(self.seed, self.client_id, server_round, "down")
        self._fade = (server_round, float(profile_fading_power(rng, self.profile)))
        return rng

    def downlink(self, server_round: int, nbytes: int) -> Transmission:
        rng = self._downlink_generator(server_round)
        return transmit(rng, self.profile, nbytes, "down", fading_power=self._fade[1])

    def uplink(self, server_round: int, nbytes: int) -> Transmission:
        return transmit(client_rng(self.seed, self.client_id, server_round, "up"), self.profile, nbytes, "up",
                        fading_power=self.fading_power(server_round))
