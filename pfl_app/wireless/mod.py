"""The wireless channel as a Flower ClientApp mod.

Every *train* message crosses the client's simulated radio link: the server's message on
the downlink, the client's reply on the uplink, with their real sizes. The mod records
what the link did in the reply (``wireless`` MetricRecord, ``wireless-status``
ConfigRecord) and enforces what it would have done to the update:

- a message whose packets still fail after ARQ is *lost*: a lost downlink means the client
  never trains; a lost uplink reaches the server without its arrays;
- in ``partial`` loss mode the uplink arrives with the lost chunks zeroed and a
  ``wireless-mask`` ArrayRecord saying which elements arrived;
- a client whose downlink + simulated compute (``wireless.compute-s``, or under
  ``wireless.device`` the training's FLOPs over the device's throughput) + uplink time, with
  any wait for its turn on the air (:meth:`~pfl_app.wireless.interface.Channel.wait_s`: TDMA
  slots), exceeds the round deadline is a *straggler*: its update is dropped.

The link is a :class:`~pfl_app.wireless.interface.Channel`, built per client and message
by the mod's channel factory: the built-in link model (:class:`~pfl_app.wireless.link.LinkChannel`)
unless the run config's ``wireless.channel`` names a class of one's own. Before the downlink
the channel learns the round's cohort, the clients the server scheduled together (the
message's ``wireless-cohort`` record), so that a channel where clients share the spectrum
can be written.

Evaluate messages are the simulator's measurement of the models and do not go on the air.
Strategies need no change to run over it: :class:`pfl_app.strategies.PersonalizedFedAvg`
reads these records, leaves lost updates out and aggregates partial ones per element.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from ..client.context import client_identity, run_config
from ..config import RunConfig
from ..protocol import (
    ARRAYS_KEY,
    CLIENT_ID_KEY,
    CLIENT_KEY,
    COHORT_NODE_IDS_KEY,
    COHORT_SHARES_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    OUTCOME_DELIVERED,
    OUTCOME_KEY,
    OUTCOME_LOST,
    OUTCOME_PARTIAL,
    OUTCOMES,
    REASON_KEY,
    SERVER_ROUND_KEY,
    TRAIN_FLOPS_KEY,
    TRAIN_SECONDS_KEY,
    WIRELESS_COHORT_KEY,
    WIRELESS_COMPUTE_S_KEY,
    WIRELESS_KEY,
    WIRELESS_MASK_KEY,
    WIRELESS_STATUS_KEY,
    WIRELESS_WORKLOAD_KEY,
)
from ..records import from_arrayrecord, message_bytes, to_arrayrecord
from .access import ACCESS_DEDICATED, CellChannel
from .aircomp import AGGREGATION_AIRCOMP, analog_air_time_s
from .channel import Transmission
from .csi import faded_snr_db
from .device import device_profile
from .interface import Channel, Cohort, build_channel, load_channel_class
from .link import LinkChannel
from .partial import arrival_masks
from .profiles import LinkProfile

#: ``factory(cfg, client_id, num_clients) -> Channel``: what :class:`WirelessMod` builds channels with.
ChannelFactory = Callable[[RunConfig, int, int], Channel]

# The names this module used to define; they live in pfl_app.protocol now, which the server
# imports instead of this client-side module.
STATUS_KEY = WIRELESS_STATUS_KEY
MASK_KEY = WIRELESS_MASK_KEY
__all__ = ["MASK_KEY", "OUTCOMES", "STATUS_KEY", "WIRELESS_KEY", "ChannelFactory", "WirelessMod", "client_channel",
           "compute_cost", "link_profile", "wireless_mod"]


def link_profile(cfg: RunConfig, client_id: int, num_clients: int) -> LinkProfile:
    """The link of client ``client_id`` under the run's wireless settings (the run's
    :attr:`~pfl_app.config.RunConfig.link_population`, which the server's scheduler reads too)."""
    return cfg.link_population.profile(client_id, num_clients)


def _stats(prefix: str, t: Transmission) -> dict[str, float]:
    return {
        f"snr-db-{prefix}": t.snr_db,
        f"rate-bps-{prefix}": t.rate_bps,
        f"air-time-s-{prefix}": t.air_time_s,
        f"retransmissions-{prefix}": t.retransmissions,
        f"energy-j-{prefix}": t.energy_j,
        f"bytes-{prefix}": t.nbytes,
    }


def _metrics(stats: dict) -> MetricRecord:
    # Floats only, and finite: a MetricRecord must survive JSON and averaging.
    return MetricRecord({k: float(v) if math.isfinite(float(v)) else 0.0 for k, v in stats.items()})


def _lost_reply(msg: Message, client_id: int, stats: dict, reason: str) -> Message:
    content = RecordDict({
        WIRELESS_KEY: _metrics({**stats, "delivered": 0.0}),
        WIRELESS_STATUS_KEY: ConfigRecord({OUTCOME_KEY: OUTCOME_LOST, REASON_KEY: reason}),
        CLIENT_KEY: ConfigRecord({CLIENT_ID_KEY: client_id}),
    })
    return Message(content=content, reply_to=msg)


def client_channel(cfg: RunConfig, client_id: int, num_clients: int) -> Channel:
    """The default channel factory: the class ``wireless.channel`` names, on the client's link
    profile; when empty, the built-in link model with ``wireless.coherence``: a
    :class:`~pfl_app.wireless.link.LinkChannel` under ``wireless.access = "dedicated"``, else
    a :class:`~pfl_app.wireless.access.CellChannel` sharing the cell by that scheme.

    Raises
    ------
    ValueError
        Naming the run-config key when ``wireless.channel`` is not a Channel class.
    """
    profile = link_profile(cfg, client_id, num_clients)
    w = cfg.wireless
    if not w.channel:
        if w.access == ACCESS_DEDICATED:  # exactly the link model before wireless.access existed
            return LinkChannel(profile, seed=cfg.seed, client_id=client_id, num_clients=num_clients,
                               coherence=w.coherence)
        return CellChannel(profile, seed=cfg.seed, client_id=client_id, num_clients=num_clients,
                           access=w.access, coherence=w.coherence)
    try:
        return build_channel(load_channel_class(cfg.wireless.channel), profile, seed=cfg.seed,
                             client_id=client_id, num_clients=num_clients)
    except ValueError as err:
        raise ValueError(f"run-config key 'wireless.channel' = {cfg.wireless.channel!r}: {err}") from err


def compute_cost(cfg: RunConfig, channel: Channel, measured_s: float,
                 workload: MetricRecord | None) -> tuple[float, float, float]:
    """``(compute-s, compute time in the round, compute energy)`` of a client's training.

    Without ``wireless.device``: the measured training time and its energy
    (:meth:`Channel.compute_energy_j`), while the round counts the fixed ``wireless.compute-s``
    so that stragglers depend on the seed alone. With a device: both times are the
    training's FLOPs (the reply's ``wireless-workload``) over the device's sustained FLOP/s,
    and the energy that time times the device's power, so the seed alone decides all three.

    Raises
    ------
    ValueError
        Naming ``wireless.device`` when the reply carries no FLOP count.
    """
    if not cfg.wireless.device:
        return measured_s, cfg.wireless.compute_s, channel.compute_energy_j(measured_s)
    if workload is None or TRAIN_FLOPS_KEY not in workload:
        raise ValueError(f"run-config key 'wireless.device' = {cfg.wireless.device!r} needs the client's "
                         f"'{TRAIN_FLOPS_KEY}' in its train reply's '{WIRELESS_WORKLOAD_KEY}' record, which this "
                         "client did not send")
    device = device_profile(cfg.wireless.device)
    seconds = device.compute_seconds(float(workload[TRAIN_FLOPS_KEY]))
    return seconds, seconds, seconds * device.power_w


def _cohort(msg: Message, node_id: int) -> Cohort | None:
    record = msg.content.config_records.get(WIRELESS_COHORT_KEY)
    if record is None or COHORT_NODE_IDS_KEY not in record:
        return None
    return Cohort.of(record[COHORT_NODE_IDS_KEY], node_id, record.get(COHORT_SHARES_KEY))


def _sent(channel: Channel, what: str, t: object) -> Transmission:
    # A plug-in's mistake shows here, named, rather than as an AttributeError further on.
    if not isinstance(t, Transmission):
        raise TypeError(f"{type(channel).__qualname__}.{what} returned {type(t).__name__}, not a Transmission")
    return t


def _analog_uplink(cfg: RunConfig, reply: Message, profile: LinkProfile, down: Transmission) -> Transmission:
    """The reply's uplink under ``wireless.aggregation = "aircomp"``: its shared tensors go out
    as one analog transmission of ``n`` symbols (one per element) at a symbol rate equal to
    the band, ``n / B`` seconds, with every other scheduled client's at once; no packets, no
    ARQ, no losses (:mod:`pfl_app.wireless.aircomp`). The energy is the budget's,
    ``P n / B``, an upper bound: the server, which knows the power control, books each
    client's ``p_k^2 n / B``. ``bytes`` is the Flower message's, what crossed Flower."""
    arrays = reply.content.array_records.get(ARRAYS_KEY)
    n = sum(int(np.prod(a.shape)) for a in arrays.values()) if arrays is not None else 0
    air = analog_air_time_s(n, profile.bandwidth_up_hz)
    power = cfg.wireless.aircomp_power_w
    return Transmission(direction="up", nbytes=message_bytes(reply), fading_power=down.fading_power,
                        snr_db=faded_snr_db(profile, "up", down.fading_power), rate_bps=0.0, packets=0, transmissions=0, retransmissions=0,
                        air_time_s=air, energy_j=power * air, delivered=True, lost_packets=(), reason="")


class WirelessMod:
    """Send a train message and its reply over the client's simulated link (a Flower mod).

    Parameters
    ----------
    channel_factory : callable, optional
        ``channel_factory(cfg, client_id, num_clients) -> Channel``: the client's channel for
        one train message. Default: :func:`client_channel`, which reads ``wireless.channel``.
    """

    def __init__(self, channel_factory: ChannelFactory | None = None) -> None:
        self.channel_factory = channel_factory or client_channel

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        cfg = run_config(context)
        client_id, num_clients = client_identity(context)
        server_round = int(msg.content[CONFIG_KEY][SERVER_ROUND_KEY])
        channel = self.channel_factory(cfg, client_id, num_clients)
        channel.begin_round(server_round, _cohort(msg, context.node_id))
        down = _sent(channel, "downlink", channel.downlink(server_round, message_bytes(msg)))
        stats = _stats("down", down)
        # A client waiting for its turn on the air (TDMA's slots) waits in the round too.
        down_s = down.air_time_s + channel.wait_s(down)
        if not down.delivered:
            stats.update({"compute-s": 0.0, "compute-energy-j": 0.0, "client-time-s": down_s, **channel.metrics()})
            return _lost_reply(msg, client_id, stats, f"downlink {down.reason}")

        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        measured_s = float(reply.content[METRICS_KEY].get(TRAIN_SECONDS_KEY, 0.0))
        workload = reply.content.metric_records.get(WIRELESS_WORKLOAD_KEY)
        aircomp = cfg.wireless.aggregation == AGGREGATION_AIRCOMP
        if aircomp:
            up = _analog_uplink(cfg, reply, link_profile(cfg, client_id, num_clients), down)
        else:
            up = _sent(channel, "uplink", channel.uplink(server_round, message_bytes(reply)))
        stats.update(_stats("up", up))
        # The round time counts a simulated compute time (wireless.compute-s, or the device's)
        # so that stragglers depend on the seed alone; see compute_cost for the energy.
        compute_s, round_compute_s, compute_energy_j = compute_cost(cfg, channel, measured_s, workload)
        # The analog uplink is everyone's at once: no turn to wait for.
        client_time = down_s + round_compute_s + (up.air_time_s + (0.0 if aircomp else channel.wait_s(up)))
        stats.update({
            WIRELESS_COMPUTE_S_KEY: compute_s,
            "compute-energy-j": compute_energy_j,
            "client-time-s": client_time,
            **(dict(workload) if workload is not None else {}),  # train-tokens, train-flops, ...: recorded
            **channel.metrics(),
        })
        deadline = cfg.wireless.deadline_s
        outcome, reason = OUTCOME_DELIVERED, "ok"  # never empty: ConfigRecord.count_bytes() rejects ""
        if deadline > 0 and client_time > deadline:
            outcome, reason = OUTCOME_LOST, f"straggler: {client_time:.3f} s > deadline {deadline:g} s"
        elif not up.delivered:
            outcome, reason = OUTCOME_LOST, f"uplink {up.reason}"
            arrays = reply.content.array_records.get(ARRAYS_KEY)
            if cfg.wireless.loss_mode == "partial" and arrays is not None and up.rate_bps > 0:
                tensors = from_arrayrecord(arrays)
                masks = arrival_masks({k: v.size for k, v in tensors.items()}, up.lost_packets,
                                      channel.packet_bytes, channel.overhead_bytes)
                if any(m.any() for m in masks.values()):
                    outcome = OUTCOME_PARTIAL
                    reason = f"uplink lost {len(up.lost_packets)} of {up.packets} packets"
                    reply.content[ARRAYS_KEY] = to_arrayrecord(
                        {k: np.where(masks[k], v.reshape(-1), 0.0).reshape(v.shape) for k, v in tensors.items()})
                    reply.content[WIRELESS_MASK_KEY] = ArrayRecord(
                        {k: Array(m.astype(np.uint8).reshape(tensors[k].shape)) for k, m in masks.items()})
        stats["delivered"] = 1.0 if outcome == OUTCOME_DELIVERED else 0.0
        if outcome == OUTCOME_LOST:  # the server gets to know what happened, but not the arrays
            kept = {k: v for k, v in reply.content.items() if not isinstance(v, ArrayRecord)}
            reply = Message(content=RecordDict(kept), reply_to=msg)
        reply.content[WIRELESS_KEY] = _metrics(stats)
        reply.content[WIRELESS_STATUS_KEY] = ConfigRecord({OUTCOME_KEY: outcome, REASON_KEY: reason})
        return reply


#: The mod with the default channel factory, under the name the function it replaces had.
wireless_mod = WirelessMod()
