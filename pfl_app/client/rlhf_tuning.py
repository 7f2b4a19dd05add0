"""The train and evaluate handlers of an RLHF client (PFIT and its baselines).

A client runs GRPO on its own prompts, rewarded by its own mix of the helpfulness and
safety reward models (or the uniform mix when the server says ``preference=uniform``).
It starts each round from the global policy LoRA it receives, or (``start-from`` =
``personal``, and always when nothing is shared) from its own LoRA of its last round, and
keeps the LoRA it ends the round with: its personalized model. A round that starts from the
client's own policy can also continue its optimizer (``rlhf.carry-optimizer``), whose state
is kept beside the LoRA, by round alike.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import torch
from flwr.app import Context, Message

from ..models.personalized import TENSOR_GROUPS, get_tensors, set_tensors, set_trainable, tensor_group
from ..precision import resolve_precision
from ..protocol import (
    EVAL_SECONDS_KEY,
    LAST_ROUND_KEY,
    NUM_EXAMPLES_KEY,
    PREFERENCE_KEY,
    PREFERENCE_OWN,
    SAFETY_WEIGHT_KEY,
    START_FROM_GLOBAL,
    START_FROM_KEY,
    START_FROM_PERSONAL,
    TRAIN_REWARD_KEY,
    TRAIN_SECONDS_KEY,
)
from ..rlhf.client_setup import FIXED_PREFERENCES, client_preference, client_prompts, prompt_dataset
from ..rlhf.evaluation import evaluate_policy
from ..rlhf.grpo import train_policy
from ..rlhf.reward_models import load_reward_scorers
from .task_tuning import ClientSession, round_seed
from .state import ClientState

SAMPLES_FILE = "samples.jsonl"
OPTIMIZER_STATE = "optimizer_state"


class RlhfSession(ClientSession):
    """A :class:`ClientSession` with the client's prompts, preference and reward models."""

    task_name = "rlhf"

    def __init__(self, msg: Message, context: Context) -> None:
        super().__init__(msg, context)
        own = client_preference(self.cfg.rlhf, self.client_id, self.num_clients, context.node_config)
        self.own_preference = own
        self.preference = FIXED_PREFERENCES.get(str(self.config.get(PREFERENCE_KEY, PREFERENCE_OWN)), own)
        self.prompts = client_prompts(self.cfg.rlhf, self.client_id, self.num_clients, self.cfg.seed)

    @functools.cached_property
    def scorers(self):
        return load_reward_scorers(self.cfg.rlhf, self.cfg.model.cache_dir, self.cfg.model.name)

    def kept(self, up_to_round: int) -> dict:
        """The client's personalized tensors (every trained group) as of ``up_to_round``: an
        RLHF client keeps all it trains, shared or not (see
        :func:`pfl_app.models.personalized.kept_groups`)."""
        return self.local_tensors(up_to_round)

    @property
    def carries_own_policy(self) -> bool:
        """Whether the client's rounds go on from its own policy: ``start-from`` =
        ``personal``, or nothing it trains is shared."""
        personal = str(self.config.get(START_FROM_KEY, START_FROM_GLOBAL)) == START_FROM_PERSONAL
        return personal or not any(g in self.shared for g in self.trained)

    @functools.cached_property
    def continues_own_policy(self) -> bool:
        """Whether this round starts every trained tensor from the client's own last round
        (asked before the round's state is saved: cached so both asks agree)."""
        return self.carries_own_policy and self.state.load(self.round - 1) is not None

    @functools.cached_property
    def optimizer_state(self) -> ClientState:
        return ClientState(self.state.directory, OPTIMIZER_STATE, context=self.state.context)

    def start_of_round(self) -> dict:
        """Initial values everywhere, the client's own tensors where nothing is shared, and
        where something is, the received global tensors, or with ``start-from`` =
        ``personal`` the client's own of its last round (once it has any)."""
        kept = self.kept(self.round - 1)
        start = {**self.bundle.initial_tensors(TENSOR_GROUPS), **self.received}
        if self.continues_own_policy:
            return {**start, **kept}
        return {**start, **{k: v for k, v in kept.items() if tensor_group(k) not in self.shared}}

    def optimizer_start(self) -> dict | None:
        """The optimizer state this round continues: its last round's, when
        ``rlhf.carry-optimizer`` is on and the round continues the client's own policy."""
        if not (self.cfg.rlhf.carry_optimizer and self.continues_own_policy):
            return None
        return self.optimizer_state.load(self.round - 1)


def handle_train(msg: Message, context: Context) -> Message:
    """One round of local GRPO; reply with the shared tensors and the round's rewards."""
    s = RlhfSession(msg, context)
    set_tensors(s.bundle.model, s.start_of_round())
    set_trainable(s.bundle.model, s.trained)
    seed = round_seed(s.cfg.seed, s.round, s.client_id)
    torch.manual_seed(seed)
    result = train_policy(
        s.bundle.model,
        s.bundle.tokenizer,
        prompt_dataset(s.prompts.train),
        s.scorers,
        s.preference,
        s.cfg.train,
        s.cfg.rlhf,
        seed=seed,
        anchor=s.anchor(),
        optimizer_state=s.optimizer_start(),
    )
    s.state.save(get_tensors(s.bundle.model, s.own), s.round, s.bundle.model)
    if s.cfg.rlhf.carry_optimizer and s.carries_own_policy:  # else no round would continue it
        s.optimizer_state.save(result.optimizer_state, s.round)
    return s.reply(
        msg,
        arrays=get_tensors(s.bundle.model, s.shared),
        metrics={
            NUM_EXAMPLES_KEY: len(s.prompts.train),
            "train-loss": result.loss,
            "train-steps": result.steps,
            TRAIN_SECONDS_KEY: result.seconds,
            "train-step-seconds": result.step_seconds,
            TRAIN_REWARD_KEY: result.reward,
            "train-reward-helpfulness": result.reward_helpfulness,
            "train-reward-safety": result.reward_safety,
            "train-kl": result.kl,
            SAFETY_WEIGHT_KEY: s.preference.safety,
        },
        workload=result.workload,
    )


def _write_samples(s: RlhfSession, model_name: str, samples: list[dict[str, Any]]) -> None:
    s.state.directory.mkdir(parents=True, exist_ok=True)
    with open(s.state.directory / SAMPLES_FILE, "a", encoding="utf-8") as fh:
        for sample in samples:
            fh.write(json.dumps({"round": s.round, "model": model_name, **sample}) + "\n")


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Score, on the client's held-out prompts and by its own preference, its personalized
    policy and the global one (when something is shared); in the last round every model is
    scored on the final evaluation set, and the base model is added. Write every answer of
    each to ``samples.jsonl`` in the client's folder (every client answers the same prompts,
    so answers compare across clients)."""
    s = RlhfSession(msg, context)
    last_round = bool(s.config.get(LAST_ROUND_KEY, False))
    prompts = s.prompts.evaluate_final if last_round else s.prompts.evaluate
    initial = s.bundle.initial_tensors(TENSOR_GROUPS)
    models = {"personalized": s.personalized(s.round)}
    if s.shared:
        models["global"] = {**initial, **s.received}
    if last_round:
        models["base"] = initial
    metrics: dict[str, Any] = {NUM_EXAMPLES_KEY: len(prompts), SAFETY_WEIGHT_KEY: s.own_preference.safety}
    scorers, seconds = s.scorers, 0.0  # loaded (once per process) outside the timed scoring
    for name, tensors in models.items():
        set_tensors(s.bundle.model, tensors)
        start = time.perf_counter()
        scores = evaluate_policy(s.bundle.model, s.bundle.tokenizer, prompts, scorers,
                                 s.own_preference, s.cfg.rlhf.max_completion_length, s.cfg.train.eval_batch_size,
                                 resolve_precision(s.cfg.train.precision))
        seconds += time.perf_counter() - start
        metrics.update({f"{name}-{k}": float(v) for k, v in scores.metrics.items()})
        _write_samples(s, name, scores.samples)
    metrics[EVAL_SECONDS_KEY] = seconds
    return s.reply(msg, metrics)
