"""The message protocol between the ServerApp and the ClientApp: every name both sides agree on.

A Flower :class:`~flwr.app.Message` carries a ``RecordDict`` of named records
(``ArrayRecord``, ``ConfigRecord``, ``MetricRecord``), and each record holds named
entries. Whatever name one side writes and the other reads is declared here, once; the
ServerApp side (:mod:`pfl_app.strategies`, :mod:`pfl_app.server`) and the ClientApp side
(:mod:`pfl_app.client`, the ClientApp mods :mod:`pfl_app.wireless.mod` and
:mod:`pfl_app.faults`) both import this module, and neither imports the other.

This module is the bottom layer of the package: it imports nothing from ``pfl_app``
(``tests/test_layers.py`` checks the layers; ``docs/design.md`` describes them).

Every entry says who writes it and who reads it. Metrics that a client reports and the
server only records (``train-loss``, ``personalized-accuracy``, the channel's
``snr-db-up``, ...) are not listed one by one: the server keeps each under its own name,
hyphens turned into underscores, and ``docs/results-format.md`` describes them.
"""

from __future__ import annotations

# -- Records of a message (keys of its RecordDict) -----------------------------------------
# The first three are also the defaults of Flower's FedAvg (arrayrecord_key, configrecord_key)
# and of its clients' replies, which our strategies inherit.

#: ArrayRecord: the shared tensors. Server writes (train/evaluate instruction), client reads;
#: client writes its update (train reply), server reads; the wireless mod may zero parts of it.
ARRAYS_KEY = "arrays"
#: ConfigRecord: the instruction's settings (keys below). Server writes; client and mods read.
CONFIG_KEY = "config"
#: MetricRecord: what the client measured. Client writes; server reads (and the wireless mod).
METRICS_KEY = "metrics"
#: ConfigRecord: who answered (keys below). Client writes, and the wireless mod on a lost
#: downlink; server reads.
CLIENT_KEY = "client"
#: MetricRecord: what the simulated link did (airtime, bytes, energy). Wireless mod writes; server reads.
WIRELESS_KEY = "wireless"
#: ConfigRecord: the link's outcome and its reason (keys below). Wireless mod writes; server reads.
WIRELESS_STATUS_KEY = "wireless-status"
#: ArrayRecord: 1 where an element of a partial update arrived. Wireless mod writes; server reads.
WIRELESS_MASK_KEY = "wireless-mask"
#: ConfigRecord: the clients scheduled to train together in the round (key below), for the
#: channel model, as a base station's scheduler knows them. Strategy writes on every train
#: message; wireless mod reads and hands it to the channel. Not payload (see SIMULATION_PREFIX).
WIRELESS_COHORT_KEY = "wireless-cohort"
#: MetricRecord: the work of the client's local training (keys below), for the wireless mod's
#: device model (pfl_app.wireless.device). Task and RLHF clients write it on every train reply;
#: the wireless mod reads it and copies its entries into its ``wireless`` record, which the
#: server records. Simulation accounting that a real device would not send: not payload (see
#: SIMULATION_PREFIX), so reporting it leaves the bytes on the air as they were.
WIRELESS_WORKLOAD_KEY = "wireless-workload"
#: ArrayRecord: the block scales of quantized ``arrays`` (one float32 Array, every tensor's in
#: the order of ``arrays``; pfl_app.compression). Written beside ``arrays`` by whichever side
#: quantizes them (server: downlink, client: uplink) under an int8 or int4 codec; payload.
SCALES_KEY = "arrays-scales"
#: Records whose names start with this describe the simulated link, not payload: the byte
#: counts (pfl_app.records.message_bytes, on both sides) leave them out.
SIMULATION_PREFIX = "wireless"

# -- Keys of the "config" record (server -> client) ---------------------------------------
#: The round number. Flower's FedAvg writes; client handlers and both mods read.
SERVER_ROUND_KEY = "server-round"
#: The run folder, under which each client keeps its state. Server (pfl_app.server.run) writes; client reads.
RUN_DIR_KEY = "run-dir"
#: Tensor groups the message carries and the reply must carry back. Strategy writes; client reads.
SHARED_GROUPS_KEY = "shared-groups"
#: Tensor groups the client trains (absent: all). Strategy writes; client reads.
TRAINED_GROUPS_KEY = "trained-groups"
#: True: train on every client's data (the centralized baseline). Strategy writes; task client reads.
POOLED_DATA_KEY = "pooled-data"
#: Weight of the proximal term. Flower's FedProx writes; task client reads.
PROXIMAL_MU_KEY = "proximal-mu"
#: True: before training, score the models the train message delivers (what the last round's
#: evaluation would have scored) and reply with them, prefixed ``RECEIVED_PREFIX``.
#: Strategy writes (``eval.in-train``); task client reads.
SCORE_RECEIVED_KEY = "score-received"
#: The codec of this message's ``arrays`` (pfl_app.compression.codec.CODECS); absent: float32.
#: Strategy writes (``compression.downlink``) on train and evaluate messages; client reads.
COMPRESSION_DOWN_KEY = "compression-down"
#: The codec the train reply's ``arrays`` must use, and what they are: with a codec, the
#: client's update minus the global tensors it decoded (a delta); absent or ``none``: its
#: tensors themselves, float32. Strategy writes (``compression.uplink``); client reads.
COMPRESSION_UP_KEY = "compression-up"
#: Elements per scale of the int8 / int4 codecs, both directions. Strategy writes; client reads.
COMPRESSION_BLOCK_KEY = "compression-block-size"
#: True: the client rounds its uplink codes stochastically. Strategy writes; client reads.
COMPRESSION_STOCHASTIC_KEY = "compression-stochastic-rounding"
#: True: the client adds the quantization error it kept from its last update to the next one.
#: Strategy writes; client reads.
COMPRESSION_FEEDBACK_KEY = "compression-error-feedback"
#: Prefix of those scores in the train reply's metrics (``received-personalized-accuracy``, ...).
RECEIVED_PREFIX = "received-"
#: Whose reward weights a client trains with (values below). RLHF strategy writes; RLHF client reads.
PREFERENCE_KEY = "preference"
#: What a client starts a round from (values below). RLHF strategy writes; RLHF client reads.
START_FROM_KEY = "start-from"
#: True in the last round's evaluation (score the final set and the base model).
#: RLHF strategy writes; RLHF client reads.
LAST_ROUND_KEY = "last-round"

#: Values of ``preference``: the client's own weights, or ones the server imposes.
PREFERENCE_OWN = "own"
PREFERENCE_UNIFORM = "uniform"
PREFERENCE_HELPFULNESS = "helpfulness"
#: Values of ``start-from``: the received global policy, or the client's own of its last round.
START_FROM_GLOBAL = "global"
START_FROM_PERSONAL = "personal"

# -- Keys of the "wireless-cohort" record (server -> client) -------------------------------
#: The node ids of every client scheduled to train in the round, sorted. Strategy writes;
#: wireless mod reads.
COHORT_NODE_IDS_KEY = "node-ids"
#: Optional: each scheduled client's share of the cell's air (a list of floats aligned with
#: ``node-ids``, each > 0, summing to 1 within 1e-6), which replaces the equal ``1 / K`` share
#: of ``wireless.access`` ``tdma`` (share of the time) and ``ofdma`` (share of the band);
#: ``dedicated`` ignores it. The strategy writes it (``PersonalizedFedAvg.cohort_shares``, filled under
#: ``wireless.access-shares = "proportional-fair"``); the wireless mod reads it into
#: ``pfl_app.wireless.interface.Cohort.shares`` (a client refuses a list that breaks these rules).
COHORT_SHARES_KEY = "shares"

# -- Keys of the "client" record (client -> server) ---------------------------------------
#: The client's id (its partition-id). Client and wireless mod write; server reads.
CLIENT_ID_KEY = "client-id"
#: The client's task name. Client writes; server reads.
TASK_KEY = "task"

# -- Keys of the "metrics" record the server reads by name (client -> server) ------------
#: Examples the client trained or evaluated on. Client writes; server weighs and records it
#: (Flower FedAvg's weighted_by_key).
NUM_EXAMPLES_KEY = "num-examples"
#: Seconds the local training took. Task and RLHF clients write; the wireless mod reads it
#: (compute energy, when ``wireless.device`` is empty), the server records it.
TRAIN_SECONDS_KEY = "train-seconds"
#: Seconds the client's scoring took (every model it evaluates). Task and RLHF clients write;
#: the server records it (bench/scale.py subtracts it, with train-seconds, from a round's wall time).
EVAL_SECONDS_KEY = "eval-seconds"
#: Central DP with client clipping: the L2 norm of the client's update before it clipped it.
#: Task client writes; the server records it (pfl_app.privacy).
UPDATE_NORM_KEY = "update-norm"
#: Local DP: the epsilon of this update's release. The client's local-DP mod writes; the server
#: records it, and summary.json composes them (pfl_app.privacy.local_epsilon).
DP_EPSILON_KEY = "dp-epsilon"
#: Mean personalized reward of the round. RLHF client writes; PFIT weighs updates by it.
TRAIN_REWARD_KEY = "train-reward"
#: The client's safety weight. RLHF client writes; server records it, the plots read it.
SAFETY_WEIGHT_KEY = "safety-weight"

# -- Keys of the "wireless-workload" record (client -> wireless mod -> server) -------------
#: Non-padding tokens the local training processed (forward and backward), over every sequence
#: and step; RLHF: every sampled sequence, prompt and completion. Clients write; the mod copies it.
TRAIN_TOKENS_KEY = "train-tokens"
#: FLOPs of the round's local training (pfl_app.wireless.device.training_flops; RLHF adds the
#: sampling, reference and reward-model forward passes). Clients write; the wireless mod turns
#: it into compute time and energy under ``wireless.device``, and copies it.
TRAIN_FLOPS_KEY = "train-flops"
#: The model's multiply-add weights N, and those trained, that train-flops is computed from.
#: Clients write; the wireless mod copies them.
MODEL_PARAMS_KEY = "model-params"
TRAINABLE_PARAMS_KEY = "trainable-params"

# -- Keys of the wireless records (wireless mod -> server) --------------------------------
#: Bytes the reply spent on the air, delivered or not. Wireless mod writes; server counts them.
WIRELESS_BYTES_UP_KEY = "bytes-up"
#: ``wireless`` entry: the client's compute time of the round (simulated under a device model).
#: Wireless mod writes; the scheduler reads it for its deadline estimates.
WIRELESS_COMPUTE_S_KEY = "compute-s"
#: ``wireless-status`` entry, one of OUTCOMES. Wireless mod writes; server reads.
OUTCOME_KEY = "outcome"
#: ``wireless-status`` entry: why, in words. Wireless mod writes; server logs and records it.
REASON_KEY = "reason"
OUTCOME_DELIVERED = "delivered"
OUTCOME_PARTIAL = "partial"
OUTCOME_LOST = "lost"
OUTCOMES = (OUTCOME_DELIVERED, OUTCOME_PARTIAL, OUTCOME_LOST)

# -- Node config keys (set where a SuperNode starts; read by the ClientApp) ---------------
#: The client's id. Flower's simulation writes, or ``--node-config`` (pfl_app.deploy prints it);
#: client reads.
PARTITION_ID_NODE_KEY = "partition-id"
#: How many clients the data is split for. Written and read like ``partition-id``.
NUM_PARTITIONS_NODE_KEY = "num-partitions"
#: Where the node keeps its clients' state instead of the run folder. Operator writes; client reads.
STATE_DIR_NODE_KEY = "state-dir"
#: The client's own safety weight for RLHF. Operator writes; RLHF client (pfl_app.rlhf.client_setup) reads.
SAFETY_WEIGHT_NODE_KEY = "safety-weight"
