"""Tasks a client can hold, how their examples become token ids, and how they are scored.

Two kinds of task:

- **classification** (``text``, ``label`` columns): the causal LM reads the text and the
  list of label names and must continue with the right label word. Accuracy is the share
  of test examples whose label scores highest among all label names.
- **generation** (``prompt``, ``completion`` columns): question answering. Reported as
  the loss and perplexity of the reference answer, with next-token accuracy on the answer
  tokens as the task's accuracy.

Examples are tokenized here, once, into ``input_ids`` and a ``completion_mask`` (1 on the
tokens the loss is taken on), so training (trl's SFTTrainer, which accepts pre-tokenized
data) and evaluation see the very same token ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset
from transformers import PreTrainedTokenizerBase

from .precision import autocast

CLASSIFICATION = "classification"
GENERATION = "generation"


@dataclass(frozen=True)
class Task:
    """What a client's dataset asks of the model.

    Parameters
    ----------
    name : str
        The dataset it comes from (``bbc-news``, a file path, ...).
    kind : str
        ``classification`` or ``generation``.
    label_names : tuple of str
        Class names, for classification.
    """

    name: str
    kind: str
    label_names: tuple[str, ...] = ()


def task_of(name: str, dataset: Dataset) -> Task:
    """Infer the task from a standardized dataset's columns."""
    cols = set(dataset.column_names)
    if {"text", "label"} <= cols:
        feature = dataset.features["label"]
        if not isinstance(feature, ClassLabel):
            raise ValueError(f"dataset {name!r}: the label column must be a ClassLabel")
        return Task(name, CLASSIFICATION, tuple(feature.names))
    if {"prompt", "completion"} <= cols:
        return Task(name, GENERATION)
    raise ValueError(
        f"dataset {name!r} has columns {sorted(cols)}; expected text+label or prompt+completion"
    )


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def label_token_ids(task: Task, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Token ids of each label word as it follows the prompt (with a leading space)."""
    return [_ids(tokenizer, " " + name) for name in task.label_names]


# Fewest tokens of the example's own text a sequence must keep.
MIN_TEXT_TOKENS = 8


def _classification_frame(task: Task, tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    header = _ids(tokenizer, f"Classify the text as one of: {', '.join(task.label_names)}.\nText:")
    return header, _ids(tokenizer, "\nLabel:")


def text_budget(task: Task, tokenizer: PreTrainedTokenizerBase, max_length: int) -> int:
    """Tokens of text a sequence of ``max_length`` keeps: for classification what the
    instruction, the longest label and EOS leave; for generation the prompt's half.

    Raises ``ValueError`` naming ``model.max-length`` when that is under
    :data:`MIN_TEXT_TOKENS`, so a run fails before training, not in round 1.
    """
    if task.kind == CLASSIFICATION:
        header, footer = _classification_frame(task, tokenizer)
        eos = 1 if tokenizer.eos_token_id is not None else 0
        longest = max(map(len, label_token_ids(task, tokenizer)))
        budget = max_length - len(header) - len(footer) - longest - eos
        need = max_length - budget + MIN_TEXT_TOKENS
    else:
        budget = max_length // 2
        need = 2 * MIN_TEXT_TOKENS
    if budget < MIN_TEXT_TOKENS:
        raise ValueError(
            f"model.max-length={max_length} leaves {budget} tokens for the text of "
            f"{task.name!r} (the {task.kind} prompt takes the rest); allowed: >= {need}"
        )
    return budget


def tokenize(task: Task, dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
    """Turn a standardized dataset into ``input_ids``, ``completion_mask`` and ``label``.

    Long inputs are cut inside the text (classification) or prompt (generation) so that
    the answer is never truncated away.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rows: dict[str, list] = {"input_ids": [], "completion_mask": [], "label": []}
    budget = text_budget(task, tokenizer, max_length)
    if task.kind == CLASSIFICATION:
        header, footer = _classification_frame(task, tokenizer)
        labels = label_token_ids(task, tokenizer)
        for text, label in zip(dataset["text"], dataset["label"]):
            prompt = header + _ids(tokenizer, " " + text)[:budget] + footer
            answer = labels[label] + eos
            rows["input_ids"].append(prompt + answer)
            rows["completion_mask"].append([0] * len(prompt) + [1] * len(answer))
            rows["label"].append(int(label))
    else:
        for question, reply in zip(dataset["prompt"], dataset["completion"]):
            prompt = _ids(tokenizer, f"Question: {question}\nAnswer:")[-(max_length // 2):]
            answer = (_ids(tokenizer, " " + reply) + eos)[: max_length - len(prompt)]
            rows["input_ids"].append(prompt + answer)
            rows["completion_mask"].append([0] * len(prompt) + [1] * len(answer))
            rows["label"].append(-1)
    return Dataset.from_dict(rows)


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max(map(len, seqs))
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


@torch.no_grad()
def _label_scores_by_sequence(
    model, prompts: list[list[int]], labels: list[list[int]], pad_id: int, device
) -> torch.Tensor:
    """Sum of log-probabilities of each full label sequence after each prompt.

    Used when two labels share their first token, so the first token cannot decide.
    """
    seqs = [p + lab for p in prompts for lab in labels]
    ids = _pad(seqs, pad_id).to(device)
    mask = _pad([[1] * len(s) for s in seqs], 0).to(device)
    logp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    scores = torch.zeros(len(seqs), device=device)
    for row, (p, lab) in enumerate((p, lab) for p in prompts for lab in labels):
        positions = torch.arange(len(p) - 1, len(p) - 1 + len(lab), device=device)
        scores[row] = logp[row, positions, torch.tensor(lab, device=device)].sum()
    return scores.view(len(prompts), len(labels))


@torch.no_grad()
def evaluate(
    model, task: Task, examples: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int,
    precision: str = "fp32",
) -> dict[str, float]:
    """Score ``model`` on tokenized ``examples``.

    Written by hand because label scoring is not something transformers' Trainer does.
    With ``precision`` ``bf16`` (resolved, see :mod:`pfl_app.precision`) the forward passes
    run under bfloat16 autocast; the logits are taken to float32 before every softmax,
    cross-entropy and argmax either way.

    Returns
    -------
    dict
        ``loss`` (mean cross-entropy over answer tokens), ``perplexity`` (its exp) and
        ``accuracy`` (label accuracy for classification, next-token accuracy on the
        answer for generation).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    labels = label_token_ids(task, tokenizer) if task.kind == CLASSIFICATION else []
    first_tokens = [lab[0] for lab in labels]
    first_token_decides = len(set(first_tokens)) == len(first_tokens)
    with autocast(precision, device):
        loss_sum, tokens, token_hits, label_hits = _score_batches(
            model, task, examples, batch_size, pad_id, device, labels, first_tokens, first_token_decides)
    model.train(was_training)
    loss = loss_sum / max(tokens, 1)
    accuracy = label_hits / max(len(examples), 1) if task.kind == CLASSIFICATION else token_hits / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "accuracy": accuracy}


def _score_batches(model, task: Task, examples: Dataset, batch_size: int, pad_id: int, device,
                   labels: list[list[int]], first_tokens: list[int],
                   first_token_decides: bool) -> tuple[float, int, int, int]:
    """:func:`evaluate`'s sums over the batches: answer-token loss, answer tokens, answer
    tokens predicted, and labels predicted."""
    loss_sum, tokens, token_hits, label_hits = 0.0, 0, 0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        ids = _pad(batch["input_ids"], pad_id).to(device)
        comp = _pad(batch["completion_mask"], 0).to(device)
        attn = _pad([[1] * len(s) for s in batch["input_ids"]], 0).to(device)
        logits = model(input_ids=ids, attention_mask=attn).logits.float()
        target, mask = ids[:, 1:], comp[:, 1:].bool()
        pred = logits[:, :-1]
        loss_sum += F.cross_entropy(pred[mask], target[mask], reduction="sum").item()
        tokens += int(mask.sum())
        token_hits += int((pred.argmax(-1)[mask] == target[mask]).sum())
        if task.kind == CLASSIFICATION:
            prompt_lens = [m.index(1) for m in batch["completion_mask"]]
            if first_token_decides:
                rows = torch.arange(len(prompt_lens), device=device)
                last = torch.tensor(prompt_lens, device=device) - 1
                scores = logits[rows, last][:, first_tokens]
            else:
                prompts = [s[:n] for s, n in zip(batch["input_ids"], prompt_lens)]
                scores = _label_scores_by_sequence(model, prompts, labels, pad_id, device)
            truth = torch.tensor(batch["label"], device=device)
            label_hits += int((scores.argmax(-1) == truth).sum())
    return loss_sum, tokens, token_hits, label_hits
