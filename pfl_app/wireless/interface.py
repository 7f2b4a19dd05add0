"""What the wireless mod needs from a channel: the :class:`Channel` interface.

The mod (:class:`pfl_app.wireless.mod.WirelessMod`) builds one channel per client and train
message, tells it which clients the server scheduled in the round (:meth:`Channel.begin_round`),
then sends the server's message over :meth:`Channel.downlink` and the client's reply over
:meth:`Channel.uplink`, and reads the client's compute energy from :meth:`Channel.compute_energy_j`.
The built-in link model (:class:`pfl_app.wireless.link.LinkChannel`) is one implementation;
the run config's ``wireless.channel`` names another by ``package.module:Class``.

A channel is built afresh for every message, possibly in another process than the round
before (a Ray actor serves many clients; a deployed client starts a process per message):
it keeps no state from round to round, and draws its randomness from seeded generators
(:func:`pfl_app.wireless.channel.client_rng`) so a run is reproducible.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..plugins import is_plugin_path, load_object
from .channel import Transmission, compute_energy_j
from .profiles import LinkProfile


@dataclass(frozen=True)
class Cohort:
    """The clients the server scheduled to train in one round, as one client sees them.

    Attributes
    ----------
    node_ids : tuple of int
        Flower node ids of every scheduled client, sorted; the same on every client.
    node_id : int
        This client's node id, one of ``node_ids``.
    shares : tuple of float, optional
        Each client's share of the cell's air (bandwidth under OFDMA, time under TDMA),
        aligned with ``node_ids``: each > 0, summing to 1. ``None`` (the server sent none):
        every client gets ``1 / size`` (:attr:`share`). The server writes them as the
        ``wireless-cohort`` record's ``shares`` (:data:`pfl_app.protocol.COHORT_SHARES_KEY`).
    """

    node_ids: tuple[int, ...]
    node_id: int
    shares: tuple[float, ...] | None = None

    #: How far from 1 the shares may sum (they travel as float64, and a scheduler may
    #: compute them in float32).
    SUM_TOLERANCE = 1e-6

    def __post_init__(self) -> None:
        if tuple(sorted(set(self.node_ids))) != tuple(self.node_ids):
            raise ValueError(f"Cohort.node_ids must be sorted and distinct, got {self.node_ids!r}")
        if self.node_id not in self.node_ids:
            raise ValueError(f"node {self.node_id} is not in the round's cohort {list(self.node_ids)}")
        if self.shares is not None:
            shares = self.shares
            if len(shares) != len(self.node_ids):
                raise ValueError(f"Cohort.shares has {len(shares)} entries for {len(self.node_ids)} node ids")
            if not all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in shares):
                raise ValueError(f"Cohort.shares must be finite floats > 0, got {list(shares)}")
            if abs(math.fsum(shares) - 1.0) > self.SUM_TOLERANCE:
                raise ValueError(f"Cohort.shares must sum to 1, got {list(shares)} (sum {math.fsum(shares)!r})")

    @classmethod
    def of(cls, node_ids: Sequence[int], node_id: int, shares: Sequence[float] | None = None) -> Cohort:
        """The cohort of ``node_ids`` given in any order, as ``node_id`` sees it; ``shares``,
        when given, are aligned with ``node_ids`` as given (and sorted along with them)."""
        ids = [int(n) for n in node_ids]
        if shares is None:
            return cls(tuple(sorted(ids)), int(node_id))
        values = [float(x) for x in shares]
        if len(values) != len(ids):
            raise ValueError(f"Cohort shares has {len(values)} entries for {len(ids)} node ids")
        pairs = sorted(zip(ids, values))
        return cls(tuple(n for n, _ in pairs), int(node_id), tuple(x for _, x in pairs))

    @property
    def size(self) -> int:
        """How many clients transmit in the round (share the spectrum, say)."""
        return len(self.node_ids)

    @property
    def position(self) -> int:
        """This client's place in :attr:`node_ids`, from 0: the same order on every client
        (a slot of a TDMA frame, say)."""
        return self.node_ids.index(self.node_id)

    @property
    def share(self) -> float:
        """This client's share of the cell: its entry of :attr:`shares`, or ``1 / size``
        when the server sent none."""
        return self.shares[self.position] if self.shares is not None else 1.0 / self.size


class Channel(abc.ABC):
    """One client's simulated radio link, as the wireless mod uses it.

    Subclasses implement :meth:`downlink` and :meth:`uplink`; the rest has defaults that
    read the client's link profile. The mod builds a channel with the constructor below
    (a subclass that overrides it must accept the same arguments).

    Parameters
    ----------
    profile : LinkProfile
        The client's link under the run config (``wireless.profile``, ``poor-fraction``,
        distance spread, overrides): a subclass may use it or not.
    seed : int
        The run's seed: derive every draw from it (with the client and round) so that a
        run can be repeated.
    client_id : int
        The client's id (its ``partition-id``), in ``[0, num_clients)``.
    num_clients : int
        How many clients the federation has.
    """

    def __init__(self, profile: LinkProfile, *, seed: int, client_id: int, num_clients: int) -> None:
        self.profile = profile
        self.seed = seed
        self.client_id = client_id
        self.num_clients = num_clients

    def begin_round(self, server_round: int, cohort: Cohort | None) -> None:
        """Learn who transmits in ``server_round``, before :meth:`downlink`.

        ``cohort`` is ``None`` when the server's message did not say (a strategy that is
        not a :class:`~pfl_app.strategies.PersonalizedFedAvg`). The default ignores it: the
        built-in link model gives each client a link of its own.
        """

    @abc.abstractmethod
    def downlink(self, server_round: int, nbytes: int) -> Transmission:
        """Send the server's message of ``nbytes`` to the client in ``server_round``."""

    @abc.abstractmethod
    def uplink(self, server_round: int, nbytes: int) -> Transmission:
        """Send the client's reply of ``nbytes`` to the server in ``server_round``.

        Called after :meth:`downlink` of the same round, and only when it was delivered.
        ``lost_packets`` of the result say which packets of :attr:`packet_bytes` (after
        :attr:`overhead_bytes` of protocol) are missing, for the ``partial`` loss mode.
        """

    def wait_s(self, transmission: Transmission) -> float:
        """Seconds ``transmission`` (a result of this channel's :meth:`downlink` or
        :meth:`uplink`) spent waiting for its turn on the air, on top of its own
        ``air_time_s``: a TDMA client's wait for its slots. The mod counts it in the
        client's round time (and so against the deadline). The default is 0: a link of
        one's own never waits."""
        return 0.0

    def metrics(self) -> dict[str, float]:
        """Figures of the round, by name, that the mod adds to the reply's ``wireless``
        MetricRecord (after :meth:`uplink`, or after a lost :meth:`downlink`). The default
        adds none."""
        return {}

    def compute_energy_j(self, seconds: float) -> float:
        """Energy the device spends computing for ``seconds``: the profile's
        ``device_power_w`` times ``seconds``."""
        return compute_energy_j(self.profile, seconds)

    @property
    def packet_bytes(self) -> int:
        """Payload bytes per packet: the unit in which :attr:`Transmission.lost_packets` count."""
        return self.profile.packet_bytes

    @property
    def overhead_bytes(self) -> int:
        """Protocol bytes in front of a message's payload, in its first packets."""
        return self.profile.overhead_bytes


def load_channel_class(path: str) -> type[Channel]:
    """The :class:`Channel` subclass a ``package.module:Class`` path names.

    Raises
    ------
    ValueError
        When ``path`` does not have that form, does not import, or names something that is
        not a subclass of :class:`Channel` (or is abstract still).
    """
    cls = load_object(path, "channel")
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise ValueError(f"channel {path!r} is {cls!r}, not a subclass of {Channel.__module__}.Channel")
    if abstract := sorted(getattr(cls, "__abstractmethods__", ())):
        raise ValueError(f"channel {path!r} does not implement {', '.join(abstract)} of Channel")
    return cls



def channel_path_problem(value: object) -> str | None:
    """What a ``channel`` setting may be, or ``None`` when ``value`` has that form: empty
    (the built-in link model) or a ``package.module:Class`` path."""
    if isinstance(value, str) and (value == "" or is_plugin_path(value)):
        return None
    return "empty, or package.module:Class"


def channel_problem(path: str) -> str | None:
    """Why a ``package.module:Class`` path leads to no :class:`Channel` class, or ``None``."""
    try:
        load_channel_class(path)
    except ValueError as err:
        return str(err)
    return None


def build_channel(cls: type[Channel], profile: LinkProfile, *, seed: int, client_id: int,
                  num_clients: int) -> Channel:
    """``cls(profile, seed=..., client_id=..., num_clients=...)``, as the wireless mod builds a channel.

    Raises
    ------
    ValueError
        When the class's constructor does not take those arguments.
    """
    try:
        return cls(profile, seed=seed, client_id=client_id, num_clients=num_clients)
    except TypeError as err:
        raise ValueError(f"{cls.__qualname__} cannot be built as the wireless mod builds a channel, "
                         f"cls(profile, *, seed, client_id, num_clients): {err}") from err
