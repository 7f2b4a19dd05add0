"""Client scheduling by channel state, applied to any of our strategies.

:class:`ChannelScheduled` fills :meth:`PersonalizedFedAvg.schedule` with a scheduling policy
of :mod:`pfl_app.wireless.scheduling`, fed with what the base station knows: each candidate
node's channel state this round (perfect CSI, :mod:`pfl_app.wireless.csi`), its averaged past
rate and when it was last scheduled. :func:`with_scheduling` composes it with a strategy
class as :func:`~pfl_app.strategies.server_optimizers.with_server_optimizer` composes Flower's
optimizers, so every method schedules the same way, with any server optimizer.

With ``wireless.access-shares = "proportional-fair"`` it also fills
:meth:`PersonalizedFedAvg.cohort_shares`: each scheduled client's share of the cell, from the
same channel state and averaged rates (:func:`~pfl_app.wireless.access.proportional_fair_shares`).

The server learns which client a node is from its replies (their ``client`` record); a node
not yet heard from has unknown channel state, and the policies schedule it first
(exploration). The number of clients, on which every client's link depends, is the number
of nodes connected (as many as ``num-partitions`` in a simulation).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from ..config import RunConfig
from ..compression.codec import CODEC_INT4, CODECS
from ..protocol import CLIENT_ID_KEY, CLIENT_KEY, WIRELESS_COMPUTE_S_KEY, WIRELESS_KEY
from ..records import message_bytes
from ..wireless.access import (
    ACCESS_DEDICATED,
    ACCESS_SCHEMES,
    ACCESS_SHARES,
    SHARES_EQUAL,
    SHARES_PROPORTIONAL_FAIR,
    proportional_fair_shares,
)
from ..wireless.csi import BaseStationCSI
from ..wireless.profiles import LinkPopulation
from ..wireless.scheduling import Candidate, Situation, policy_problem, policy_requires_deadline, scheduling_policy
from .base import PersonalizedFedAvg


def _whole(low: int, text: str):
    return lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= low else text


class ChannelScheduled(PersonalizedFedAvg):
    """A strategy whose clients are scheduled by a policy (run-config ``schedule.*``).

    Settings (taken by the constructor, read by :meth:`from_run_config`):

    - ``schedule_policy`` (``schedule.policy``): a registered policy or ``package.module:function``;
    - ``clients_per_round`` (``schedule.clients-per-round``): ``K``, 0 for all sampled;
    - ``pf_window`` (``schedule.pf-window``): ``t_c`` of proportional fair's rate average;
    - ``deadline_s``, ``compute_s`` (``wireless.deadline-s``, ``wireless.compute-s``): the round
      deadline and the simulated compute time, for the ``deadline`` policy's time estimates;
    - ``link_population``: every client's link (:attr:`pfl_app.config.RunConfig.link_population`);
    - ``access_shares`` (``wireless.access-shares``): ``equal`` (the cohort carries no shares)
      or ``proportional-fair`` (:meth:`cohort_shares`).

    With ``random`` and ``K`` = 0 (the defaults) it keeps Flower's sampling as it is; with
    ``proportional-fair`` shares it still keeps the averaged rates the shares need.
    """

    option_checks = {
        "schedule_policy": lambda v: policy_problem(v) if isinstance(v, str) else "a policy name",
        "clients_per_round": _whole(0, "a whole number >= 0 (0: every sampled client)"),
        "pf_window": lambda v: None if v >= 1 else "a number >= 1 (rounds)",
        "deadline_s": lambda v: None if v >= 0 else "a number >= 0 (0: no deadline)",
        "compute_s": lambda v: None if v >= 0 else "a number >= 0",
        "link_population": lambda v: None if isinstance(v, LinkPopulation) else "a LinkPopulation",
        "access_shares": lambda v: None if v in ACCESS_SHARES else f"one of {', '.join(ACCESS_SHARES)}",
        "access": lambda v: None if v in ACCESS_SCHEMES else f"one of {', '.join(ACCESS_SCHEMES)}",
        "device": lambda v: None if isinstance(v, str) else "a device name, or '' for none",
    }
    schedule_policy: str = "random"
    clients_per_round: int = 0
    pf_window: float = 10.0
    deadline_s: float = 0.0
    compute_s: float = 0.0
    link_population: LinkPopulation = LinkPopulation()
    access_shares: str = SHARES_EQUAL
    access: str = ACCESS_DEDICATED
    device: str = ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client_of: dict[int, int] = {}  # node id -> client id, from the replies
        self._num_clients = 0
        self._last_scheduled: dict[int, int] = {}  # node id -> round
        self._average_rate: dict[int, float] = {}  # node id -> proportional fair's T
        self._pending: tuple[int, list[int]] | None = None  # the last round and whom it scheduled
        self._train_messages: dict[int, Message] = {}
        self._compute_s: dict[int, float] = {}  # node id -> compute-s of its last reply
        self._candidates: dict[int, Candidate] = {}  # node id -> what the round's schedule knew of it

    @classmethod
    def run_config_options(cls, cfg: RunConfig) -> dict[str, Any]:
        s = cfg.schedule
        return {**super().run_config_options(cfg), "schedule_policy": s.policy,
                "clients_per_round": s.clients_per_round, "pf_window": s.pf_window,
                "deadline_s": cfg.wireless.deadline_s, "compute_s": cfg.wireless.compute_s,
                "link_population": cfg.link_population, "access_shares": cfg.wireless.access_shares,
                "access": cfg.wireless.access, "device": cfg.wireless.device}

    def set_options(self, **options: Any) -> None:
        super().set_options(**options)
        if policy_requires_deadline(self.schedule_policy) and not self.deadline_s > 0:
            raise ValueError(f"{type(self).__name__}: schedule_policy = {self.schedule_policy!r} needs a round "
                             f"deadline, deadline_s > 0 (run-config key 'wireless.deadline-s'); got {self.deadline_s!r}")

    @property
    def active(self) -> bool:
        """Whether the policy can change Flower's sampling (``random`` with ``K`` = 0 cannot)."""
        return not (self.schedule_policy == "random" and self.clients_per_round == 0)

    @property
    def tracking(self) -> bool:
        """Whether the channel state and averaged rates are kept: when the policy is
        :attr:`active`, or the shares are proportional-fair (which read them)."""
        return self.active or self.access_shares == SHARES_PROPORTIONAL_FAIR

    # -- what the server learns ---------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        # The link population is dealt for the number of clients: never shrink it when a node drops.
        self._num_clients = max(self._num_clients, len(list(grid.get_node_ids())))
        return super().configure_train(server_round, arrays, config, grid)

    def _scheduled(self, server_round: int, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self._train_messages = {m.metadata.dst_node_id: m for m in messages}  # their sizes, for time estimates
        try:
            return super()._scheduled(server_round, messages)
        finally:
            self._train_messages, self._candidates = {}, {}

    def _received(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        ok = super()._received(server_round, replies)
        for msg in ok:
            client = msg.content.config_records.get(CLIENT_KEY)
            if client is not None and CLIENT_ID_KEY in client:
                self._client_of[self.node_of(msg)] = int(client[CLIENT_ID_KEY])
            link = msg.content.metric_records.get(WIRELESS_KEY)
            if link is not None and WIRELESS_COMPUTE_S_KEY in link:
                # Under a device model this is the simulated compute time of its last round.
                self._compute_s[self.node_of(msg)] = float(link[WIRELESS_COMPUTE_S_KEY])
        return ok

    # -- the schedule ---------------------------------------------------------------------
    def schedule(self, server_round: int, node_ids: list[int]) -> list[int]:
        """The nodes the policy picks of those sampled (and kept by a class's own ``schedule``)."""
        sampled = sorted(super().schedule(server_round, node_ids))
        if not self.tracking:
            return sampled  # Flower's sampling as it is: no draw, no state
        csi = BaseStationCSI(self.link_population)
        self._settle(csi)
        k = len(sampled) if self.clients_per_round <= 0 else min(self.clients_per_round, len(sampled))
        # Time estimates assume the cell split evenly among K (a deadline policy that picks fewer
        # leaves each a larger share: the estimate errs on the safe side).
        share = 1.0 / max(k, 1)
        situation = Situation(server_round, tuple(self._candidate(csi, server_round, n, share) for n in sampled),
                              self.clients_per_round, self.deadline_s, self.link_population.seed)
        self._candidates = {c.node_id: c for c in situation.candidates}
        if not self.active:  # proportional-fair shares only: Flower's sample is the cohort
            chosen = sampled
        else:
            chosen = [int(n) for n in scheduling_policy(self.schedule_policy)(situation)]
        problem = (f"chose nodes that were not candidates: {sorted(set(chosen) - set(sampled))}"
                   if not set(chosen) <= set(sampled) else
                   f"chose a node more than once: {chosen}" if len(set(chosen)) < len(chosen) else
                   f"chose {len(chosen)} nodes, more than K = {situation.k}" if len(chosen) > situation.k else None)
        if problem is not None:
            raise ValueError(f"scheduling policy {self.schedule_policy!r} {problem} (round {server_round})")
        for node in chosen:
            self._last_scheduled[node] = server_round
        self._pending = (server_round, chosen)
        return chosen

    def cohort_shares(self, server_round: int, node_ids: list[int]) -> list[float] | None:
        """Under ``proportional-fair`` shares, each scheduled node's share proportional to
        ``R / T`` (:func:`~pfl_app.wireless.access.proportional_fair_shares`): its uplink rate
        this round (the base station's CSI) over its averaged past rate, the ``T`` the
        ``proportional-fair`` policy ranks by (``pf_window``), before this round is folded
        in. A node whose client is not known yet, or never served, gets ``1 / K``.
        ``None`` (equal shares) otherwise."""
        if self.access_shares != SHARES_PROPORTIONAL_FAIR:
            return super().cohort_shares(server_round, node_ids)
        picked = [self._candidates[n] for n in node_ids]
        return list(proportional_fair_shares([c.rate_bps for c in picked], [c.average_rate_bps for c in picked]))

    def _known_client(self, node: int) -> int | None:
        client = self._client_of.get(node)
        return client if client is not None and client < self._num_clients else None

    def _candidate(self, csi: BaseStationCSI, server_round: int, node: int, share: float = 1.0) -> Candidate:
        common = {"node_id": node, "average_rate_bps": self._average_rate.get(node, 0.0),
                  "last_scheduled": self._last_scheduled.get(node, 0)}
        client = self._known_client(node)
        if client is None:
            return Candidate(**common)
        state = csi.state(client, self._num_clients, server_round)
        time = None
        if self.deadline_s > 0 and node in self._train_messages:
            # Under an adaptive uplink the narrowest codec: the one it will be given if no wider fits.
            codec = CODEC_INT4 if self.compression.adaptive else None
            time = self._round_time_estimate(csi, server_round, node, client, share, codec)
        return Candidate(**common, client_id=client, snr_db=state.snr_db_up, rate_bps=state.rate_bps_up,
                         round_time_s=time)

    def uplink_codec(self, server_round: int, node: int, cohort: list[int]) -> str:
        """Channel-adaptive precision (``compression.uplink = adaptive``): the widest codec
        (none, fp16, int8, int4 in turn) whose upload lets the client's round fit the deadline.

        The round time is the deadline policy's estimate (:meth:`BaseStationCSI.round_time_s`:
        this round's fade, the client's share of the cell, ``1 / len(cohort)``, its compute
        time, every packet through at the first attempt) with the reply's size under each codec
        (:meth:`reply_bytes_estimate`). Like link adaptation in a cellular uplink, where the
        base station picks each user's modulation and coding from its channel, the server
        picks and tells the client; with perfect CSI that is the choice the client would make
        from its own channel. If none fits, int4 (the update may still make it: the estimate
        is a lower bound of the time, but retransmissions are not counted in it). A node whose
        channel is not known yet (before its first reply) gets int4 too.
        """
        client = self._known_client(node)
        if client is None or node not in self._train_messages:
            return CODEC_INT4
        csi = BaseStationCSI(self.link_population)
        share = 1.0 / max(len(cohort), 1)
        for codec in CODECS:
            if self._round_time_estimate(csi, server_round, node, client, share, codec) <= self.deadline_s:
                return codec
        return CODEC_INT4

    def _round_time_estimate(self, csi: BaseStationCSI, server_round: int, node: int, client: int, share: float,
                             codec: str | None) -> float:
        """``node``'s round time as the base station estimates it (:meth:`BaseStationCSI.round_time_s`):
        its train message down, its compute time, and its reply up with the shared tensors as
        ``codec`` sends them (default: the uplink codec), at ``share`` of the cell."""
        message = self._train_messages[node]
        # Under a device model, the compute time its last round took (0 before its first reply).
        compute = self._compute_s.get(node, 0.0) if self.device else self.compute_s
        return csi.round_time_s(client, self._num_clients, server_round, message_bytes(message),
                                self.reply_bytes_estimate(message, codec), compute, self.access, share)

    def _settle(self, csi: BaseStationCSI) -> None:
        """Fold the last scheduled round into the averaged rates:
        ``T <- (1 - 1/t_c) T + (1/t_c) R 1[scheduled]`` for every node seen so far.

        Done a round late, so that a node scheduled before its client was known (explored)
        is credited the rate it had, computed once its reply has said who it is.
        """
        if self._pending is None:
            return
        server_round, chosen = self._pending
        self._pending = None
        keep = 1.0 - 1.0 / self.pf_window
        for node in set(self._average_rate) | set(chosen):
            served = 0.0
            client = self._known_client(node)
            if node in chosen and client is not None:
                served = csi.state(client, self._num_clients, server_round).rate_bps_up
            self._average_rate[node] = keep * self._average_rate.get(node, 0.0) + served / self.pf_window


def with_scheduling(strategy_cls: type[PersonalizedFedAvg]) -> type[PersonalizedFedAvg]:
    """``strategy_cls`` scheduled by a policy: a subclass of :class:`ChannelScheduled` and it
    (``strategy_cls`` itself if it already is one). A ``schedule`` of the class's own still
    runs first: the policy picks among the nodes it keeps."""
    if issubclass(strategy_cls, ChannelScheduled):
        return strategy_cls
    return type(f"{strategy_cls.__name__}Scheduled", (ChannelScheduled, strategy_cls), {})
