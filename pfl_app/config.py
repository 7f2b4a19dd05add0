"""The run configuration: every tunable, its type, its default and what it may be.

Flower hands the ServerApp and every ClientApp a flat ``run_config`` dict whose keys come
from ``[tool.flwr.app.config]`` in ``pyproject.toml`` (nested tables become dotted keys),
overridden by ``flwr run --run-config``. Each key is declared once, as a field of a settings
dataclass (:class:`RunConfig` and its sections) made with :func:`setting`; :data:`FIELDS`,
:func:`defaults`, the docs table and :func:`parse_run_config`'s construction are derived from
those fields. ``tests/test_config.py`` checks that pyproject lists exactly these keys with
exactly these defaults (``python -m pfl_app.config --pyproject`` prints them), and
:func:`parse_run_config` turns a flat dict into a typed, validated :class:`RunConfig` before
any training starts.

To add a key: add a ``setting(...)`` field to the dataclass of its section, and its line to
pyproject.toml and the table in docs/configuration.md (``python -m pfl_app.config``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from .compression import Compression
from .compression.codec import CODEC_ADAPTIVE, CODEC_NONE, CODECS, UPLINK_CHOICES
from .data.partition import PARTITIONERS
from .data.sources import Columns
from .precision import PRECISIONS
from .privacy import CLIP_ADAPTIVE, CLIP_SITES, DP_CENTRAL, DP_LOCAL, DP_MODES, DP_NONE
from .methods import CLIENT_KINDS, MethodSpec, method_names, method_problem, method_spec
from .wireless.device import device_names, device_problem
from .wireless.access import ACCESS_DEDICATED, ACCESS_SCHEMES, ACCESS_SHARES, SHARES_EQUAL
from .wireless.aircomp import AGGREGATION_AIRCOMP, AGGREGATIONS
from .wireless.channel import COHERENCES
from .wireless.fading import fading_names, fading_problem
from .wireless.interface import channel_path_problem, channel_problem
from .wireless.profiles import PROFILES, LinkPopulation
from .wireless.scheduling import policies_without_deadline, policy_names, policy_problem, policy_requires_deadline



def __getattr__(name: str) -> tuple[str, ...]:
    """``METHODS``, ``TASK_METHODS`` and ``RLHF_METHODS``: the registered methods' names, all,
    task tuning, and RLHF (:mod:`pfl_app.methods`), read when asked for (the methods register
    themselves on import, after this module)."""
    kinds = {"METHODS": CLIENT_KINDS, "TASK_METHODS": ("task",), "RLHF_METHODS": ("rlhf",)}
    if name not in kinds:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return tuple(m for m in method_names() if method_spec(m).client_kind in kinds[name])

SPARSE_UPDATES = ("dense", "last-k", "every-k")
START_POINTS = ("personal", "global")
ATTENTION_PATTERNS = ("dense", "local-window")
NON_LINEARITIES = ("relu", "gelu", "silu", "tanh")
LOSS_MODES = ("whole", "partial")
SERVER_OPTIMIZERS = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm")


# Keys that may differ between a run and its resumption.
RESUME_FREE_KEYS = ("resume-from", "run-name", "results-dir", "round-timeout-s")


def resume_differences(saved: Mapping[str, Any], flat: Mapping[str, Any]) -> list[str]:
    """The keys, sorted, whose values in ``flat`` differ from a run's ``saved`` config,
    apart from :data:`RESUME_FREE_KEYS`: a resumption must leave them as they were.

    A key the saved config lacks (the run was started by a version before the key existed)
    counts as its default: a new key's default is the behaviour from before it (a rule every
    key added so far keeps), so such a run can be resumed unless the key is set otherwise."""
    known = defaults()
    return sorted(k for k in set(saved) | set(flat)
                  if k not in RESUME_FREE_KEYS and saved.get(k, known.get(k)) != flat.get(k, known.get(k)))


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Field:
    """One run-config key.

    Parameters
    ----------
    key : str
        The dotted key as Flower flattens it (``"lora.r"``).
    kind : type
        ``int``, ``float``, ``str`` or ``bool``.
    default : Any
        The value pyproject.toml carries.
    help : str
        One line for the docs and for error messages.
    choices : tuple or callable, optional
        The allowed values, when the set is closed; a function returning them when a
        registry holds them.
    check : callable, optional
        ``check(value) -> str | None``: a description of the allowed range when the value
        is out of it, else ``None``.
    """

    key: str
    kind: type
    default: Any
    help: str
    choices: tuple | Callable[[], tuple] = ()
    check: Callable[[Any], str | None] | None = None
    allow_inf: bool = False
    #: ``plugin(value) -> str | None`` checks a ``package.module:name`` value, which is then
    #: allowed besides ``choices``.
    plugin: Callable[[str], str | None] | None = None

    def allowed_choices(self) -> tuple:
        """``choices``, read now when they are a registry's names."""
        return self.choices() if callable(self.choices) else self.choices


def _positive(v: float) -> str | None:
    return None if v > 0 else "a number > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "a number >= 0"


def _fraction(v: float) -> str | None:
    return None if 0.0 < v <= 1.0 else "a number in (0, 1]"


def _open_fraction(v: float) -> str | None:
    return None if 0.0 < v < 1.0 else "a number in (0, 1)"


def _probability(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "a number in [0, 1)"


def _unit_interval(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "a number in [0, 1]"


def _positive_or_inf(v: float) -> str | None:
    return None if v > 0 else "a number > 0, or inf"


def _retransmissions(v: int) -> str | None:
    return None if v >= -1 else "-1 (the profile's own) or a whole number >= 0"


_SAFE_NAME = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*")


def safe_name_problem(v: str) -> str | None:
    """What a name used as one path component must be, or ``None`` if ``v`` is one:
    letters, digits and ``. _ = + -``, not starting with a dot (no ``/``, no ``..``)."""
    if v == "" or (_SAFE_NAME.fullmatch(v) and len(v) <= 200):
        return None
    return "a plain folder name: letters, digits and . _ = + - (not starting with '.'), at most 200 characters"


def _csv_nonempty(v: str) -> str | None:
    return None if [s for s in v.split(",") if s.strip()] else "a comma-separated, non-empty list"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


# The key under which setting() stores a field's description in its dataclass metadata.
_SETTING = "pfl_app.setting"


@dataclass(frozen=True)
class _Spec:
    """What :func:`setting` records; :func:`fields_of` adds the key and the type."""

    default: Any
    help: str
    choices: tuple | Callable[[], tuple]
    check: Callable[[Any], str | None] | None
    key: str | None
    allow_inf: bool
    parse: Callable[[Any], Any] | None
    plugin: Callable[[str], str | None] | None


def setting(default: Any, help: str, choices: tuple | Callable[[], tuple] = (),
            check: Callable[[Any], str | None] | None = None, *, key: str | None = None, allow_inf: bool = False,
            parse: Callable[[Any], Any] | None = None, plugin: Callable[[str], str | None] | None = None) -> Any:
    """Declare a settings-dataclass field as a run-config key (its one declaration).

    Parameters
    ----------
    default : Any
        The value pyproject.toml carries, as it is written there (a comma-separated string
        for a ``parse=_csv`` field).
    help, choices, check, allow_inf, plugin
        As in :class:`Field`.
    key : str, optional
        The dotted key, where it is not ``<section>.<field name with - for _>``.
    parse : callable, optional
        Turns the validated run-config value into the attribute's value; such a key is
        read as a ``str`` whatever the annotation says (``data.tasks`` -> a tuple).

    Returns
    -------
    dataclasses.Field
        A field with no dataclass default: a settings object is only ever built from a
        validated run config (:func:`parse_run_config`), never from the defaults alone.
    """
    choices = choices if callable(choices) else tuple(choices)
    return field(metadata={_SETTING: _Spec(default, help, choices, check, key, allow_inf, parse, plugin)})


# The settings dataclasses are the single description of the run-config keys: FIELDS, the
# defaults, the docs table and parse_run_config are all derived from them, in field order.


@dataclass(frozen=True)
class ModelSettings:
    """``model.*``"""

    name: str = setting("smollm2-135m-instruct",
                        "embedded name (smollm2-135m-instruct, tiny-llama), a local directory, or a hub id")
    cache_dir: str = setting("", "where converted models are cached; empty: $PFL_APP_CACHE, else "
                             "~/.cache/pfl-app")
    max_length: int = setting(128, "tokens per training/eval sequence", check=_positive)


@dataclass(frozen=True)
class AdapterSettings:
    """``adapter.*``: the bottleneck adapters (shared)."""

    bottleneck_dim: int = setting(16, "width of each bottleneck adapter", check=_positive)
    non_linearity: str = setting("relu", "adapter activation", NON_LINEARITIES)
    dropout: float = setting(0.0, "dropout inside the adapter", check=_probability)


@dataclass(frozen=True)
class LoraSettings:
    """``lora.*``: LoRA (personal)."""

    r: int = setting(16, "LoRA rank", check=_positive)
    alpha: int = setting(32, "LoRA scaling numerator", check=_positive)
    dropout: float = setting(0.05, "LoRA dropout", check=_probability)
    target_modules: tuple[str, ...] = setting("q_proj,k_proj,v_proj,o_proj", "comma-separated module names LoRA "
                                              "wraps", check=_csv_nonempty, parse=_csv)


@dataclass(frozen=True)
class DataSettings:
    """``data.*``"""

    tasks: tuple[str, ...] = setting("bbc-news", "comma-separated datasets handed to clients round-robin: "
                                     "bbc-news, chatterbot-qa, a .jsonl/.json/.csv/.parquet path, or a hub id",
                                     check=_csv_nonempty, parse=_csv)
    partitioner: str = setting("dirichlet", "how a dataset is split across its clients", PARTITIONERS)
    partition_by: str = setting("", "column to partition on; empty: label for classification, category for "
                                "question/answer")
    alpha: float = setting(0.5, "Dirichlet concentration (smaller: more skew)", check=_positive)
    labels_per_client: int = setting(2, "labels per client for the pathological split", check=_positive)
    test_fraction: float = setting(0.2, "share of each client's partition held out for test",
                                   check=_open_fraction)
    max_train_examples: int = setting(64, "cap on each client's train split; 0: no cap", check=_non_negative)
    max_test_examples: int = setting(24, "cap on each client's test split; 0: no cap", check=_non_negative)
    text_column: str = setting("text", "text column of a classification file")
    label_column: str = setting("label", "label column of a classification file")
    prompt_column: str = setting("prompt", "prompt column of a question/answer file")
    completion_column: str = setting("completion", "answer column of a question/answer file")

    @property
    def columns(self) -> Columns:
        """The four ``data.*-column`` keys, as the data loaders take them."""
        return Columns(self.text_column, self.label_column, self.prompt_column, self.completion_column)


@dataclass(frozen=True)
class TrainSettings:
    """``train.*``: local training (and ``eval.batch-size``)."""

    local_steps: int = setting(6, "optimizer steps per client per round", check=_positive)
    batch_size: int = setting(4, "sequences per step", check=_positive)
    learning_rate: float = setting(5e-4, "AdamW learning rate", check=_positive)
    weight_decay: float = setting(0.0, "AdamW weight decay", check=_non_negative)
    precision: str = setting("fp32", "arithmetic of local training and evaluation: fp32, bf16 (bfloat16 "
                             "autocast; weights and the tensors sent stay float32), or auto (bf16 where the "
                             "training device has native bfloat16, else fp32); bf16 on a device without it is "
                             "refused before the start", PRECISIONS)
    eval_batch_size: int = setting(8, "sequences per evaluation forward pass", check=_positive,
                                   key="eval.batch-size")


@dataclass(frozen=True)
class EvalSettings:
    """``eval.*`` (but ``eval.batch-size``, a train setting): which rounds and clients evaluate."""

    every: int = setting(1, "evaluate every this many rounds; the last round always evaluates", check=_positive)
    fraction: float = setting(1.0, "share of the sampled clients that evaluate in a round before the last (the "
                              "last evaluates all of them)", check=_fraction)
    in_train: bool = setting(False, "score a round's delivered models in the next round's train message, before "
                             "training, instead of sending them again in an evaluate message (the last round still "
                             "evaluates); task-tuning methods only")


@dataclass(frozen=True)
class RlhfSettings:
    """``rlhf.*``: RLHF for PFIT and its baselines (see docs/pfit.md)."""

    helpfulness_model: str = setting("", "helpfulness reward model: a local folder or hub id of a 1-logit "
                                     "sequence classifier; empty: the embedded one, trained once and cached")
    safety_model: str = setting("", "safety reward model: as rlhf.helpfulness-model")
    reward_steps: int = setting(100, "training steps of each embedded reward model (the cache is keyed on "
                                "it)", check=_positive)
    safety_weight_min: float = setting(0.1, "safety weight of the first client; client i's is spread evenly up "
                                       "to safety-weight-max, and its helpfulness weight is 1 - that",
                                       check=_unit_interval)
    safety_weight_max: float = setting(0.9, "safety weight of the last client", check=_unit_interval)
    harmful_fraction_min: float = setting(0.25, "share of harmful requests among the first client's training "
                                          "prompts; spread up to harmful-fraction-max", check=_unit_interval)
    harmful_fraction_max: float = setting(0.75, "share of harmful requests among the last client's training "
                                          "prompts", check=_unit_interval)
    train_prompts: int = setting(32, "training prompts per client", check=_positive)
    eval_prompts: int = setting(8, "held-out evaluation prompts per client, half harmful", check=_positive)
    final_eval_prompts: int = setting(0, "held-out prompts scored in the last round, half harmful (0: "
                                      "rlhf.eval-prompts): the delivered models measured more finely, at the "
                                      "cost of one longer evaluation; earlier rounds score rlhf.eval-prompts of "
                                      "them (half from each half)", check=_non_negative)
    prompts_per_step: int = setting(1, "prompts per GRPO step (each sampled num-generations times)",
                                   check=_positive)
    num_generations: int = setting(8, "completions sampled per prompt (GRPO's group)",
                                   check=lambda v: None if v >= 2 else "a whole number >= 2")
    max_completion_length: int = setting(32, "tokens per sampled completion", check=_positive)
    sampling_temperature: float = setting(0.7, "temperature of training samples (below 1, the policy's "
                                          "refusals, rare when sampled hot, show up in its groups)",
                                          check=_positive)
    scale_rewards: str = setting("group", "how GRPO scales a group's centred mixed rewards into advantages: by "
                                 "the group's standard deviation (trl's default), the step's batch's (the same "
                                 "as group at one prompt per step), or not at all (Dr. GRPO); only with "
                                 "sum-then-normalize", ("group", "batch", "none"))
    reward_aggregation: str = setting("sum-then-normalize", "how GRPO combines the two rewards: mix them with "
                                      "the client's weights, then scale (rlhf.scale-rewards; trl's default); or "
                                      "z-score each within its group first, so a weight acts on the reward's "
                                      "standardized value, not its spread, then standardize the mix over the "
                                      "batch (GDPO)", ("sum-then-normalize", "normalize-then-sum"))
    beta: float = setting(0.2, "weight of the KL term toward the reference (base) model", check=_non_negative)
    proximal_mu: float = setting(0.01, "weight of the proximal term toward the round's global weights; 0: off",
                                 check=_non_negative)
    aggregation_temperature: float = setting(1.0, "pfit: softmax temperature over clients' mean rewards in the "
                                             "aggregation weights; inf: plain FedAvg", check=_positive_or_inf,
                                             allow_inf=True)
    policy_pairs: int = setting(192, "harmful prompts (and half as many benign ones) the policy answers twice "
                                "each, so the embedded safety model also learns from the policy's own "
                                "compliance and refusals; 0: template pairs only", check=_non_negative)
    warmup_steps: int = setting(40, "steps of the supervised warm-up (trl SFTTrainer) that every RLHF method's "
                                "policy starts from, trained once and cached; 0: start from model.name as it "
                                "is", check=_non_negative)
    warmup_refusal_share: float = setting(0.5, "share of the warm-up's harmful demonstrations that refuse; the "
                                          "rest are the policy's own answers", check=_unit_interval)
    warmup_prompts: int = setting(128, "harmful prompts of the warm-up's demonstrations (and half as many "
                                  "benign ones, answered by the policy itself)", check=_positive)
    start_from: str = setting("personal", "pfit: what a client starts each round from: its own policy of the "
                              "last round (held near the global one by rlhf.proximal-mu), or the global policy",
                              START_POINTS)
    carry_optimizer: bool = setting(True, "a client whose round starts from its own policy also continues its "
                                    "optimizer's state (Adam's moments) from its last round, instead of a "
                                    "fresh optimizer every round")
    sparse_update: str = setting("last-k", "which layers carry the policy LoRA, are trained and sent: all "
                                 "(dense), the last k, or every k-th", SPARSE_UPDATES)
    sparse_k: int = setting(10, "k of rlhf.sparse-update", check=_positive)
    attention: str = setting("dense", "self-attention pattern of the policy: dense, or a local window plus "
                             "sink tokens", ATTENTION_PATTERNS)
    attention_window: int = setting(64, "local-window: tokens each query attends to back from itself",
                                   check=_positive)
    sink_tokens: int = setting(4, "local-window: first tokens every query also attends to", check=_non_negative)


@dataclass(frozen=True)
class FaultSettings:
    """``faults.*``: fault injection, for testing (see pfl_app/faults.py)."""

    fail_fraction: float = setting(0.0, "share of clients whose training raises, each round",
                                   check=_unit_interval)
    corrupt_fraction: float = setting(0.0, "share of clients that send a NaN update, each round",
                                      check=_unit_interval)


@dataclass(frozen=True)
class WirelessSettings:
    """``wireless.*``: the wireless channel (train messages cross it; see docs/wireless.md)."""

    profile: str = setting("ideal", "link profile of every client", tuple(PROFILES))
    poor_fraction: float = setting(0.0, "share of clients moved to wireless.poor-profile", check=_unit_interval)
    poor_profile: str = setting("lte-cell-edge", "link profile of the poor clients", tuple(PROFILES))
    distance_min: float = setting(0.0, "with distance-max > 0: spread client distances (m) evenly over [min, "
                                  "max]", check=_non_negative)
    distance_max: float = setting(0.0, "0: each profile's own distance", check=_non_negative)
    fading: str = setting("", "override the profile's fading model; empty: the profile's", fading_names,
                          plugin=fading_problem)
    nakagami_m: float = setting(0.0, "m of nakagami-m fading (1: Rayleigh, larger: milder); 0: the profile's (1)",
                                check=lambda v: None if v == 0 or v >= 0.5 else "0, or a number >= 0.5")
    max_retransmissions: int = setting(-1, "ARQ retransmissions per packet; -1: the profile's",
                                       check=_retransmissions)
    loss_mode: str = setting("whole", "whole: an update with a lost packet is lost; partial: it arrives "
                             "without the lost chunks", LOSS_MODES)
    compute_s: float = setting(0.0, "simulated on-device training time per round, counted in a client's round "
                               "time (the measured time would make stragglers depend on the host); 0 with "
                               "wireless.device, which computes it", check=_non_negative)
    device: str = setting("", "device model of every client: compute time = the training's FLOPs / the device's "
                          "sustained FLOP/s (in place of compute-s), compute energy = that time x its power; empty: "
                          "compute energy from the measured training time", device_names, plugin=device_problem)
    deadline_s: float = setting(0.0, "round deadline in simulated seconds (downlink + compute-s or the device's "
                                "compute time + uplink); later "
                                "updates are dropped as stragglers; 0: none", check=_non_negative)
    access: str = setting("dedicated", "how the clients scheduled in a round share the cell: dedicated (each the "
                          "whole band), tdma (the whole band for its share of the time), ofdma (its share of the "
                          "band); the share is 1/K of K clients, or as wireless.access-shares says", ACCESS_SCHEMES)
    access_shares: str = setting("equal", "tdma, ofdma: each scheduled client's share of the cell: equal (1/K), "
                                 "proportional-fair (proportional to R/T, its uplink rate this round over its "
                                 "averaged past rate, schedule.pf-window; docs/wireless.md#proportional-fair-shares)",
                                 ACCESS_SHARES)
    coherence: str = setting("message", "how long a fade lasts: message (one per client and round, both "
                             "directions: block fading), packet (one per attempt of each packet: fast fading)",
                             COHERENCES)
    channel: str = setting("", "a Channel class by package.module:Class; empty: the built-in link model (with "
                           "wireless.access, access-shares and coherence, which a class of one's own does not read)",
                           check=channel_path_problem, plugin=channel_problem)
    aggregation: str = setting("digital", "how the shared tensors reach the server: digital (each client's update "
                               "a message of its own over its link), aircomp (every scheduled client transmits "
                               "its analog update at once and the server receives their noisy sum, "
                               "docs/wireless.md#over-the-air-aggregation)", AGGREGATIONS)
    aircomp_threshold: float = setting(0.1, "aircomp: a client whose block fade |h|^2 / E|h|^2 is below this is "
                                       "truncated (does not transmit); 0: none", check=_non_negative)
    aircomp_power_w: float = setting(0.2, "aircomp: per-device transmit power budget (W) of the channel "
                                     "inversion", check=_positive)


@dataclass(frozen=True)
class ScheduleSettings:
    """``schedule.*``: which sampled clients transmit in a round (see docs/wireless.md#scheduling)."""

    policy: str = setting("random", "who of the sampled clients transmits: random (Flower's sampling), best-snr, "
                          "proportional-fair, age-aware, deadline (needs wireless.deadline-s), or "
                          "package.module:function", policy_names, plugin=policy_problem)
    clients_per_round: int = setting(0, "K, how many of the sampled clients are scheduled each round; 0: all "
                                     "of them", check=_non_negative)
    pf_window: float = setting(10.0, "proportional-fair: rounds t_c over which a client's past rate is "
                               "averaged", check=lambda v: None if v >= 1 else "a number >= 1")


def _block_size(v: int) -> str | None:
    return None if v >= 1 else "a whole number >= 1 (elements per scale), at most the largest shared tensor's size"


@dataclass(frozen=True)
class CompressionSettings:
    """``compression.*``: what the shared tensors travel as (see docs/compression.md)."""

    uplink: str = setting("none", "what a client's update travels as: none (float32 tensors), fp16, int8 or int4 "
                          "(blockwise absmax) of its change from the global tensors it received; adaptive: per "
                          "client and round, the widest of those whose upload fits wireless.deadline-s on the "
                          "client's channel", UPLINK_CHOICES)
    downlink: str = setting("none", "what the global shared tensors travel to the clients as: none (float32), "
                            "fp16, int8 or int4 (blockwise absmax)", CODECS)
    block_size: int = setting(64, "int8 / int4: elements per absmax scale (the last block of a tensor, and a "
                              "tensor smaller than a block, is shorter)", check=_block_size)
    stochastic_rounding: bool = setting(False, "int8 / int4: round each code up or down at random "
                                        "(unbiased; seeded by the run's seed) instead of to the nearest")
    error_feedback: bool = setting(True, "uplink codec other than none: a client adds the quantization error "
                                   "of its last update to its next one")

    def settings(self) -> Compression:
        """The :class:`pfl_app.compression.Compression` these keys describe."""
        return Compression(uplink=self.uplink, downlink=self.downlink, block_size=self.block_size,
                           stochastic_rounding=self.stochastic_rounding, error_feedback=self.error_feedback)


@dataclass(frozen=True)
class PrivacySettings:
    """``dp.*``: differential privacy of the shared tensors (see docs/privacy.md)."""

    mode: str = setting("none", "none; central (each update clipped to dp.clipping-norm, equal-weight mean over "
                        "the round's cohort, Gaussian noise z C / n added by the server: Flower's "
                        "DifferentialPrivacyClientSideFixedClipping); local (each client clips and noises its own "
                        "update: Flower's LocalDpMod)", DP_MODES)
    noise_multiplier: float = setting(1.0, "central: z, the noise std over the clipping norm", check=_positive)
    clipping_norm: float = setting(1.0, "C, the L2 norm every update of the shared tensors is clipped to (the "
                                   "default model's PFTT updates are about 1: docs/privacy.md)",
                                   check=_positive)
    clipping: str = setting("client", "central: where updates are clipped: client (before they are encoded; the "
                            "server clips the decoded ones again), server (there alone), or adaptive (as client, "
                            "with the norm moved each round toward dp.target-quantile of the update norms, from "
                            "dp.clipping-norm: Flower's DifferentialPrivacyClientSideAdaptiveClipping)", CLIP_SITES)
    target_quantile: float = setting(0.5, "adaptive clipping: the share of updates the norm should leave unclipped",
                                     check=_open_fraction)
    clip_learning_rate: float = setting(0.2, "adaptive clipping: the geometric step of the norm per round",
                                        check=_positive)
    clipped_count_stddev: float = setting(0.0, "adaptive clipping: std of the noise on the count of unclipped "
                                          "updates; 0: Flower's default, the cohort size / 20 (needs "
                                          "dp.noise-multiplier below twice it)", check=_non_negative)
    delta: float = setting(1e-5, "the delta of the (epsilon, delta) guarantee reported in summary.json; local: "
                           "per round", check=_open_fraction)
    epsilon: float = setting(0.5, "local: epsilon of each round's release (the classical Gaussian mechanism "
                             "holds for epsilon < 1)", check=_open_fraction)


@dataclass(frozen=True)
class RunConfig:
    """The validated, typed run configuration.

    Its own settings are the top-level keys; each settings-dataclass field is a section
    whose name prefixes its keys. The field order is the order of :data:`FIELDS` (and so of
    docs/configuration.md and pyproject.toml).
    """

    method: str = setting("pftt", "federated method: what is trained, sent and kept; or a strategy class "
                          "of your own as package.module:Class", method_names, plugin=method_problem)
    num_server_rounds: int = setting(3, "federated rounds", check=_positive)
    seed: int = setting(0, "seed for model init, data split and sampling", check=_non_negative)
    run_name: str = setting("", "results sub-folder; empty: <method>-<UTC timestamp>", check=safe_name_problem)
    results_dir: str = setting("results", "where runs are written; relative paths resolve against "
                               "$PFL_APP_HOME, else the SuperLink's working directory")
    resume_from: str = setting("", "a run folder to continue from its last finished round; every other key "
                               "must equal that run's (pfl-app run --resume-from sets them)")
    fraction_train: float = setting(1.0, "fraction of clients sampled to train each round", check=_fraction)
    fraction_evaluate: float = setting(1.0, "fraction of clients sampled to evaluate each round",
                                       check=_fraction)
    min_clients: int = setting(2, "clients that must be connected before a round starts, and the fewest "
                               "sampled", check=_positive)
    min_answers: int = setting(1, "fewest clients that must answer a round (a failed or timed-out client does "
                               "not) for the run to go on; fewer stops it with a message", check=_positive)
    round_timeout_s: float = setting(3600.0, "seconds the server waits for replies in a round; a client that "
                                     "has not answered by then is left out", check=_positive)
    update_norm_factor: float = setting(10.0, "reject an update that moved more than this many times the "
                                        "round's median (3+ updates); 0: off", check=_non_negative)
    server_optimizer: str = setting("fedavg", "Flower strategy applied to the averaged shared tensors",
                                    SERVER_OPTIMIZERS)
    server_learning_rate: float = setting(0.1, "eta of fedadam/fedyogi/fedadagrad; server learning rate of "
                                          "fedavgm", check=_positive)
    proximal_mu: float = setting(0.01, "weight of FedProx's proximal term (server-optimizer fedprox)",
                                 check=_non_negative)
    model: ModelSettings
    adapter: AdapterSettings
    lora: LoraSettings
    data: DataSettings
    train: TrainSettings
    eval: EvalSettings
    rlhf: RlhfSettings
    faults: FaultSettings
    wireless: WirelessSettings
    schedule: ScheduleSettings
    compression: CompressionSettings
    dp: PrivacySettings
    flat: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @property
    def method_spec(self) -> MethodSpec:
        """What the run's method is (:class:`pfl_app.methods.MethodSpec`): its strategy, the
        client handlers that train it, its model's parts and the model it delivers."""
        return method_spec(self.method)

    @property
    def link_population(self) -> LinkPopulation:
        """Every client's link under the ``wireless.*`` settings: what the client's channel is
        built on (:func:`pfl_app.wireless.mod.link_profile`) and what the server's scheduler
        knows the channels from (:mod:`pfl_app.wireless.csi`)."""
        w = self.wireless
        overrides: dict[str, Any] = {}
        if w.fading:
            overrides["fading"] = w.fading
        if w.nakagami_m > 0:
            overrides["nakagami_m"] = w.nakagami_m
        if w.max_retransmissions >= 0:
            overrides["max_retransmissions"] = w.max_retransmissions
        return LinkPopulation(
            base=w.profile, distance_spread=(w.distance_min, w.distance_max) if w.distance_max > 0 else None,
            poor_fraction=w.poor_fraction, poor_profile=w.poor_profile, seed=self.seed,
            overrides=tuple(overrides.items()),
        )


@dataclass(frozen=True)
class _Place:
    """Where one setting lives: attribute ``name`` of ``owner``, the dataclass held in the
    root's field ``section`` ("": the root itself)."""

    section: str
    owner: type
    name: str
    field: Field
    parse: Callable[[Any], Any] | None


_KINDS = (bool, int, float, str)


@functools.cache
def _places(root: type) -> tuple[_Place, ...]:
    """Every setting under the dataclass ``root``, in declaration order: its own, then each
    section's (a field whose type is a dataclass) in turn."""
    out = []
    hints = get_type_hints(root)
    for f in dataclasses.fields(root):
        if _SETTING in f.metadata:
            out.append(_place("", root, f, hints[f.name]))
        elif dataclasses.is_dataclass(hints[f.name]):
            section = hints[f.name]
            section_hints = get_type_hints(section)
            for g in dataclasses.fields(section):
                if _SETTING not in g.metadata:
                    # Derived values are properties: a plain field would have no key to come from.
                    raise TypeError(f"{section.__name__}.{g.name} is not declared with setting()")
                out.append(_place(f.name, section, g, section_hints[g.name]))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"{root.__name__}.{f.name} is neither a setting nor a section")
    return tuple(out)


def _place(section: str, owner: type, f: dataclasses.Field, hint: Any) -> _Place:
    spec: _Spec = f.metadata[_SETTING]
    key = spec.key or (f"{section}." if section else "") + f.name.replace("_", "-")
    kind = str if spec.parse is not None else hint
    if kind not in _KINDS:
        raise TypeError(f"setting {key!r} is annotated {hint!r}; a run-config value is one of "
                        f"{[k.__name__ for k in _KINDS]} (or a str with parse=)")
    return _Place(section, owner, f.name,
                  Field(key, kind, spec.default, spec.help, spec.choices, spec.check, spec.allow_inf, spec.plugin),
                  spec.parse)


def fields_of(root: type) -> tuple[Field, ...]:
    """The :class:`Field` of every setting declared under the dataclass ``root``, in
    declaration order (see :func:`setting`)."""
    return tuple(p.field for p in _places(root))


def _construct(root: type, config: Mapping[str, Any], **extra: Any) -> Any:
    """Build ``root`` and its sections from a validated flat run ``config`` (``extra``:
    root's other fields, such as ``flat``)."""
    parts: dict[str, tuple[type, dict[str, Any]]] = {}
    for p in _places(root):
        value = config[p.field.key]
        parts.setdefault(p.section, (p.owner, {}))[1][p.name] = value if p.parse is None else p.parse(value)
    own = parts.pop("", (root, {}))[1]
    return root(**own, **{s: owner(**values) for s, (owner, values) in parts.items()}, **extra)


FIELDS: tuple[Field, ...] = fields_of(RunConfig)

FIELDS_BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}


def defaults() -> dict[str, Any]:
    """Return the flat default run config (what pyproject.toml carries)."""
    return {f.key: f.default for f in FIELDS}


def _coerce(f: Field, value: Any) -> Any:
    """Return ``value`` as ``f.kind`` or raise :class:`ConfigError` naming the key."""
    if f.kind is bool:
        if isinstance(value, bool):
            return value
    elif f.kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif f.kind is float:
        # TOML writes 1 for 1.0; accept ints where a float is asked for.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(float(value)) or (f.allow_inf and float(value) == math.inf):
                return float(value)
            # A float, but nan or inf: "must be of type float, got float nan" would read as nonsense.
            raise ConfigError(
                f"run-config key '{f.key}' = {value!r} is not a finite number; allowed: "
                f"{_allowed_text(f) or 'a finite number'} ({f.help})"
            )
    elif f.kind is str:
        if isinstance(value, str):
            return value.strip()
    raise ConfigError(
        f"run-config key '{f.key}' must be of type {f.kind.__name__}, got "
        f"{type(value).__name__} {value!r} ({f.help})"
    )


def _close_keys(key: str) -> list[str]:
    """Known keys that ``key`` may be a misspelling of (``_`` taken for ``-``)."""
    import difflib

    return difflib.get_close_matches(key.replace("_", "-"), list(FIELDS_BY_KEY), n=2, cutoff=0.75)


def validate_flat(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Check every key, type and value of a flat run config.

    Missing keys take their defaults. Raises :class:`ConfigError` naming the first bad key
    and the values it allows.
    """
    unknown = sorted(set(run_config) - set(FIELDS_BY_KEY))
    if unknown:
        # A typo ('lora.rank', 'num_server_rounds') is the usual cause: say which key was
        # meant before the list of all of them.
        hints = [f"did you mean {' or '.join(map(repr, close))} for {key!r}?"
                 for key in unknown if (close := _close_keys(key))]
        raise ConfigError(
            f"unknown run-config key(s) {unknown}; {' '.join(hints + [''])}"
            f"allowed keys: {sorted(FIELDS_BY_KEY)}"
        )
    out = defaults()
    for key, value in run_config.items():
        f = FIELDS_BY_KEY[key]
        value = _coerce(f, value)
        if f.plugin is not None and ":" in value:
            if (problem := f.plugin(value)) is not None:
                raise ConfigError(f"run-config key '{key}' = {value!r} is not allowed: {problem}")
        elif f.choices and value not in f.allowed_choices():
            raise ConfigError(
                f"run-config key '{key}' = {value!r} is not allowed; allowed values: "
                f"{_allowed_text(f)}"  # shows an allowed empty value as ''; a bare join showed nothing
            )
        if f.check is not None and (allowed := f.check(value)) is not None:
            raise ConfigError(f"run-config key '{key}' = {value!r} is out of range; allowed: {allowed}")
        out[key] = value
    return out



def _own_rule(strategy: type, hook: str) -> str | None:
    """The qualified name of ``strategy``'s own ``hook`` (``aggregate``, ``aggregation_weights``)
    when it overrides the base's, else ``None``: AirComp and DP compute the base's mean only."""
    rule = getattr(strategy, hook, None)
    name = getattr(rule, "__qualname__", "")
    return name if rule is not None and name != f"PersonalizedFedAvg.{hook}" else None


def _check_aircomp_method(method: str) -> None:
    """AirComp sums the shared tensors on the air: the method must share some, and aggregate
    them by the weighted average (the only rule a superposition computes)."""
    strategy = method_spec(method).strategy
    allowed = "a method whose strategy shares tensor groups and keeps the weighted average, or 'digital'"
    if not tuple(getattr(strategy, "shared_groups", ())):
        raise ConfigError(f"run-config key 'wireless.aggregation' = 'aircomp' needs shared tensors, but method "
                          f"{method!r} shares none (its strategy's shared_groups is empty); allowed: {allowed}")
    if (rule := _own_rule(strategy, "aggregate")) is not None:
        raise ConfigError(f"run-config key 'wireless.aggregation' = 'aircomp' computes a weighted sum on the air, "
                          f"but method {method!r} aggregates by its own rule ({rule}); allowed: {allowed}")


def _check_compression(c: Mapping[str, Any]) -> None:
    """Compression leaves the wireless mod's per-element work alone: a partial update's mask is
    per element of a float tensor, and AirComp sends analog values, not codes."""
    compressed = [k for k in ("compression.uplink", "compression.downlink") if c[k] != CODEC_NONE]
    if compressed and c["wireless.loss-mode"] == "partial":
        raise ConfigError(f"run-config key '{compressed[0]}' = {c[compressed[0]]!r} sends quantized codes, but "
                          "'wireless.loss-mode' = 'partial' zeroes lost elements of float tensors; allowed with "
                          f"compression: wireless.loss-mode = whole (or {compressed[0]} = none)")
    if c["compression.uplink"] == CODEC_ADAPTIVE and not c["wireless.deadline-s"] > 0:
        raise ConfigError("run-config key 'compression.uplink' = 'adaptive' picks each upload's bit width so that "
                          f"it fits the round deadline, but 'wireless.deadline-s' = {c['wireless.deadline-s']:g} "
                          "sets none; set wireless.deadline-s > 0, or a fixed codec: "
                          f"{', '.join(CODECS)}")
    if c["compression.uplink"] != CODEC_NONE and c["wireless.aggregation"] == AGGREGATION_AIRCOMP:
        raise ConfigError(f"run-config key 'compression.uplink' = {c['compression.uplink']!r} encodes the update "
                          "as integers, but 'wireless.aggregation' = 'aircomp' sends it as analog values; allowed "
                          "with aircomp: none")


def _check_privacy(c: Mapping[str, Any]) -> None:
    """DP bounds what one client adds to the mean of the shared tensors: the method must share
    some and average them with the base's rule, and nothing after the noise may depend on one
    client more than the mean does."""
    mode, method = c["dp.mode"], c["method"]
    spec = method_spec(method)
    key = f"run-config key 'dp.mode' = {mode!r}"
    allowed = "a task-tuning method that shares tensors and keeps the base's weighted average (pftt, fedit, " \
        "fedsa-lora, ...), or dp.mode = none"
    if spec.client_kind != "task":
        raise ConfigError(f"{key} clips task-tuning updates, but 'method' = {method!r} is an RLHF method; allowed: "
                          f"{allowed}")
    strategy = spec.strategy
    if not tuple(getattr(strategy, "shared_groups", ())):
        raise ConfigError(f"{key} protects the shared tensors, but method {method!r} shares none; allowed: {allowed}")
    if getattr(strategy, "pools_data", False):
        raise ConfigError(f"{key} protects each client's data in its own update, but method {method!r} trains one "
                          f"model on every client's data pooled; allowed: {allowed}")
    for hook in ("aggregate", "aggregation_weights"):
        if (rule := _own_rule(strategy, hook)) is not None:
            raise ConfigError(f"{key} needs the equal-weight mean its noise is calibrated for, but method {method!r} "
                              f"aggregates by its own {hook} ({rule}); allowed: {allowed}")
    if c["wireless.aggregation"] == AGGREGATION_AIRCOMP:
        raise ConfigError(f"{key} clips and noises digital updates, but 'wireless.aggregation' = "
                          f"{AGGREGATION_AIRCOMP!r} sums analog ones on the air; allowed with DP: digital")
    if mode == DP_CENTRAL and c["server-optimizer"] not in ("fedavg", "fedprox"):
        raise ConfigError(f"{key} noises the mean of the updates, but 'server-optimizer' = {c['server-optimizer']!r} "
                          "turns that mean into a step with a state of its own, which the noise is not calibrated "
                          "for; allowed with central DP: fedavg, fedprox")
    sigma = c["dp.clipped-count-stddev"]
    if c["dp.clipping"] == CLIP_ADAPTIVE and sigma > 0 and not c["dp.noise-multiplier"] < 2 * sigma:
        # Flower's split of z between the count and the model needs z < 2 sigma (Andrew et al.).
        raise ConfigError(f"run-config key 'dp.clipped-count-stddev' = {sigma:g} is too small for "
                          f"'dp.noise-multiplier' = {c['dp.noise-multiplier']:g} under adaptive clipping; allowed: "
                          f"dp.clipped-count-stddev > dp.noise-multiplier / 2 = {c['dp.noise-multiplier'] / 2:g}")
    for direction in ("uplink", "downlink") if mode == DP_LOCAL else ():
        if c[f"compression.{direction}"] != CODEC_NONE:
            raise ConfigError(f"{key} clips and noises the float32 tensors a client receives and sends (Flower's "
                              f"LocalDpMod), but 'compression.{direction}' = {c[f'compression.{direction}']!r} "
                              f"sends integer codes; allowed with local DP: compression.{direction} = none")


def _check_access_shares(c: Mapping[str, Any]) -> None:
    """Shares other than equal divide a shared cell's uplink: they need one (``tdma`` or
    ``ofdma``), and a digital uplink (AirComp's clients all transmit at once on the whole band,
    and the proportional-fair metric weighs uplink rates)."""
    shares = c["wireless.access-shares"]
    if c["wireless.access"] == ACCESS_DEDICATED:
        raise ConfigError(f"run-config key 'wireless.access-shares' = {shares!r} divides a shared cell, but "
                          f"'wireless.access' = {ACCESS_DEDICATED!r} gives every client the whole band; allowed "
                          f"with it: {SHARES_EQUAL} (or set 'wireless.access' to "
                          f"{' or '.join(a for a in ACCESS_SCHEMES if a != ACCESS_DEDICATED)})")
    if c["wireless.aggregation"] == AGGREGATION_AIRCOMP:
        raise ConfigError(f"run-config key 'wireless.access-shares' = {shares!r} weighs the clients' digital "
                          f"uplinks, but 'wireless.aggregation' = {AGGREGATION_AIRCOMP!r} sends every client's "
                          f"update at once on the whole band; allowed with it: {SHARES_EQUAL}")


def parse_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Validate a flat Flower run config and return a :class:`RunConfig`.

    Raises
    ------
    ConfigError
        On the first unknown key, wrong type or disallowed value, with a message that
        names the key and what it allows.
    """
    c = validate_flat(run_config)
    if c["faults.fail-fraction"] + c["faults.corrupt-fraction"] > 1:
        raise ConfigError("run-config keys 'faults.fail-fraction' + 'faults.corrupt-fraction' must be <= 1")
    if c["wireless.distance-max"] < c["wireless.distance-min"]:
        raise ConfigError("run-config key 'wireless.distance-max' must be >= 'wireless.distance-min'")
    if c["wireless.distance-max"] > 0 and c["wireless.distance-min"] <= 0:
        # The first client would sit at 0 m, where the log-distance path loss has no value.
        raise ConfigError(
            f"run-config key 'wireless.distance-min' = {c['wireless.distance-min']:g} must be > 0 when "
            f"'wireless.distance-max' = {c['wireless.distance-max']:g} spreads the clients; allowed: "
            "0 < distance-min <= distance-max"
        )
    if c["wireless.device"] and c["wireless.compute-s"] > 0:
        # Both say how long a client computes: the device's FLOP count would silently win.
        raise ConfigError(
            f"run-config keys 'wireless.device' = {c['wireless.device']!r} and 'wireless.compute-s' = "
            f"{c['wireless.compute-s']:g} both set the simulated compute time; set one (compute-s = 0 with a device)"
        )
    if c["wireless.channel"]:
        # The built-in link model reads these; a class of one's own is built without them.
        for key, default in (("wireless.access", ACCESS_SCHEMES[0]), ("wireless.access-shares", ACCESS_SHARES[0]),
                             ("wireless.coherence", COHERENCES[0])):
            if c[key] != default:
                raise ConfigError(f"run-config key '{key}' = {c[key]!r} applies to the built-in link model only, "
                                  f"but 'wireless.channel' = {c['wireless.channel']!r} replaces it; allowed with "
                                  f"it: {default}")
    if 0 < c["rlhf.final-eval-prompts"] < c["rlhf.eval-prompts"]:
        raise ConfigError(f"run-config key 'rlhf.final-eval-prompts' = {c['rlhf.final-eval-prompts']} must be 0 "
                          f"or >= 'rlhf.eval-prompts' ({c['rlhf.eval-prompts']})")
    if c["rlhf.reward-aggregation"] == "normalize-then-sum" and c["rlhf.scale-rewards"] != "group":
        # trl's normalize_then_sum always standardizes over the batch and never reads scale_rewards
        raise ConfigError(f"run-config key 'rlhf.scale-rewards' = {c['rlhf.scale-rewards']!r} has no effect with "
                          "'rlhf.reward-aggregation' = 'normalize-then-sum'; allowed with it: group")
    if c["wireless.access-shares"] != SHARES_EQUAL:
        _check_access_shares(c)
    if c["wireless.aggregation"] == AGGREGATION_AIRCOMP:
        _check_aircomp_method(c["method"])
    _check_compression(c)
    if c["dp.mode"] != DP_NONE:
        _check_privacy(c)
    if c["eval.in-train"] and method_spec(c["method"]).client_kind != "task":
        raise ConfigError(f"run-config key 'eval.in-train' = true scores task-tuning models, but 'method' = "
                          f"{c['method']!r} is an RLHF method, whose evaluation samples and scores answers; "
                          "allowed with it: false")
    if c["wireless.deadline-s"] <= 0 and policy_requires_deadline(c["schedule.policy"]):
        raise ConfigError(
            f"run-config key 'schedule.policy' = {c['schedule.policy']!r} schedules by the round deadline, but "
            f"'wireless.deadline-s' = {c['wireless.deadline-s']:g} sets none; set wireless.deadline-s > 0, or "
            f"use another policy; allowed values without a deadline: {policies_without_deadline()}"
        )
    return _construct(RunConfig, c, flat=c)


def _allowed_text(f: Field) -> str:
    if f.choices:
        text = ", ".join(repr(c) if c == "" else str(c) for c in f.allowed_choices())
        return text + (", or package.module:name" if f.plugin is not None else "")
    if f.check is None:
        return ""
    for probe in (-2, 0, 1.5, " , "):  # a value outside the range makes the check describe it
        try:
            if (text := f.check(probe)) is not None:
                return text
        except (TypeError, AttributeError):
            continue
    return ""


def markdown_table() -> str:
    """The table of every key for docs/configuration.md (``python -m pfl_app.config``)."""
    rows = ["| key | type | default | allowed | what |", "|---|---|---|---|---|"]
    for f in FIELDS:
        default = repr(f.default) if isinstance(f.default, str) else f.default
        rows.append(f"| `{f.key}` | {f.kind.__name__} | `{default}` | {_allowed_text(f)} | {f.help} |")
    return "\n".join(rows)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    return repr(value)  # int; float as Python writes it (0.0005, 3600.0, inf), all valid TOML


def pyproject_body(flat: Mapping[str, Any] | None = None) -> str:
    """The ``[tool.flwr.app.config]`` lines of pyproject.toml for ``flat`` (default: the
    defaults), one ``key = value`` a line (``python -m pfl_app.config --pyproject``)."""
    flat = defaults() if flat is None else flat
    return "\n".join(f"{key} = {_toml_value(value)}" for key, value in flat.items())


if __name__ == "__main__":
    import sys

    print(pyproject_body() if sys.argv[1:] == ["--pyproject"] else markdown_table())
