"""The train and evaluate handlers of a personalized client.

A server message names the tensor groups that are shared (``shared-groups`` in its
config, see :mod:`pfl_app.strategies`); the client receives those, keeps every other
trainable group to itself, and sends back only the shared ones. The same handlers thus
serve PFTT (adapters shared, LoRA kept) and every other split of the same model.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from ..compression import Compression, decode_content, error_feedback_encode
from ..compression.codec import CODEC_NONE
from ..models.personalized import (
    TENSOR_GROUPS,
    ModelBundle,
    format_groups,
    get_tensors,
    kept_groups,
    parse_groups,
    personalized_tensors,
    set_tensors,
    set_trainable,
    shared_model_bundle,
    tensor_group,
    trainable_names,
)
from ..protocol import (
    ARRAYS_KEY,
    CLIENT_ID_KEY,
    CLIENT_KEY,
    CONFIG_KEY,
    EVAL_SECONDS_KEY,
    METRICS_KEY,
    MODEL_PARAMS_KEY,
    NUM_EXAMPLES_KEY,
    POOLED_DATA_KEY,
    PROXIMAL_MU_KEY,
    RECEIVED_PREFIX,
    RUN_DIR_KEY,
    SCORE_RECEIVED_KEY,
    SERVER_ROUND_KEY,
    SHARED_GROUPS_KEY,
    STATE_DIR_NODE_KEY,
    TASK_KEY,
    TRAIN_FLOPS_KEY,
    TRAIN_SECONDS_KEY,
    TRAIN_TOKENS_KEY,
    TRAINABLE_PARAMS_KEY,
    TRAINED_GROUPS_KEY,
    UPDATE_NORM_KEY,
    WIRELESS_WORKLOAD_KEY,
)
from ..precision import resolve_precision
from ..privacy import clip_update
from ..records import from_arrayrecord, to_arrayrecord
from ..tasks import evaluate as evaluate_task
from ..training import Workload, train_locally
from .context import client_identity, run_config
from .data import ClientData, client_data, pooled_train
from .state import ClientState, client_dir


#: The name of the error-feedback residual in a client's state (pfl_app.client.state).
RESIDUAL = "compression_residual"


def _check_received(bundle: ModelBundle, shared: tuple[str, ...], tensors: Mapping[str, np.ndarray]) -> None:
    expected = set(trainable_names(bundle.model, shared))
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        raise ValueError(
            f"the server sent tensors that do not match the shared groups {shared}: "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}, missing "
            f"{missing[:3]}{'...' if len(missing) > 3 else ''}"
        )


def workload_record(workload: Workload) -> MetricRecord:
    """The ``wireless-workload`` record of a train reply: what the round's training computed,
    for the wireless mod's device model (not payload: see :mod:`pfl_app.protocol`)."""
    return MetricRecord({
        TRAIN_TOKENS_KEY: int(workload.tokens),
        TRAIN_FLOPS_KEY: float(workload.flops),
        MODEL_PARAMS_KEY: int(workload.params),
        TRAINABLE_PARAMS_KEY: int(workload.trainable),
    })


def round_seed(seed: int, server_round: int, client_id: int) -> int:
    """The seed of a client's local training in one round: distinct per round and client,
    the same on a rerun."""
    return seed + 7919 * server_round + client_id


class ClientSession:
    """What one message needs: config, model, data, groups and the client's state."""

    def __init__(self, msg: Message, context: Context) -> None:
        self.cfg = run_config(context)
        self.client_id, self.num_clients = client_identity(context)
        self.bundle = shared_model_bundle(self.cfg)
        config: ConfigRecord = msg.content[CONFIG_KEY]
        self.config = config
        self.round = int(config[SERVER_ROUND_KEY])
        self.shared = parse_groups(str(config[SHARED_GROUPS_KEY]))
        self.local = tuple(g for g in TENSOR_GROUPS if g not in self.shared)
        # Older servers send no trained-groups: everything trains.
        self.trained = parse_groups(str(config.get(TRAINED_GROUPS_KEY, format_groups(TENSOR_GROUPS))))
        # What the client saves each round and is personalized by.
        self.own = kept_groups(self.cfg, self.shared, self.trained)
        # What the shared tensors travel as (pfl_app.compression); the received ones are
        # decoded here, and everything after trains and scores from what was decoded.
        self.compression = Compression.read(config)
        self.received = self._decode(msg)
        _check_received(self.bundle, self.shared, self.received)
        state_dir = context.node_config.get(STATE_DIR_NODE_KEY)
        # On disk (see pfl_app.client.state): the node's Context keeps only the round of the last save.
        self.state = ClientState(
            client_dir(str(config[RUN_DIR_KEY]), self.client_id, str(state_dir) if state_dir else None),
            context=context,
        )

    def _decode(self, msg: Message) -> dict[str, np.ndarray]:
        c = self.compression
        if c.downlink == CODEC_NONE:
            return from_arrayrecord(msg.content[ARRAYS_KEY])
        # Exactly the shared tensors: an integer codec's codes do not carry their names.
        shapes = {k: tuple(self.bundle.initial[k].shape) for k in trainable_names(self.bundle.model, self.shared)}
        try:
            return decode_content(msg.content, c.downlink, c.block_size, shapes)
        except ValueError as err:
            raise ValueError(f"the server's {c.downlink} tensors do not decode: {err}") from err

    @functools.cached_property
    def residual_state(self) -> ClientState:
        """Where the client keeps the quantization error of its last update (error feedback)."""
        return ClientState(self.state.directory, RESIDUAL, context=self.state.context)

    def encoded_update(self, tensors: Mapping[str, np.ndarray]) -> RecordDict:
        """The records of ``tensors``' update under the uplink codec: their change from the
        tensors this client decoded, plus, with error feedback, the error it kept from its
        last update; the error of this one is kept for the next (see :mod:`pfl_app.compression`)."""
        c = self.compression
        delta = {k: np.asarray(v, np.float32) - self.received[k] for k, v in tensors.items()}
        residual = self.residual_state.load(self.round - 1) if c.error_feedback else None
        rng = (np.random.default_rng([self.cfg.seed, self.round, self.client_id]) if c.stochastic_rounding
               else None)
        records, error = error_feedback_encode(delta, residual, c.uplink, c.block_size, rng)
        if c.error_feedback:
            self.residual_state.save(error, self.round)
        return records

    @functools.cached_property
    def data(self) -> ClientData:
        return client_data(self.cfg, self.client_id, self.num_clients, self.bundle.tokenizer)

    @property
    def task_name(self) -> str:
        return self.data.task.name

    def local_tensors(self, up_to_round: int, groups: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The tensors the client keeps (of ``groups``, by default its own, see
        :func:`pfl_app.models.personalized.kept_groups`) as of ``up_to_round``; their
        initial values before its first round."""
        groups = self.own if groups is None else groups
        kept = self.state.load(up_to_round)
        initial = self.bundle.initial_tensors(groups)
        if kept is None:
            return initial
        if set(kept) != set(initial):
            raise ValueError(
                f"client {self.client_id}'s saved state does not match this model's "
                f"{groups} tensors; was the run folder reused with another config?"
            )
        return kept

    def personalized(self, up_to_round: int) -> dict[str, np.ndarray]:
        """Every trainable tensor of the client's personalized model as of ``up_to_round``
        (see :func:`pfl_app.models.personalized.personalized_tensors`): what its evaluation
        scores, and what :func:`pfl_app.inference.load_personalized_model` rebuilds."""
        return personalized_tensors(self.cfg, self.bundle.initial, self.received, self.local_tensors(up_to_round))

    def anchor(self) -> dict[str, np.ndarray]:
        """The global value of every shared tensor this client trains: what a proximal term
        pulls toward."""
        return {k: v for k, v in self.received.items() if tensor_group(k) in self.trained}

    def load(self, local: Mapping[str, np.ndarray]) -> None:
        # Every trainable tensor is set, so nothing is left over from the last client
        # this process served.
        set_tensors(self.bundle.model, {**self.received, **local})

    def reply(self, msg: Message, metrics: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
              workload: Workload | None = None) -> Message:
        content = RecordDict(
            {
                METRICS_KEY: MetricRecord(metrics),
                CLIENT_KEY: ConfigRecord({CLIENT_ID_KEY: self.client_id, TASK_KEY: self.task_name}),
            }
        )
        if arrays is not None and KEY_CLIPPING_NORM in self.config:
            # Central DP (pfl_app.privacy): the update is clipped before it is encoded, and its
            # norm before clipping goes back, for choosing dp.clipping-norm.
            arrays, norm = clip_update(arrays, self.received, float(self.config[KEY_CLIPPING_NORM]))
            content[METRICS_KEY][UPDATE_NORM_KEY] = norm
        if arrays is not None and self.compression.uplink != CODEC_NONE:
            for key, record in self.encoded_update(arrays).items():
                content[key] = record
        elif arrays is not None:
            content[ARRAYS_KEY] = to_arrayrecord(arrays)
        if workload is not None:
            content[WIRELESS_WORKLOAD_KEY] = workload_record(workload)
        return Message(content=content, reply_to=msg)


def scores(s: ClientSession, up_to_round: int) -> dict[str, float]:
    """The evaluation metrics of the client's test split: its size (``num-examples``), the
    seconds the scoring took (``eval-seconds``), and the ``personalized-*`` and ``global-*``
    scores of the personalized model (received shared tensors + the client's own as of
    ``up_to_round``) and the global one (received shared tensors + the initial values of the
    local ones)."""
    start = time.perf_counter()
    batch, precision = s.cfg.train.eval_batch_size, resolve_precision(s.cfg.train.precision)
    set_tensors(s.bundle.model, s.personalized(up_to_round))
    personal = evaluate_task(s.bundle.model, s.data.task, s.data.test, s.bundle.tokenizer, batch, precision)
    s.load(s.bundle.initial_tensors(s.local))
    global_ = evaluate_task(s.bundle.model, s.data.task, s.data.test, s.bundle.tokenizer, batch, precision)
    found = {f"{prefix}-{name}": float(value)
             for prefix, model_scores in (("personalized", personal), ("global", global_))
             for name, value in model_scores.items()}
    return {NUM_EXAMPLES_KEY: len(s.data.test), EVAL_SECONDS_KEY: time.perf_counter() - start, **found}


def handle_train(msg: Message, context: Context) -> Message:
    """Train the client's model for one round and reply with its shared tensors (and, when the
    server asks, the scores of the models it received, measured before training)."""
    s = ClientSession(msg, context)
    received: dict[str, float] = {}
    if bool(msg.content[CONFIG_KEY].get(SCORE_RECEIVED_KEY, False)):
        # The models the last round delivered: its global tensors, and this client's own as it
        # ended that round. Scored here, they need no evaluate message of their own.
        received = {RECEIVED_PREFIX + k: v for k, v in scores(s, s.round - 1).items()}
    s.load(s.local_tensors(s.round - 1))  # the state this round starts from
    set_trainable(s.bundle.model, s.trained)
    examples, settings, seed_client = s.data.train, s.cfg.train, s.client_id
    if bool(msg.content[CONFIG_KEY].get(POOLED_DATA_KEY, False)):
        # Centralized training: everyone's data, the whole federation's number of steps,
        # and a seed that does not depend on which client was picked to run it.
        examples = pooled_train(s.cfg, s.num_clients, s.bundle.tokenizer)
        settings = replace(settings, local_steps=settings.local_steps * s.num_clients)
        seed_client = 0
    torch.manual_seed(s.cfg.seed * 100_003 + s.round * 1_009 + seed_client)
    result = train_locally(
        s.bundle.model,
        s.bundle.tokenizer,
        examples,
        settings,
        seed=round_seed(s.cfg.seed, s.round, seed_client),
        max_length=s.cfg.model.max_length,
        # FedProx (Flower's strategy) sends proximal-mu; the anchor is the global value of
        # every shared tensor this client trains.
        proximal_mu=float(msg.content[CONFIG_KEY].get(PROXIMAL_MU_KEY, 0.0)),
        anchor=s.anchor(),
    )
    s.state.save(get_tensors(s.bundle.model, s.own), s.round, s.bundle.model)
    return s.reply(
        msg,
        arrays=get_tensors(s.bundle.model, s.shared),
        metrics={
            NUM_EXAMPLES_KEY: len(examples),
            "train-loss": result.loss,
            "train-steps": result.steps,
            TRAIN_SECONDS_KEY: result.seconds,
            **received,
        },
        workload=result.workload,
    )


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Score the personalized model (received shared tensors + the client's own) and the
    global model (received shared tensors + the initial values of the local ones) on the
    client's test split."""
    s = ClientSession(msg, context)
    return s.reply(msg, scores(s, s.round))
