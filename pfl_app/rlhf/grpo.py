"""Local RLHF on one client: trl's GRPOTrainer with the two reward models.

The reward of a completion is ``w_h * helpfulness + w_s * safety`` with the client's own
weights: trl's ``reward_weights`` does the weighting. The loss adds, to GRPO's, a KL term
toward the *base* model (``beta``) and a proximal term ``mu / 2 * ||w - w_global||^2``
toward the weights the round started from. A client that carries its own policy from
round to round can carry its optimizer's state with it (:func:`optimizer_state`), so its
training continues instead of restarting Adam every round.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from logging import WARNING
from statistics import fmean

import numpy as np
import torch
from datasets import Dataset
from flwr.common.logger import log
from transformers import PreTrainedTokenizerBase
from trl import GRPOConfig, GRPOTrainer

from ..config import RlhfSettings, TrainSettings
from ..training import (
    Workload,
    anchor_tensors,
    flop_params,
    local_run_args,
    restored_after_training,
    train_quietly,
    trainable_params,
)
from ..wireless.device import forward_flops, training_flops
from .client_setup import Preference

OPTIMIZER_STATE_SEP = "::"


def optimizer_state(optimizer: torch.optim.Optimizer, model) -> dict[str, np.ndarray]:
    """The optimizer's per-parameter state (Adam's step count and moments) as arrays named
    ``<parameter name>::<entry>``, so it can be stored with the client's other tensors."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for entry, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"{names[id(p)]}{OPTIMIZER_STATE_SEP}{entry}"] = value.detach().cpu().numpy().copy()
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, model, state: Mapping[str, np.ndarray]) -> int:
    """Put ``state`` (from :func:`optimizer_state`) back into a fresh optimizer over the
    same parameters; return how many parameters got theirs, and log a warning when that is
    fewer than ``state`` names (a state from another model or sparse-layer choice). A
    parameter's ``step`` is a scalar, its moments have the parameter's shape."""
    by_param: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        name, _, entry = key.rpartition(OPTIMIZER_STATE_SEP)
        by_param.setdefault(name, {})[entry] = value
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    loaded = 0
    for name, p in model.named_parameters():
        if id(p) not in trained or name not in by_param:
            continue
        optimizer.state[p] = {
            entry: (torch.tensor(float(np.asarray(v).reshape(-1)[0]), dtype=torch.float32) if entry == "step"
                    else torch.as_tensor(np.asarray(v), dtype=p.dtype, device=p.device).reshape(p.shape).clone())
            for entry, v in by_param[name].items()
        }
        loaded += 1
    if loaded < len(by_param):
        log(WARNING, "carried optimizer state: %d of %d parameters matched the policy; "
            "the rest start from a fresh Adam", loaded, len(by_param))
    return loaded


class ProximalGRPOTrainer(GRPOTrainer):
    """trl's GRPOTrainer plus a proximal term ``mu / 2 * ||w - anchor||^2`` over the
    parameters named in ``anchor``; given ``optimizer_state``, its optimizer starts from it."""

    def __init__(self, *, args: GRPOConfig, anchor: Mapping[str, torch.Tensor], mu: float,
                 optimizer_state: Mapping[str, np.ndarray] | None = None, **kwargs) -> None:
        # Given a peft model and beta > 0, trl copies the policy's adapter into a "ref"
        # adapter, making the round's starting point the reference. RLHF's reference is the
        # base model, which trl uses (LoRA disabled) when it finds no "ref" adapter; so the
        # trainer is built with beta = 0 and beta is set afterwards. (trl's copy would also
        # trip over our bottleneck adapters, whose parameter names contain ".default.".)
        beta, args.beta = args.beta, 0.0
        super().__init__(args=args, **kwargs)
        self.beta = args.beta = beta
        self.anchor, self.mu = dict(anchor), mu
        self.initial_optimizer_state = dict(optimizer_state or {})

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.initial_optimizer_state:
            load_optimizer_state(optimizer, self.model if model is None else model, self.initial_optimizer_state)
        return optimizer

    def proximal_term(self, model) -> torch.Tensor | float:
        """``mu / 2 * ||w - anchor||^2`` (0 when off), scaled as trl scales GRPO's loss for
        gradient accumulation."""
        if not (self.mu > 0 and self.anchor):
            return 0.0
        drift = sum(((p - self.anchor[n].to(p.device)) ** 2).sum()
                    for n, p in model.named_parameters() if n in self.anchor)
        return 0.5 * self.mu * drift / self.current_gradient_accumulation_steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        return loss + self.proximal_term(model)


@dataclass(frozen=True)
class PolicyResult:
    """What a round of local RL did: means over its steps."""

    loss: float
    steps: int
    seconds: float
    reward: float
    reward_helpfulness: float
    reward_safety: float
    kl: float
    step_seconds: float
    #: The optimizer's state at the end (see :func:`optimizer_state`).
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    #: What the round computed (see :func:`grpo_workload`).
    workload: Workload = Workload()


def grpo_workload(params: int, trained: int, tokens: int, beta: float,
                  reward_passes: Sequence[tuple[int, int]] = ()) -> Workload:
    """The FLOPs of a round of GRPO on ``tokens`` sampled tokens (prompt and completion of
    every sequence, padding left out).

    Each sequence is sampled (a forward pass per token: prefill, then one per generated
    token with the KV cache), trained on once (forward and backward,
    :func:`~pfl_app.wireless.device.training_flops`), and with ``beta > 0`` scored by the
    reference model (the policy with its adapters off: a forward pass, counted at the
    policy's ``N``). ``reward_passes`` are ``(N_r, tokens_r)`` of each reward model's forward
    passes. Not counted: trl's old-policy pass, which it skips when, as here, every step
    samples afresh (``gradient_accumulation_steps`` a multiple of ``steps_per_generation x
    num_iterations``), and the attention over the context (as in the FLOP model).
    """
    flops = forward_flops(params, tokens) + training_flops(params, trained, tokens)
    if beta > 0:
        flops += forward_flops(params, tokens)
    flops += sum(forward_flops(n, t) for n, t in reward_passes)
    return Workload(tokens, flops, params, trained)


def _mean(history: Sequence[dict], key: str) -> float:
    values = [float(h[key]) for h in history if key in h and np.isfinite(h[key])]
    return fmean(values) if values else float("nan")


def grpo_config(settings: TrainSettings, rlhf: RlhfSettings, preference: Preference, seed: int,
                output_dir: str) -> GRPOConfig:
    """The GRPOConfig of one client's round: ``prompts-per-step x num-generations``
    completions per optimizer step, ``train.local-steps`` steps."""
    return GRPOConfig(
        **local_run_args(settings, seed, output_dir),
        per_device_train_batch_size=rlhf.prompts_per_step * rlhf.num_generations,
        gradient_accumulation_steps=1,
        num_generations=rlhf.num_generations,
        max_completion_length=rlhf.max_completion_length,
        temperature=rlhf.sampling_temperature,
        scale_rewards=rlhf.scale_rewards,
        multi_objective_aggregation=rlhf.reward_aggregation.replace("-", "_"),
        beta=rlhf.beta,
        reward_weights=preference.weights,
        logging_steps=1,  # the rewards are read back from the per-step logs
    )


def train_policy(
    model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Dataset,
    reward_funcs: Sequence,
    preference: Preference,
    settings: TrainSettings,
    rlhf: RlhfSettings,
    seed: int,
    anchor: Mapping[str, np.ndarray] | None = None,
    optimizer_state: Mapping[str, np.ndarray] | None = None,
) -> PolicyResult:
    """Run ``settings.local_steps`` GRPO steps on ``prompts`` (see
    :func:`pfl_app.rlhf.client_setup.prompt_dataset`), updating the parameters that require
    grad; ``reward_funcs`` are the (helpfulness, safety) scorers. ``optimizer_state`` (from
    an earlier call's result) continues that call's optimizer instead of a fresh one."""
    if len(prompts) < rlhf.prompts_per_step:
        raise ValueError(f"a client has {len(prompts)} training prompts, fewer than run-config key "
                         f"'rlhf.prompts-per-step' = {rlhf.prompts_per_step}")
    with tempfile.TemporaryDirectory(prefix="pfl-grpo-") as out, restored_after_training(model):
        trainer = ProximalGRPOTrainer(
            anchor=anchor_tensors(anchor),
            mu=rlhf.proximal_mu,
            optimizer_state=optimizer_state,
            model=model,
            reward_funcs=list(reward_funcs),
            args=grpo_config(settings, rlhf, preference, seed, out),
            train_dataset=prompts,
            processing_class=tokenizer,
        )
        params, trained = flop_params(model), trainable_params(model)
        # Reward functions that count what they score (RewardScorer does); others go uncounted.
        scored = [(sc, getattr(sc, "tokens_scored", None)) for sc in reward_funcs]
        output, seconds = train_quietly(trainer)
        final_state = optimizer_state_of(trainer)
    model.eval()
    reward_passes = [(sc.flop_params, sc.tokens_scored - before) for sc, before in scored if before is not None]
    # trl adds every sampled sequence's prompt and completion lengths (no padding) to this.
    workload = grpo_workload(params, trained, int(trainer.state.num_input_tokens_seen), rlhf.beta, reward_passes)
    history = [h for h in trainer.state.log_history if "reward" in h]
    return PolicyResult(
        loss=float(output.training_loss),
        steps=int(output.global_step),
        seconds=seconds,
        reward=_mean(history, "reward"),
        reward_helpfulness=_mean(history, f"rewards/{reward_funcs[0].__name__}/mean"),
        reward_safety=_mean(history, f"rewards/{reward_funcs[1].__name__}/mean"),
        kl=_mean(history, "kl"),
        step_seconds=_mean(history, "step_time"),
        optimizer_state=final_state,
        workload=workload,
    )


def optimizer_state_of(trainer: GRPOTrainer) -> dict[str, np.ndarray]:
    """:func:`optimizer_state` of a trainer that has trained (accelerate wraps its optimizer)."""
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    return optimizer_state(optimizer, trainer.model)
