"""The base of every personalized strategy: FedAvg over the shared part of the model."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from ..accounting import RoundLedger
from ..compression import Compression, CodecError, decode_content, encode_into
from ..compression.codec import BITS, CODEC_NONE
from ..config import RunConfig
from ..models.personalized import format_groups
from ..privacy import DP_CENTRAL, clip_update, fixed_cohort_mean
from ..protocol import (
    ARRAYS_KEY,
    CLIENT_ID_KEY,
    CLIENT_KEY,
    COHORT_NODE_IDS_KEY,
    COHORT_SHARES_KEY,
    COMPRESSION_UP_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    OUTCOME_DELIVERED,
    OUTCOME_KEY,
    OUTCOME_LOST,
    REASON_KEY,
    RECEIVED_PREFIX,
    SCALES_KEY,
    SCORE_RECEIVED_KEY,
    SHARED_GROUPS_KEY,
    TASK_KEY,
    TRAINED_GROUPS_KEY,
    UPDATE_NORM_KEY,
    WIRELESS_BYTES_UP_KEY,
    WIRELESS_COHORT_KEY,
    WIRELESS_KEY,
    WIRELESS_MASK_KEY,
    WIRELESS_STATUS_KEY,
)
from ..records import from_arrayrecord, message_bytes, to_arrayrecord
from ..wireless.interface import Cohort
from ..wireless.partial import masked_weighted_average
from .validation import norm_outliers, update_problem

# Never travels: the name under which aggregate_train hands each update's weight to Flower's
# aggregate_arrayrecords, on the server alone.
AGGREGATION_WEIGHT_KEY = "aggregation-weight"

# on_round_end(server_round, rows, global_shared_tensors)
RoundCallback = Callable[[int, list[dict[str, Any]], dict[str, Any]], None]


_PROBE = -1  # a value every check refuses, to have it describe what it allows


class TooFewClients(RuntimeError):
    """Fewer clients answered a round than the run requires (``min-answers``).

    Attributes
    ----------
    server_round : int
        The round that failed.
    rows : list of dict
        A row per client of that round, as ``on_round_end`` would have had them (the
        failed clients' rows have ``status = "error"`` and the error's last lines): the
        round never reaches ``on_round_end``, so this is the only way they are recorded.
    """

    def __init__(self, message: str, server_round: int = 0, rows: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.server_round = server_round
        self.rows = list(rows or [])


@dataclass(frozen=True)
class AcceptedUpdate:
    """A client's update that passed every check of :meth:`PersonalizedFedAvg.accept_updates`.

    Attributes
    ----------
    node : int
        The node it came from.
    tensors : dict of str to ndarray
        The shared tensors it carries, by name, as they arrived (the channel zeroes the lost
        elements of a partial update: read them only where ``mask`` is nonzero).
    mask : dict of str to ndarray, or None
        For a partial update (``wireless.loss-mode = "partial"``), an array per tensor with
        as many elements (the channel sends it in the tensor's shape), nonzero where the
        element arrived; ``None`` for an update that arrived whole.
    metrics : MetricRecord
        Its train metrics (``num-examples``, ``train-loss``, ...).
    arrays : ArrayRecord
        ``tensors`` as the record they arrived in, for Flower's aggregation helpers.
    """

    node: int
    tensors: dict[str, np.ndarray]
    mask: dict[str, np.ndarray] | None
    metrics: MetricRecord
    arrays: ArrayRecord


class PersonalizedFedAvg(FedAvg):
    """FedAvg that shares only some tensor groups and keeps the rest on the clients.

    Subclasses set two class attributes, both subsets of
    :data:`pfl_app.models.personalized.TENSOR_GROUPS`:

    - :attr:`shared_groups`: sent to the clients in every train and evaluate message and
      averaged, weighted by each client's number of examples; every other group stays on
      its client;
    - :attr:`trained_groups`: updated by local training; the others stay frozen at their
      (seeded, identical on every client) initial values, or at the global value if shared.

    Each message's config carries ``shared-groups`` and ``trained-groups``, so clients need
    no per-method code.

    The strategy also checks every update before it is averaged (names and shapes equal
    to what was sent, finite values: anything else is rejected and logged), measures the
    bytes of every message in both directions, and after each round's evaluation hands a
    row per client to ``on_round_end``.

    :meth:`aggregate_train` runs four steps, each a method to override on its own:
    :meth:`accept_updates` (wireless outcome, record and update checks, the ledger, norm
    outliers), Flower's ``train_metrics_aggr_fn``, :meth:`aggregation_weights` and
    :meth:`aggregate`, the aggregation rule (by default the weighted average).

    Parameters
    ----------
    method : str
        Name written in every result row (default: the class name).
    on_round_end : callable, optional
        ``on_round_end(server_round, rows, shared)``, called once per round with a row per
        client and the round's global shared tensors.
    norm_factor : float
        See :attr:`norm_factor` (run-config ``update-norm-factor``).
    min_answers : int
        See :attr:`min_answers` (run-config ``min-answers``).
    **fedavg_kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.

    A subclass with settings of its own declares them in :attr:`option_checks` (a check
    each) and reads them from the run config in :meth:`run_config_options`; the
    constructor takes and checks them like the base's, and :meth:`from_run_config`
    builds any strategy from a run config.
    """

    #: Each setting this class takes besides Flower's: ``check(value) -> str | None``, a
    #: description of what is allowed when the value is not. Merged along the MRO.
    option_checks: dict[str, Callable[[Any], str | None]] = {
        "norm_factor": lambda v: None if v >= 0 else "a number >= 0 (0: off)",
        "min_answers": lambda v: None if isinstance(v, int) and v >= 1 else "a whole number >= 1",
        "eval_every": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 1
        else "a whole number >= 1 (rounds)",
        "eval_fraction": lambda v: None if 0 < v <= 1 else "a number in (0, 1]",
        "num_rounds": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 0
        else "a whole number >= 0 (0: not known)",
        "eval_in_train": lambda v: None if isinstance(v, bool) else "true or false",
        "compression": lambda v: None if isinstance(v, Compression) else "a pfl_app.compression.Compression",
        "seed": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 0
        else "a whole number >= 0",
        "dp_clipping_norm": lambda v: None if v >= 0 else "a number >= 0 (0: off)",
        "dp_cohort": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 0
        else "a whole number >= 0 (0: off)",
    }

    shared_groups: tuple[str, ...] = ("adapter", "lora_A", "lora_B")
    # What the rest of pfl-app reads of a method (pfl_app.methods.MethodSpec): which client
    # handlers train it, what its model carries besides adapters and LoRA, and which of its
    # models is its result.
    client_kind: str = "task"
    model_parts: tuple[str, ...] = ()
    delivered_model: str = "personalized"
    #: Whether one client trains on every client's data (the centralized reference): no
    #: update then comes from one client's data alone, which user-level DP needs.
    pools_data: bool = False
    #: Rounds up to this one were finished before a resume: they are skipped.
    resume_after: int = 0
    #: An update whose distance from the global tensors exceeds this many times the
    #: round's median distance is rejected (with 3 or more updates); 0 turns it off.
    norm_factor: float = 10.0
    #: Fewest answers a round needs for the run to go on (or all that were asked, if fewer).
    min_answers: int = 1
    #: Evaluate in every ``eval_every``-th round and in the last one (:meth:`evaluates`).
    eval_every: int = 1
    #: Share of the evaluate messages sent in a round before the last (the last sends them all).
    eval_fraction: float = 1.0
    #: The run's last round (run-config ``num-server-rounds``); 0: not known, so no round is
    #: treated as the last.
    num_rounds: int = 0
    #: Score a round's delivered models in the next round's train message (:meth:`evaluates`).
    eval_in_train: bool = False
    #: What the shared tensors travel as (run-config ``compression.*``; :mod:`pfl_app.compression`):
    #: the downlink codec encodes the global tensors of every message, the uplink codec tells
    #: the clients how to send their updates, which :meth:`accept_updates` decodes.
    compression: Compression = Compression()
    #: The run's seed: stochastic rounding of the downlink draws from it and the round.
    seed: int = 0
    #: Central DP (run-config ``dp.*``, :mod:`pfl_app.privacy`): every decoded update is clipped
    #: to this L2 norm before it is aggregated; 0: off.
    dp_clipping_norm: float = 0.0
    #: Central DP: aggregate by :func:`pfl_app.privacy.fixed_cohort_mean` over this many clients
    #: (the round's planned cohort, which the DP wrapper sets) instead of :meth:`aggregate`; 0: off.
    dp_cohort: int = 0
    trained_groups: tuple[str, ...] = ("adapter", "lora_A", "lora_B")

    def __init__(self, *, method: str = "", on_round_end: RoundCallback | None = None, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in self.option_names()}
        super().__init__(**kwargs)
        self.method = method or type(self).__name__
        self.on_round_end = on_round_end
        self.set_options(**options)
        self._ledger: RoundLedger | None = None
        self._expected: dict[str, tuple[int, ...]] = {}
        self._current: dict = {}
        # What the clients decode of _current (itself without a downlink codec): their updates' base.
        self._base: dict = {}
        self._reply_arrays_bytes: dict[str, int] = {}  # reply_bytes_estimate's, per codec and round
        self._uplink_codecs: dict[int, str] = {}  # node -> its codec this round (compression.uplink = adaptive)
        self._evaluated: ArrayRecord | None = None
        self._scored: RoundLedger | None = None  # eval.in-train: the last round's scores
        self._sent = 0
        self._addressed: list[Message] = []
        self.rejected: list[tuple[int, int, str]] = []

    # -- settings ---------------------------------------------------------------------
    @classmethod
    def option_names(cls) -> dict[str, Callable[[Any], str | None]]:
        """Every setting of this class and its bases, with its check."""
        merged: dict[str, Callable[[Any], str | None]] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("option_checks", {}))
        return merged

    def set_options(self, **options: Any) -> None:
        """Check and set settings named in :meth:`option_names`.

        Raises ``ValueError`` naming the setting and what it allows.
        """
        checks = self.option_names()
        for name, value in options.items():
            if name not in checks:
                raise ValueError(f"{type(self).__name__} has no setting {name!r}; its settings: {sorted(checks)}")
            try:
                allowed = checks[name](value)
            except TypeError:  # a value of another type: its check cannot even compare it
                allowed = checks[name](_PROBE) or "another type"
            if allowed is not None:
                raise ValueError(f"{type(self).__name__}: {name} = {value!r} is not allowed; allowed: {allowed}")
            setattr(self, name, value)

    @classmethod
    def run_config_options(cls, cfg: RunConfig) -> dict[str, Any]:
        """This class's settings as the run config gives them; override to add your own."""
        central = cfg.dp.mode == DP_CENTRAL
        # Under central DP, whether one update is rejected as an outlier would depend on the
        # others' norms, which breaks the per-client bound the noise is calibrated for: off.
        return {"norm_factor": 0.0 if central else cfg.update_norm_factor, "min_answers": cfg.min_answers,
                "eval_every": cfg.eval.every, "eval_fraction": cfg.eval.fraction, "eval_in_train": cfg.eval.in_train,
                "num_rounds": cfg.num_server_rounds, "compression": cfg.compression.settings(), "seed": cfg.seed,
                "dp_clipping_norm": cfg.dp.clipping_norm if central else 0.0}

    @classmethod
    def from_run_config(cls, cfg: RunConfig, **kwargs: Any) -> PersonalizedFedAvg:
        """Build the strategy with its settings from ``cfg``; ``kwargs`` go to the constructor
        as they are (Flower's sampling settings, ``on_round_end``, ...)."""
        return cls(**{**cls.run_config_options(cfg), **kwargs})

    # -- hooks for subclasses -------------------------------------------------------
    def check_update(self, node_id: int, update: dict) -> str | None:
        """Why an update must be rejected, or ``None``. Override to add checks."""
        return update_problem(update, self._expected)

    def check_metrics(self, node_id: int, metrics: MetricRecord) -> str | None:
        """Why an update's train metrics make it unusable, or ``None``. Override to require
        what :meth:`aggregation_weights` reads."""
        return None

    def aggregation_weights(self, server_round: int, updates: list[tuple[int, MetricRecord]]) -> list[float]:
        """The weight of each accepted update ``(node, its train metrics)`` in the average.

        FedAvg's: the client's number of examples (``weighted_by_key``). Override to weight
        updates otherwise; the weights need not sum to one.
        """
        return [float(metrics[self.weighted_by_key]) for _, metrics in updates]

    def _reject(self, server_round: int, node: int, problem: str) -> None:
        log(WARNING, "round %d: rejected the update of node %d: %s", server_round, node, problem)
        self.rejected.append((server_round, node, problem))
        self._ledger_for(server_round).note(node, status="rejected", error=problem)

    # -- Strategy ------------------------------------------------------------------
    def _ledger_for(self, server_round: int) -> RoundLedger:
        if self._ledger is None or self._ledger.server_round != server_round:
            self._ledger = RoundLedger(server_round)
        return self._ledger

    def _outgoing(self, server_round: int, messages: Iterable[Message]) -> list[Message]:
        ledger = self._ledger_for(server_round)
        messages = list(messages)
        for m in messages:
            ledger.downlink(m.metadata.dst_node_id, message_bytes(m))
        self._sent = len(messages)
        self._addressed = messages  # the grid gives each its message id when it sends it
        return messages

    def node_of(self, reply: Message) -> int:
        """The node a reply is about: the one its instruction went to.

        Not always the reply's sender: when a node stops sending heartbeats (a killed
        SuperNode), the SuperLink answers for it with an error from its own node id.
        """
        for sent in self._addressed:
            if sent.metadata.message_id and sent.metadata.message_id == reply.metadata.reply_to_message_id:
                return sent.metadata.dst_node_id
        return reply.metadata.src_node_id

    def _with_groups(self, config: ConfigRecord) -> ConfigRecord:
        config[SHARED_GROUPS_KEY] = format_groups(self.shared_groups)
        config[TRAINED_GROUPS_KEY] = format_groups(self.trained_groups)
        return self.compression.write(config)

    def _encode_downlink(self, server_round: int, messages: list[Message], stream: int) -> dict[str, np.ndarray]:
        """Put the downlink codec's encoding of the messages' global tensors in each of them
        (one encoding for all: every client of the round decodes the same tensors) and return
        what they decode to; without a downlink codec the messages stay float32 and the
        tensors are returned as they are. ``stream`` keeps the train and evaluate messages'
        stochastic rounding apart."""
        c = self.compression
        if not messages:
            return {}
        tensors = from_arrayrecord(messages[0].content[ARRAYS_KEY])
        if c.downlink == CODEC_NONE:
            return tensors
        rng = np.random.default_rng([self.seed, server_round, stream]) if c.stochastic_rounding else None
        encoded = RecordDict()
        encode_into(encoded, tensors, c.downlink, c.block_size, rng)
        for m in messages:
            for key, record in encoded.items():
                m.content[key] = record
        return decode_content(encoded, c.downlink, c.block_size, {k: v.shape for k, v in tensors.items()})

    def _update_tensors(self, content: RecordDict, codec: str | None = None) -> tuple[dict[str, np.ndarray], str | None]:
        """The shared tensors a train reply stands for, or why it does not decode.

        Without compression, its float32 tensors. With an uplink codec, it carries the client's
        change from the tensors it decoded (:attr:`_base`), encoded: the result is the global
        tensors this server holds (:attr:`_current`, float32) plus that change decoded. With a
        downlink codec alone, the reply's tensors less :attr:`_base` plus :attr:`_current`.
        Adding the change to ``_current`` rather than ``_base`` keeps the downlink's rounding
        out of the global model (see :mod:`pfl_app.compression`).
        """
        c = self.compression
        if not c.active:
            return from_arrayrecord(content[ARRAYS_KEY]), None
        codec = codec or c.uplink  # the codec this client was told (compression.uplink = adaptive)
        try:
            received = decode_content(content, codec, c.block_size, self._expected)
        except CodecError as err:
            return {}, f"its {codec} update does not decode: {err}"
        if codec == CODEC_NONE:
            received = {k: v - self._base[k] for k, v in received.items()}
        return {k: (np.asarray(self._current[k], np.float32) + v).astype(np.float32)
                for k, v in received.items()}, None

    def _skipped(self, server_round: int) -> bool:
        # Flower's start() counts rounds from 1; on resume the finished ones send nothing,
        # so the rest keep their own round numbers (client seeds, channel draws, and the
        # bias correction of Flower's adaptive optimizers all depend on them).
        if server_round <= self.resume_after:
            self._sent = 0
            return True
        return False

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self._skipped(server_round):
            log(INFO, "round %d: finished before the resume, skipped", server_round)
            return []
        self._current = from_arrayrecord(arrays)
        self._expected = {k: tuple(v.shape) for k, v in self._current.items()}
        config = self._with_groups(config)
        if self.eval_in_train and server_round > 1 and self.evaluates(server_round - 1):
            config[SCORE_RECEIVED_KEY] = True
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        # Encoded before scheduling, so that a scheduler reads the sizes that go on the air.
        self._base = self._encode_downlink(server_round, msgs, 0) or self._current
        self._reply_arrays_bytes, self._uplink_codecs = {}, {}
        return self._outgoing(server_round, self._scheduled(server_round, msgs))

    def reply_bytes_estimate(self, message: Message, codec: str | None = None) -> int:
        """About the bytes of the reply to train ``message``: its own, with the shared tensors
        as ``codec`` (default: the uplink codec) sends them (a scheduler's estimate of the
        uplink; the metrics and config a reply carries instead of the instruction's config
        differ by a few bytes)."""
        size = message_bytes(message)
        c = self.compression
        codec = codec or c.uplink
        if codec == c.downlink:
            return size
        if codec not in self._reply_arrays_bytes:
            encoded = RecordDict()
            encode_into(encoded, {k: np.zeros(v.shape, np.float32) for k, v in self._current.items()},
                        codec, c.block_size)
            self._reply_arrays_bytes[codec] = int(sum(r.count_bytes() for r in encoded.values()))
        sent = sum(message.content.array_records[k].count_bytes() for k in (ARRAYS_KEY, SCALES_KEY)
                   if k in message.content.array_records)
        return size - sent + self._reply_arrays_bytes[codec]

    def uplink_codec(self, server_round: int, node: int, cohort: list[int]) -> str:
        """The codec ``node``'s update travels as in ``server_round``, under
        ``compression.uplink = adaptive`` (``cohort``: every node scheduled with it).

        The base cannot pick one: it knows no channel. Every strategy that
        :func:`~pfl_app.strategies.server_optimizers.build_strategy` builds can (see
        :meth:`pfl_app.strategies.scheduling.ChannelScheduled.uplink_codec`).
        """
        raise ValueError(f"{type(self).__name__}: compression.uplink = 'adaptive' picks each client's codec from "
                         "its channel, which only a channel-scheduled strategy knows (build it with "
                         "pfl_app.strategies.build_strategy)")

    def schedule(self, server_round: int, node_ids: list[int]) -> list[int]:
        """Which of the nodes Flower's sampling chose train, and transmit, in ``server_round``.

        Override to schedule clients on the air (a few per round, by channel quality, ...);
        the default keeps them all. Every chosen node's train message carries the sorted
        list of the chosen ones, which the wireless mod hands to the client's channel
        (:meth:`pfl_app.wireless.interface.Channel.begin_round`).

        Parameters
        ----------
        server_round : int
            The round, from 1.
        node_ids : list of int
            The sampled nodes, sorted.

        Returns
        -------
        list of int
            A subset of ``node_ids``, in any order.
        """
        return list(node_ids)

    def cohort_shares(self, server_round: int, node_ids: list[int]) -> list[float] | None:
        """Each scheduled node's share of the cell's air in ``server_round``, or ``None``.

        Called after :meth:`schedule`, with the nodes it chose. A list, aligned with
        ``node_ids``, each > 0 and summing to 1, goes with them in the ``wireless-cohort``
        record (:data:`pfl_app.protocol.COHORT_SHARES_KEY`): under ``wireless.access`` ``tdma``
        or ``ofdma`` each client's channel then uses its entry instead of ``1 / K``. The
        default sends none (equal shares).

        Parameters
        ----------
        server_round : int
            The round, from 1.
        node_ids : list of int
            The scheduled nodes, sorted.
        """
        return None

    def _cohort_record(self, server_round: int, node_ids: list[int]) -> ConfigRecord:
        cohort = ConfigRecord({COHORT_NODE_IDS_KEY: node_ids})
        shares = self.cohort_shares(server_round, node_ids)
        if shares is not None:
            shares = [float(x) for x in shares]
            try:  # refused here, named, rather than by every client of the round
                Cohort.of(node_ids, node_ids[0], shares)
            except ValueError as err:
                raise ValueError(f"{type(self).__name__}.cohort_shares of round {server_round}: {err}") from err
            cohort[COHORT_SHARES_KEY] = shares
        return cohort

    def _scheduled(self, server_round: int, messages: Iterable[Message]) -> list[Message]:
        """The messages of the nodes :meth:`schedule` keeps, each told the round's cohort."""
        messages = list(messages)
        sampled = sorted(m.metadata.dst_node_id for m in messages)
        chosen = set(self.schedule(server_round, list(sampled)))
        if not chosen <= set(sampled):
            raise ValueError(f"{type(self).__name__}.schedule chose nodes {sorted(chosen - set(sampled))} that were "
                             f"not sampled in round {server_round}; it must pick from {sampled}")
        kept = [m for m in messages if m.metadata.dst_node_id in chosen]
        if len(kept) < len(messages):
            log(INFO, "round %d: %d of %d sampled node(s) scheduled", server_round, len(kept), len(messages))
        if kept:
            # A record of the simulated link, outside the byte counts (protocol.SIMULATION_PREFIX):
            # it is the scheduler's knowledge, not payload.
            cohort = self._cohort_record(server_round, sorted(chosen))
            ledger = self._ledger_for(server_round)
            for m in kept:
                m.content[WIRELESS_COHORT_KEY] = cohort
                # The fairness report counts these (pfl_app.results: times_scheduled).
                ledger.note(m.metadata.dst_node_id, scheduled=True)
            if self.compression.adaptive:
                kept = [self._with_uplink_codec(server_round, m, sorted(chosen)) for m in kept]
        return kept

    def _with_uplink_codec(self, server_round: int, message: Message, cohort: list[int]) -> Message:
        """``message`` with its own config naming the codec :meth:`uplink_codec` picks for its
        node (Flower's messages of a round share one content: this one gets a copy)."""
        node = message.metadata.dst_node_id
        codec = self.uplink_codec(server_round, node, cohort)
        self._uplink_codecs[node] = codec
        self._ledger_for(server_round).note(node, uplink_codec=codec, uplink_bits=BITS[codec])
        content = RecordDict(dict(message.content.items()))
        config = ConfigRecord(dict(message.content.config_records[CONFIG_KEY]))
        config[COMPRESSION_UP_KEY] = codec
        content[CONFIG_KEY] = config
        return Message(content=content, message_type=message.metadata.message_type, dst_node_id=node)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self._skipped(server_round):
            return []
        # The round's global tensors, saved at the round's end whether or not it evaluates.
        self._evaluated = arrays
        if not self.evaluates(server_round):
            log(INFO, "round %d: no evaluation (eval-every %d)", server_round, self.eval_every)
            return self._outgoing(server_round, [])
        if self.eval_in_train and server_round != self.num_rounds:
            log(INFO, "round %d: its models are scored in the next round's train messages", server_round)
            return self._outgoing(server_round, [])
        msgs = list(super().configure_evaluate(server_round, arrays, self._with_groups(config), grid))
        if self.eval_fraction < 1 and server_round != self.num_rounds and msgs:
            keep = max(1, round(len(msgs) * self.eval_fraction))
            # Python's random, as Flower's own sampling: the server seeds it and checkpoints its state.
            msgs = random.sample(msgs, keep)
            log(INFO, "round %d: %d client(s) evaluate (eval-fraction %g)", server_round, keep, self.eval_fraction)
        self._encode_downlink(server_round, msgs, 1)
        return self._outgoing(server_round, msgs)

    def evaluates(self, server_round: int) -> bool:
        """Whether ``server_round``'s models are scored: every :attr:`eval_every`-th round, and
        the last (:attr:`num_rounds`) always, so that a run's final figures are always measured.

        They are scored in the round's evaluate messages; with :attr:`eval_in_train`, in the
        next round's train messages instead (by the clients sampled to train then, before they
        train; each reply's scores become a row of the scored round, status ``scored``), so the
        same tensors are not sent twice. The last round has no next: it still evaluates.
        """
        return server_round == self.num_rounds or server_round % self.eval_every == 0

    def _received(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """Account for every reply; return those that carry content.

        Raises :class:`TooFewClients` when fewer than :attr:`min_answers` clients (or than
        were asked, if fewer were) answered: a reply with an error, or none before the
        timeout, is no answer.
        """
        ledger = self._ledger_for(server_round)
        ok = []
        replies = list(replies)
        for msg in replies:
            node = self.node_of(msg)
            if msg.has_error():
                log(WARNING, "round %d: node %d failed: %s", server_round, node, msg.error.reason)
                # Tracebacks relayed by Ray end with the exception itself: keep the end.
                ledger.note(node, status="error", error=str(msg.error.reason).strip()[-500:])
                continue
            content = msg.content
            link = content.metric_records.get(WIRELESS_KEY)
            # A lost uplink still spent its bytes on the air; the channel records how many.
            sent = (int(link[WIRELESS_BYTES_UP_KEY]) if link is not None and WIRELESS_BYTES_UP_KEY in link
                    else message_bytes(msg))
            ledger.uplink(node, sent)
            client = content.config_records.get(CLIENT_KEY)
            if client is not None:
                ledger.note(node, client=int(client[CLIENT_ID_KEY]))
                if TASK_KEY in client:
                    ledger.note(node, task=str(client[TASK_KEY]))
            if link is not None:
                ledger.note(node, **{k.replace("-", "_"): float(v) for k, v in link.items()})
            ok.append(msg)
        if len(ok) < min(self.min_answers, self._sent):
            raise TooFewClients(
                f"round {server_round}: {len(ok)} of {self._sent} client(s) answered ({len(replies) - len(ok)} "
                f"failed, {self._sent - len(replies)} timed out), fewer than min-answers={self.min_answers}; "
                "stopping the run",
                server_round,
                self._rows(ledger),
            )
        return ok

    def _rows(self, ledger: RoundLedger) -> list[dict[str, Any]]:
        return [{**r, "method": self.method} for r in ledger.rows()]

    def accept_updates(self, server_round: int, replies: Iterable[Message]) -> list[AcceptedUpdate]:
        """The updates of this round that may be aggregated, each booked in the round's ledger.

        Every reply is accounted for (:meth:`_received`); an update lost on the air, one
        without its records, one that fails :meth:`check_update` or :meth:`check_metrics`,
        and one that moved far more than the others (:func:`norm_outliers`) are logged and
        left out.

        Parameters
        ----------
        server_round : int
            The round the replies answer.
        replies : iterable of Message
            The train replies, as Flower hands them to :meth:`aggregate_train`.

        Returns
        -------
        list of AcceptedUpdate
            In the order of ``replies``; empty when no update may be aggregated.

        Raises
        ------
        TooFewClients
            When fewer clients answered than :attr:`min_answers`.
        """
        ledger = self._ledger_for(server_round)
        accepted: list[AcceptedUpdate] = []
        for msg in self._received(server_round, replies):
            node = self.node_of(msg)
            status = msg.content.config_records.get(WIRELESS_STATUS_KEY)
            outcome = str(status[OUTCOME_KEY]) if status is not None else OUTCOME_DELIVERED
            if outcome == OUTCOME_LOST:
                reason = str(status[REASON_KEY])
                log(WARNING, "round %d: the update of node %d was lost on the air: %s", server_round, node, reason)
                ledger.note(node, status="lost", error=reason)
                continue
            arrays = msg.content.array_records.get(ARRAYS_KEY)
            metrics = msg.content.metric_records.get(METRICS_KEY)
            if metrics is not None:
                self._note_received_scores(server_round, node, msg, metrics)
            if arrays is None or metrics is None or self.weighted_by_key not in metrics:
                self._reject(server_round, node, f"expected an ArrayRecord '{ARRAYS_KEY}' and a MetricRecord "
                             f"'{METRICS_KEY}' with '{self.weighted_by_key}'")
                continue
            tensors, problem = self._update_tensors(msg.content, self._uplink_codecs.get(node))
            if problem is None and self.compression.active:
                arrays = to_arrayrecord(tensors)  # what Flower's helpers average: the decoded tensors
            problem = problem or self.check_update(node, tensors) or self.check_metrics(node, metrics)
            if problem is not None:
                self._reject(server_round, node, problem)
                continue
            mask = msg.content.array_records.get(WIRELESS_MASK_KEY)
            arrived = from_arrayrecord(mask) if mask is not None else None
            if self.dp_clipping_norm > 0:
                # After the checks (a NaN update is rejected, not clipped), on the decoded tensors.
                tensors, norm = clip_update(tensors, self._current, self.dp_clipping_norm, arrived)
                arrays = to_arrayrecord(tensors)
                # The client's own measure (before it clipped) where it sent one.
                norm = float(metrics.get(UPDATE_NORM_KEY, norm))
                ledger.note(node, update_norm=norm, clipped=norm > self.dp_clipping_norm)
            ledger.note(
                node,
                # train-loss, train-seconds and what else the client measured (RLHF: rewards).
                **{k.replace("-", "_"): float(v) for k, v in metrics.items()
                   if k != self.weighted_by_key and isinstance(v, (int, float))},
                status="partial" if mask is not None else "ok",
                num_train_examples=int(metrics[self.weighted_by_key]),
            )
            if mask is not None:
                ledger.note(node, error=str(status[REASON_KEY]))
            accepted.append(AcceptedUpdate(node, tensors, arrived, metrics, arrays))
        outliers = norm_outliers([(u.node, u.tensors, u.mask) for u in accepted], self._current, self.norm_factor)
        for node, problem in outliers.items():
            self._reject(server_round, node, problem)
        return [u for u in accepted if u.node not in outliers]

    def aggregate(
        self, updates: list[AcceptedUpdate], weights: list[float], current: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The new shared tensors from this round's accepted updates: the aggregation rule.

        The default is FedAvg's weighted average: Flower's
        :func:`~flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords` when every
        update arrived whole, else :func:`~pfl_app.wireless.partial.masked_weighted_average`
        (each element averaged over the updates whose element arrived; where none did, its
        value in ``current`` stays). Override to aggregate otherwise; the checks, the
        bookkeeping and the weights stay the base's.

        Parameters
        ----------
        updates : list of AcceptedUpdate
            The updates that passed every check (:meth:`accept_updates`); never empty.
        weights : list of float
            One per update, from :meth:`aggregation_weights`; they need not sum to one.
        current : dict of str to ndarray
            The shared tensors the server sent this round, by name: what every update
            started from, and the names and shapes to return.

        Returns
        -------
        dict of str to ndarray
            A tensor per name of ``current``, of its shape; sent as float32.
        """
        if self.dp_cohort > 0:
            return fixed_cohort_mean([u.tensors for u in updates], [u.mask for u in updates], current,
                                     self.dp_cohort)
        if all(u.mask is None for u in updates):
            # Flower's helper averages by a metric: hand it the weights as one.
            weighted = [RecordDict({ARRAYS_KEY: u.arrays,
                                    METRICS_KEY: MetricRecord({AGGREGATION_WEIGHT_KEY: w})})
                        for u, w in zip(updates, weights, strict=True)]
            return from_arrayrecord(aggregate_arrayrecords(weighted, AGGREGATION_WEIGHT_KEY))
        return masked_weighted_average([u.tensors for u in updates], [u.mask for u in updates], weights, current)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Accept the updates, aggregate their metrics, weigh them and aggregate them.

        The steps are :meth:`accept_updates`, Flower's ``train_metrics_aggr_fn``,
        :meth:`aggregation_weights` and :meth:`aggregate`; override those rather than this.

        Returns
        -------
        tuple of (ArrayRecord or None, MetricRecord or None)
            The new shared tensors and the round's train metrics; ``(None, None)`` when no
            update may be aggregated (the shared tensors then stay as they were).
        """
        if self._skipped(server_round):
            return None, None
        updates = self.accept_updates(server_round, replies)
        if not updates:
            log(WARNING, "round %d: no update to aggregate; the shared tensors stay as they were", server_round)
            return None, None
        # Only the update and its metrics go to Flower's helper.
        metrics = self.train_metrics_aggr_fn(
            [RecordDict({ARRAYS_KEY: u.arrays, METRICS_KEY: u.metrics}) for u in updates], self.weighted_by_key
        )
        weights = self.aggregation_weights(server_round, [(u.node, u.metrics) for u in updates])
        if self.dp_cohort > 0:  # each update counts 1/n of the planned cohort (pfl_app.privacy)
            weights = [1.0] * len(updates)
        total = max(sum(weights), self.dp_cohort)
        ledger = self._ledger_for(server_round)
        for u, w in zip(updates, weights):
            ledger.note(u.node, aggregation_weight=w / total if total > 0 else 0.0)
        return to_arrayrecord(self.aggregate(updates, weights, self._current)), metrics

    def note_round(self, server_round: int, **fields: Any) -> None:
        """Note ``fields`` on every row of ``server_round`` so far: facts about the whole round,
        from a wrapper such as :class:`pfl_app.strategies.privacy.CentralPrivacy`."""
        self._ledger_for(server_round).note_all(**fields)

    def _note_received_scores(self, server_round: int, node: int, msg: Message, metrics: MetricRecord) -> None:
        """Book the scores a train reply made of the last round's models (``eval.in-train``)
        as a row of that round."""
        found = {k.removeprefix(RECEIVED_PREFIX): v for k, v in metrics.items() if k.startswith(RECEIVED_PREFIX)}
        if not found or server_round < 2:
            return
        if self._scored is None or self._scored.server_round != server_round - 1:
            self._scored = RoundLedger(server_round - 1)
        client = msg.content.config_records.get(CLIENT_KEY)
        if client is not None:
            self._scored.note(node, client=int(client[CLIENT_ID_KEY]))
        self._scored.note(node, status="scored", scored_in_round=server_round,
                          num_test_examples=int(found.pop(NUM_EXAMPLES_KEY, 0)),
                          **{k.replace("-", "_"): float(v) for k, v in found.items()})

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if self._skipped(server_round):
            return None
        ledger = self._ledger_for(server_round)
        ok = self._received(server_round, replies)
        for msg in ok:
            m = msg.content.metric_records[METRICS_KEY]
            ledger.note(
                self.node_of(msg),
                num_test_examples=int(m[NUM_EXAMPLES_KEY]),
                **{k.replace("-", "_"): float(v) for k, v in m.items() if k != NUM_EXAMPLES_KEY},
            )
        metrics = None
        if ok:
            metrics = self.evaluate_metrics_aggr_fn([m.content for m in ok], self.weighted_by_key)
        rows = self._rows(ledger)
        if self._scored is not None and self._scored.server_round == server_round - 1:
            rows += self._rows(self._scored)  # the last round's models, scored in this round's training
        self._scored = None
        if self.on_round_end is not None:
            shared = from_arrayrecord(self._evaluated) if self._evaluated is not None else self._current
            self.on_round_end(server_round, rows, shared)
        return metrics
