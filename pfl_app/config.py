"""The run configuration: every tunable, its type, its default and what it may be.

Flower hands the ServerApp and every ClientApp a flat ``run_config`` dict whose keys come
from ``[tool.flwr.app.config]`` in ``pyproject.toml`` (nested tables become dotted keys),
overridden by ``flwr run --run-config``. :data:`FIELDS` is the single description of
those keys; ``tests/test_config.py`` checks that pyproject lists exactly these keys with
exactly these defaults, and :func:`parse_run_config` turns a flat dict into a typed,
validated :class:`RunConfig` before any training starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .data.partition import PARTITIONERS
from .data.sources import Columns
from .wireless.profiles import FADING_KINDS, PROFILES

TASK_METHODS = ("pftt", "send-all", "fedit", "fedadapter", "ffa-lora", "fedsa-lora", "feddpa", "local-only",
                "centralized", "pftt-median", "flexlora")
# Instruction tuning with RLHF (PFIT and its baselines): GRPO on each client, rewarded by
# the helpfulness and safety reward models (pfl_app/rlhf/).
RLHF_METHODS = ("pfit", "rlhf-fedavg", "rlhf-local", "rlhf-single")
METHODS = TASK_METHODS + RLHF_METHODS
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
    apart from :data:`RESUME_FREE_KEYS`: a resumption must leave them as they were."""
    return sorted(k for k in set(saved) | set(flat) if k not in RESUME_FREE_KEYS and saved.get(k) != flat.get(k))


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
    choices : tuple, optional
        The allowed values, when the set is closed.
    check : callable, optional
        ``check(value) -> str | None``: a description of the allowed range when the value
        is out of it, else ``None``.
    """

    key: str
    kind: type
    default: Any
    help: str
    choices: tuple = ()
    check: Callable[[Any], str | None] | None = None
    allow_inf: bool = False


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


FIELDS: tuple[Field, ...] = (
    # --- the run ------------------------------------------------------------------
    Field("method", str, "pftt", "federated method: what is trained, sent and kept", METHODS),
    Field("num-server-rounds", int, 3, "federated rounds", check=_positive),
    Field("seed", int, 0, "seed for model init, data split and sampling", check=_non_negative),
    Field("run-name", str, "", "results sub-folder; empty: <method>-<UTC timestamp>",
          check=safe_name_problem),
    Field("results-dir", str, "results", "where runs are written; relative paths resolve "
          "against $PFL_APP_HOME, else the SuperLink's working directory"),
    Field("resume-from", str, "", "a run folder to continue from its last finished round; "
          "every other key must equal that run's (pfl-app run --resume-from sets them)"),
    Field("fraction-train", float, 1.0, "fraction of clients sampled to train each round",
          check=_fraction),
    Field("fraction-evaluate", float, 1.0, "fraction of clients sampled to evaluate each round",
          check=_fraction),
    Field("min-clients", int, 2, "clients that must be connected before a round starts, and the "
          "fewest sampled", check=_positive),
    Field("min-answers", int, 1, "fewest clients that must answer a round (a failed or timed-out "
          "client does not) for the run to go on; fewer stops it with a message", check=_positive),
    Field("round-timeout-s", float, 3600.0, "seconds the server waits for replies in a round; "
          "a client that has not answered by then is left out", check=_positive),
    Field("update-norm-factor", float, 10.0, "reject an update that moved more than this many "
          "times the round's median (3+ updates); 0: off", check=_non_negative),
    Field("server-optimizer", str, "fedavg", "Flower strategy applied to the averaged shared "
          "tensors", SERVER_OPTIMIZERS),
    Field("server-learning-rate", float, 0.1, "eta of fedadam/fedyogi/fedadagrad; server "
          "learning rate of fedavgm", check=_positive),
    Field("proximal-mu", float, 0.01, "weight of FedProx's proximal term (server-optimizer "
          "fedprox)", check=_non_negative),
    # --- the model ----------------------------------------------------------------
    Field("model.name", str, "smollm2-135m-instruct",
          "embedded name (smollm2-135m-instruct, tiny-llama), a local directory, or a hub id"),
    Field("model.cache-dir", str, "", "where converted models are cached; empty: "
          "$PFL_APP_CACHE, else ~/.cache/pfl-app"),
    Field("model.max-length", int, 128, "tokens per training/eval sequence", check=_positive),
    # --- bottleneck adapters (shared) -------------------------------------------------
    Field("adapter.bottleneck-dim", int, 16, "width of each bottleneck adapter", check=_positive),
    Field("adapter.non-linearity", str, "relu", "adapter activation", NON_LINEARITIES),
    Field("adapter.dropout", float, 0.0, "dropout inside the adapter", check=_probability),
    # --- LoRA (personal) --------------------------------------------------------------
    Field("lora.r", int, 16, "LoRA rank", check=_positive),
    Field("lora.alpha", int, 32, "LoRA scaling numerator", check=_positive),
    Field("lora.dropout", float, 0.05, "LoRA dropout", check=_probability),
    Field("lora.target-modules", str, "q_proj,k_proj,v_proj,o_proj", "comma-separated module names LoRA wraps",
          check=_csv_nonempty),
    # --- data ---------------------------------------------------------------------
    Field("data.tasks", str, "bbc-news", "comma-separated datasets handed to clients round-robin: "
          "bbc-news, chatterbot-qa, a .jsonl/.json/.csv/.parquet path, or a hub id",
          check=_csv_nonempty),
    Field("data.partitioner", str, "dirichlet", "how a dataset is split across its clients",
          PARTITIONERS),
    Field("data.partition-by", str, "", "column to partition on; empty: label for "
          "classification, category for question/answer"),
    Field("data.alpha", float, 0.5, "Dirichlet concentration (smaller: more skew)",
          check=_positive),
    Field("data.labels-per-client", int, 2, "labels per client for the pathological split",
          check=_positive),
    Field("data.test-fraction", float, 0.2, "share of each client's partition held out for test",
          check=_open_fraction),
    Field("data.max-train-examples", int, 64, "cap on each client's train split; 0: no cap",
          check=_non_negative),
    Field("data.max-test-examples", int, 24, "cap on each client's test split; 0: no cap",
          check=_non_negative),
    Field("data.text-column", str, "text", "text column of a classification file"),
    Field("data.label-column", str, "label", "label column of a classification file"),
    Field("data.prompt-column", str, "prompt", "prompt column of a question/answer file"),
    Field("data.completion-column", str, "completion", "answer column of a question/answer file"),
    # --- local training -----------------------------------------------------------------
    Field("train.local-steps", int, 6, "optimizer steps per client per round", check=_positive),
    Field("train.batch-size", int, 4, "sequences per step", check=_positive),
    Field("train.learning-rate", float, 5e-4, "AdamW learning rate", check=_positive),
    Field("train.weight-decay", float, 0.0, "AdamW weight decay", check=_non_negative),
    Field("eval.batch-size", int, 8, "sequences per evaluation forward pass", check=_positive),
    # --- RLHF for PFIT and its baselines (see docs/pfit.md) ----------------------------
    Field("rlhf.helpfulness-model", str, "", "helpfulness reward model: a local folder or hub id "
          "of a 1-logit sequence classifier; empty: the embedded one, trained once and cached"),
    Field("rlhf.safety-model", str, "", "safety reward model: as rlhf.helpfulness-model"),
    Field("rlhf.reward-steps", int, 100, "training steps of each embedded reward model (the cache "
          "is keyed on it)", check=_positive),
    Field("rlhf.safety-weight-min", float, 0.1, "safety weight of the first client; client i's is "
          "spread evenly up to safety-weight-max, and its helpfulness weight is 1 - that",
          check=_unit_interval),
    Field("rlhf.safety-weight-max", float, 0.9, "safety weight of the last client", check=_unit_interval),
    Field("rlhf.harmful-fraction-min", float, 0.25, "share of harmful requests among the first "
          "client's training prompts; spread up to harmful-fraction-max", check=_unit_interval),
    Field("rlhf.harmful-fraction-max", float, 0.75, "share of harmful requests among the last "
          "client's training prompts", check=_unit_interval),
    Field("rlhf.train-prompts", int, 32, "training prompts per client", check=_positive),
    Field("rlhf.eval-prompts", int, 8, "held-out evaluation prompts per client, half harmful",
          check=_positive),
    Field("rlhf.final-eval-prompts", int, 0, "held-out prompts scored in the last round, half harmful "
          "(0: rlhf.eval-prompts): the delivered models measured more finely, at the cost of one "
          "longer evaluation; earlier rounds score rlhf.eval-prompts of them (half from each half)",
          check=_non_negative),
    Field("rlhf.prompts-per-step", int, 1, "prompts per GRPO step (each sampled num-generations "
          "times)", check=_positive),
    Field("rlhf.num-generations", int, 8, "completions sampled per prompt (GRPO's group)",
          check=lambda v: None if v >= 2 else "a whole number >= 2"),
    Field("rlhf.max-completion-length", int, 32, "tokens per sampled completion", check=_positive),
    Field("rlhf.sampling-temperature", float, 0.7, "temperature of training samples (below 1, the "
          "policy's refusals, rare when sampled hot, show up in its groups)", check=_positive),
    Field("rlhf.scale-rewards", str, "group", "how GRPO scales a group's centred mixed rewards into "
          "advantages: by the group's standard deviation (trl's default), the step's batch's (the "
          "same as group at one prompt per step), or not at all (Dr. GRPO); only with "
          "sum-then-normalize", choices=("group", "batch", "none")),
    Field("rlhf.reward-aggregation", str, "sum-then-normalize", "how GRPO combines the two rewards: "
          "mix them with the client's weights, then scale (rlhf.scale-rewards; trl's default); or "
          "z-score each within its group first, so a weight acts on the reward's standardized value, "
          "not its spread, then standardize the mix over the batch (GDPO)",
          choices=("sum-then-normalize", "normalize-then-sum")),
    Field("rlhf.beta", float, 0.2, "weight of the KL term toward the reference (base) model",
          check=_non_negative),
    Field("rlhf.proximal-mu", float, 0.01, "weight of the proximal term toward the round's global "
          "weights; 0: off", check=_non_negative),
    Field("rlhf.aggregation-temperature", float, 1.0, "pfit: softmax temperature over clients' mean "
          "rewards in the aggregation weights; inf: plain FedAvg", check=_positive_or_inf, allow_inf=True),
    Field("rlhf.policy-pairs", int, 192, "harmful prompts (and half as many benign ones) the policy "
          "answers twice each, so the embedded safety model also learns from the policy's own "
          "compliance and refusals; 0: template pairs only", check=_non_negative),
    Field("rlhf.warmup-steps", int, 40, "steps of the supervised warm-up (trl SFTTrainer) that every "
          "RLHF method's policy starts from, trained once and cached; 0: start from model.name as it is",
          check=_non_negative),
    Field("rlhf.warmup-refusal-share", float, 0.5, "share of the warm-up's harmful demonstrations "
          "that refuse; the rest are the policy's own answers", check=_unit_interval),
    Field("rlhf.warmup-prompts", int, 128, "harmful prompts of the warm-up's demonstrations (and half as "
          "many benign ones, answered by the policy itself)", check=_positive),
    Field("rlhf.start-from", str, "personal", "pfit: what a client starts each round from: its own "
          "policy of the last round (held near the global one by rlhf.proximal-mu), or the global "
          "policy", START_POINTS),
    Field("rlhf.carry-optimizer", bool, True, "a client whose round starts from its own policy also "
          "continues its optimizer's state (Adam's moments) from its last round, instead of a fresh "
          "optimizer every round"),
    Field("rlhf.sparse-update", str, "last-k", "which layers carry the policy LoRA, are trained "
          "and sent: all (dense), the last k, or every k-th", SPARSE_UPDATES),
    Field("rlhf.sparse-k", int, 10, "k of rlhf.sparse-update", check=_positive),
    Field("rlhf.attention", str, "dense", "self-attention pattern of the policy: dense, or a "
          "local window plus sink tokens", ATTENTION_PATTERNS),
    Field("rlhf.attention-window", int, 64, "local-window: tokens each query attends to back "
          "from itself", check=_positive),
    Field("rlhf.sink-tokens", int, 4, "local-window: first tokens every query also attends to",
          check=_non_negative),
    # --- fault injection, for testing (see pfl_app/faults.py) ----------------------------
    Field("faults.fail-fraction", float, 0.0, "share of clients whose training raises, each round",
          check=_unit_interval),
    Field("faults.corrupt-fraction", float, 0.0, "share of clients that send a NaN update, each round",
          check=_unit_interval),
    # --- the wireless channel (train messages cross it; see docs/wireless.md) -------------
    Field("wireless.profile", str, "ideal", "link profile of every client", tuple(PROFILES)),
    Field("wireless.poor-fraction", float, 0.0, "share of clients moved to wireless.poor-profile",
          check=_unit_interval),
    Field("wireless.poor-profile", str, "lte-cell-edge", "link profile of the poor clients",
          tuple(PROFILES)),
    Field("wireless.distance-min", float, 0.0, "with distance-max > 0: spread client distances "
          "(m) evenly over [min, max]", check=_non_negative),
    Field("wireless.distance-max", float, 0.0, "0: each profile's own distance", check=_non_negative),
    Field("wireless.fading", str, "", "override the profile's fading; empty: the profile's",
          ("",) + tuple(FADING_KINDS)),
    Field("wireless.max-retransmissions", int, -1, "ARQ retransmissions per packet; -1: the "
          "profile's", check=_retransmissions),
    Field("wireless.loss-mode", str, "whole", "whole: an update with a lost packet is lost; "
          "partial: it arrives without the lost chunks", LOSS_MODES),
    Field("wireless.compute-s", float, 0.0, "simulated on-device training time per round, counted "
          "in a client's round time (the measured time would make stragglers depend on the host)",
          check=_non_negative),
    Field("wireless.deadline-s", float, 0.0, "round deadline in simulated seconds (downlink + "
          "compute-s + uplink); later updates are dropped as stragglers; 0: none", check=_non_negative),
)

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
        if f.choices and value not in f.choices:
            raise ConfigError(
                f"run-config key '{key}' = {value!r} is not allowed; allowed values: "
                f"{_allowed_text(f)}"  # shows an allowed empty value as ''; a bare join showed nothing
            )
        if f.check is not None and (allowed := f.check(value)) is not None:
            raise ConfigError(f"run-config key '{key}' = {value!r} is out of range; allowed: {allowed}")
        out[key] = value
    return out


def _csv(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


@dataclass(frozen=True)
class ModelSettings:
    name: str
    cache_dir: str
    max_length: int


@dataclass(frozen=True)
class AdapterSettings:
    bottleneck_dim: int
    non_linearity: str
    dropout: float


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class DataSettings:
    tasks: tuple[str, ...]
    partitioner: str
    partition_by: str
    alpha: float
    labels_per_client: int
    test_fraction: float
    max_train_examples: int
    max_test_examples: int
    columns: Columns


@dataclass(frozen=True)
class TrainSettings:
    local_steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    eval_batch_size: int


@dataclass(frozen=True)
class RlhfSettings:
    helpfulness_model: str
    safety_model: str
    reward_steps: int
    safety_weight_min: float
    safety_weight_max: float
    harmful_fraction_min: float
    harmful_fraction_max: float
    train_prompts: int
    eval_prompts: int
    final_eval_prompts: int
    prompts_per_step: int
    num_generations: int
    max_completion_length: int
    sampling_temperature: float
    scale_rewards: str
    reward_aggregation: str
    beta: float
    proximal_mu: float
    aggregation_temperature: float
    policy_pairs: int
    warmup_steps: int
    warmup_refusal_share: float
    warmup_prompts: int
    start_from: str
    carry_optimizer: bool
    sparse_update: str
    sparse_k: int
    attention: str
    attention_window: int
    sink_tokens: int


@dataclass(frozen=True)
class FaultSettings:
    fail_fraction: float
    corrupt_fraction: float


@dataclass(frozen=True)
class WirelessSettings:
    profile: str
    poor_fraction: float
    poor_profile: str
    distance_min: float
    distance_max: float
    fading: str
    max_retransmissions: int
    loss_mode: str
    compute_s: float
    deadline_s: float


@dataclass(frozen=True)
class RunConfig:
    """The validated, typed run configuration."""

    method: str
    num_server_rounds: int
    seed: int
    run_name: str
    results_dir: str
    resume_from: str
    fraction_train: float
    fraction_evaluate: float
    min_clients: int
    min_answers: int
    round_timeout_s: float
    update_norm_factor: float
    server_optimizer: str
    server_learning_rate: float
    proximal_mu: float
    model: ModelSettings
    adapter: AdapterSettings
    lora: LoraSettings
    data: DataSettings
    train: TrainSettings
    wireless: WirelessSettings
    faults: FaultSettings
    rlhf: RlhfSettings
    flat: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)


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
    if 0 < c["rlhf.final-eval-prompts"] < c["rlhf.eval-prompts"]:
        raise ConfigError(f"run-config key 'rlhf.final-eval-prompts' = {c['rlhf.final-eval-prompts']} must be 0 "
                          f"or >= 'rlhf.eval-prompts' ({c['rlhf.eval-prompts']})")
    if c["rlhf.reward-aggregation"] == "normalize-then-sum" and c["rlhf.scale-rewards"] != "group":
        # trl's normalize_then_sum always standardizes over the batch and never reads scale_rewards
        raise ConfigError(f"run-config key 'rlhf.scale-rewards' = {c['rlhf.scale-rewards']!r} has no effect with "
                          "'rlhf.reward-aggregation' = 'normalize-then-sum'; allowed with it: group")
    return RunConfig(
        method=c["method"],
        num_server_rounds=c["num-server-rounds"],
        seed=c["seed"],
        run_name=c["run-name"],
        results_dir=c["results-dir"],
        resume_from=c["resume-from"],
        fraction_train=c["fraction-train"],
        fraction_evaluate=c["fraction-evaluate"],
        min_clients=c["min-clients"],
        min_answers=c["min-answers"],
        round_timeout_s=c["round-timeout-s"],
        update_norm_factor=c["update-norm-factor"],
        server_optimizer=c["server-optimizer"],
        server_learning_rate=c["server-learning-rate"],
        proximal_mu=c["proximal-mu"],
        model=ModelSettings(c["model.name"], c["model.cache-dir"], c["model.max-length"]),
        adapter=AdapterSettings(
            c["adapter.bottleneck-dim"], c["adapter.non-linearity"], c["adapter.dropout"]
        ),
        lora=LoraSettings(
            c["lora.r"], c["lora.alpha"], c["lora.dropout"], _csv(c["lora.target-modules"])
        ),
        data=DataSettings(
            tasks=_csv(c["data.tasks"]),
            partitioner=c["data.partitioner"],
            partition_by=c["data.partition-by"],
            alpha=c["data.alpha"],
            labels_per_client=c["data.labels-per-client"],
            test_fraction=c["data.test-fraction"],
            max_train_examples=c["data.max-train-examples"],
            max_test_examples=c["data.max-test-examples"],
            columns=Columns(c["data.text-column"], c["data.label-column"], c["data.prompt-column"],
                            c["data.completion-column"]),
        ),
        train=TrainSettings(
            c["train.local-steps"],
            c["train.batch-size"],
            c["train.learning-rate"],
            c["train.weight-decay"],
            c["eval.batch-size"],
        ),
        wireless=WirelessSettings(
            profile=c["wireless.profile"],
            poor_fraction=c["wireless.poor-fraction"],
            poor_profile=c["wireless.poor-profile"],
            distance_min=c["wireless.distance-min"],
            distance_max=c["wireless.distance-max"],
            fading=c["wireless.fading"],
            max_retransmissions=c["wireless.max-retransmissions"],
            loss_mode=c["wireless.loss-mode"],
            compute_s=c["wireless.compute-s"],
            deadline_s=c["wireless.deadline-s"],
        ),
        faults=FaultSettings(c["faults.fail-fraction"], c["faults.corrupt-fraction"]),
        rlhf=RlhfSettings(**{k.removeprefix("rlhf.").replace("-", "_"): v for k, v in c.items()
                             if k.startswith("rlhf.")}),
        flat=c,
    )


def _allowed_text(f: Field) -> str:
    if f.choices:
        return ", ".join(repr(c) if c == "" else str(c) for c in f.choices)
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


if __name__ == "__main__":
    print(markdown_table())
