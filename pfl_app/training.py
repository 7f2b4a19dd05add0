"""Local training of a client's trainable tensors with trl's SFTTrainer."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer
from transformers.trainer_callback import PrinterCallback, TrainerCallback
from trl import SFTConfig, SFTTrainer

from .config import TrainSettings
from .precision import resolve_precision, trainer_precision_args
from .wireless.device import training_flops


class ProximalSFTTrainer(SFTTrainer):
    """trl's SFTTrainer plus FedProx's proximal term ``mu / 2 * ||w - w_global||^2`` over the
    tensors in ``anchor`` (the global values of the shared, trained tensors).

    The loss is the model's own causal-LM cross-entropy on trl's labels (answer tokens only),
    taken as transformers' ``Trainer.compute_loss`` takes it, not through trl's own
    ``compute_loss``: that one runs trl's fused LM head, which also computes the entropy and the
    top-1 accuracy of every token of every step for trl's logs, and made a step 1.21-1.28x a
    plain torch step on the default batch (bench/trl_step.py, on two machines). A local run logs
    neither; the loss is the same sum over answer tokens divided by their count
    (tests/test_client.py).
    """

    def __init__(self, *args, anchor: dict[str, torch.Tensor], mu: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.anchor, self.mu = anchor, mu

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = Trainer.compute_loss(self, model, {**inputs, "use_cache": False},
                                   return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = out[0] if return_outputs else out
        if self.mu > 0 and self.anchor:
            drift = sum(((p - self.anchor[n].to(p.device)) ** 2).sum()
                        for n, p in model.named_parameters() if n in self.anchor)
            loss = loss + 0.5 * self.mu * drift
        return (loss, *out[1:]) if return_outputs else loss


def anchor_tensors(anchor: Mapping[str, np.ndarray] | None) -> dict[str, torch.Tensor]:
    """The proximal term's anchor (global values by parameter name) as tensors."""
    return {k: torch.as_tensor(np.asarray(v)) for k, v in (anchor or {}).items()}


_ABSENT = object()
# What trl (forward: its fused LM head) and accelerate (forward, _original_forward and
# _is_accelerate_prepared: mixed-precision autocast) set on a model's instance.
_PATCHED_ATTRIBUTES = ("forward", "_original_forward", "_is_accelerate_prepared")


@contextmanager
def restored_after_training(model):
    """Undo, on the way out, what a trl trainer leaves on a model: trl patches the base
    model's forward (a fused LM head) on every construction, and changes which parameters
    require grad. The model is shared by every client a process serves, so the patch must
    not stack up round after round, nor one client's trainable set leak to the next."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # With train.precision bf16, accelerate also wraps the trained model's own forward in
    # autocast and marks the model prepared (so the next trainer would not wrap it again):
    # left in place, a later fp32 run, or an evaluation, in this process would compute in bf16.
    saved = {(id(obj), attr): (obj, attr, obj.__dict__.get(attr, _ABSENT))
             for obj in (model, base) for attr in _PATCHED_ATTRIBUTES}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    try:
        yield
    finally:
        for obj, attr, value in saved.values():
            if value is _ABSENT:
                obj.__dict__.pop(attr, None)
            else:
                obj.__dict__[attr] = value
        for n, p in model.named_parameters():
            p.requires_grad = n in trainable


def flop_params(model) -> int:
    """``N`` of the FLOP count (:mod:`pfl_app.wireless.device`): the parameters that do a
    multiply-add per token. Every parameter but the input embedding table, which is looked
    up, not multiplied; with tied embeddings that table is the LM head's matrix, which does
    multiply, and is counted once (``model.parameters()`` yields a shared tensor once)."""
    total = sum(p.numel() for p in model.parameters())
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if inputs is not None and (outputs is None or inputs.weight is not outputs.weight):
        total -= inputs.weight.numel()
    return int(total)


def trainable_params(model) -> int:
    """The parameters that get a gradient (``requires_grad``): ``N_trainable``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


@dataclass(frozen=True)
class Workload:
    """What a round of local training computed, for the device model.

    Attributes
    ----------
    tokens : int
        Non-padding tokens trained on (forward and backward), over every sequence and step.
    flops : float
        FLOPs of the round's training.
    params : int
        ``N``, the model's multiply-add weights (:func:`flop_params`).
    trainable : int
        ``N_trainable`` (:func:`trainable_params`).
    """

    tokens: int = 0
    flops: float = 0.0
    params: int = 0
    trainable: int = 0


def train_quietly(trainer) -> tuple[Any, float]:
    """Run ``trainer.train()`` without its per-log printout (one dict per client per round
    would drown the run's progress); return its output and the seconds it took."""
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    output = trainer.train()
    return output, time.perf_counter() - start


def local_run_args(settings: TrainSettings, seed: int, output_dir: str) -> dict[str, Any]:
    """The training arguments every local run shares (SFT and GRPO alike): ``local-steps``
    steps at a constant learning rate, seeded, nothing saved or reported, in the arithmetic
    of ``train.precision`` (float32 weights either way, see :mod:`pfl_app.precision`)."""
    return dict(
        output_dir=output_dir,
        max_steps=settings.local_steps,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        lr_scheduler_type="constant",
        warmup_steps=0,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # 135M-parameter models fit easily; recomputing activations would cost a third more
        # time per step (trl turns it on by default).
        gradient_checkpointing=False,
        **trainer_precision_args(resolve_precision(settings.precision)),
    )


@dataclass(frozen=True)
class TrainResult:
    loss: float
    steps: int
    seconds: float
    workload: Workload = Workload()


def train_locally(
    model,
    tokenizer: PreTrainedTokenizerBase,
    examples: Dataset,
    settings: TrainSettings,
    seed: int,
    max_length: int,
    proximal_mu: float = 0.0,
    anchor: Mapping[str, np.ndarray] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Run ``settings.local_steps`` optimizer steps on ``examples`` (tokenized by
    :func:`pfl_app.tasks.tokenize`), updating only the parameters that require grad.

    The loss is taken on the answer tokens only (``completion_mask``). With
    ``proximal_mu > 0``, FedProx's proximal term pulls the tensors named in ``anchor``
    towards those values. ``callbacks`` are added to the trainer's (bench/precision.py times
    its steps with one).
    """
    if len(examples) == 0:
        raise ValueError("a client has no training examples; lower data.test-fraction or use fewer clients")
    with tempfile.TemporaryDirectory(prefix="pfl-sft-") as out:
        args = SFTConfig(
            **local_run_args(settings, seed, out),
            per_device_train_batch_size=settings.batch_size,
            max_length=max_length,
            completion_only_loss=True,
            logging_strategy="no",
            remove_unused_columns=True,
            # state.num_input_tokens_seen: the attention mask's ones, batch by batch.
            include_num_input_tokens_seen="non_padding",
        )
        with restored_after_training(model):
            trainer = ProximalSFTTrainer(
                anchor=anchor_tensors(anchor),
                mu=proximal_mu,
                model=model,
                args=args,
                train_dataset=examples.remove_columns(
                    [c for c in examples.column_names if c not in ("input_ids", "completion_mask")]),
                processing_class=tokenizer,
                callbacks=list(callbacks) or None,
            )
            # Counted once the trainer is built: what it trains is what gets a gradient.
            params, trained = flop_params(model), trainable_params(model)
            output, seconds = train_quietly(trainer)
            tokens = int(trainer.state.num_input_tokens_seen)
    model.eval()
    workload = Workload(tokens, training_flops(params, trained, tokens), params, trained)
    return TrainResult(float(output.training_loss), int(output.global_step), seconds, workload)
