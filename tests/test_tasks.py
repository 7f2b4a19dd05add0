import math

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value

from pfl_app.client.data import task_slot
from pfl_app.models.loading import load_tokenizer
from pfl_app.tasks import CLASSIFICATION, GENERATION, Task, evaluate, label_token_ids, task_of, tokenize


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-llama")


def _cls_dataset(names=("business", "sports")):
    feats = Features({"text": Value("string"), "label": ClassLabel(names=list(names))})
    return Dataset.from_dict({"text": ["shares fell " * 40, "the team won"], "label": [0, 1]}, features=feats)


def test_task_kind_is_inferred_from_columns():
    assert task_of("x", _cls_dataset()) == Task("x", CLASSIFICATION, ("business", "sports"))
    assert task_of("q", Dataset.from_dict({"prompt": ["a"], "completion": ["b"]})).kind == GENERATION
    with pytest.raises(ValueError, match="expected text\\+label"):
        task_of("z", Dataset.from_dict({"foo": [1]}))


def test_long_texts_are_cut_but_the_answer_is_kept(tokenizer):
    task = task_of("x", _cls_dataset())
    rows = tokenize(task, _cls_dataset(), tokenizer, max_length=40)
    labels = label_token_ids(task, tokenizer)
    for row in rows:
        assert len(row["input_ids"]) <= 40
        answer = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
        assert answer == labels[row["label"]] + [tokenizer.eos_token_id]


def test_too_short_max_length_is_explained(tokenizer):
    with pytest.raises(ValueError, match="model.max-length"):
        tokenize(task_of("x", _cls_dataset()), _cls_dataset(), tokenizer, max_length=20)


class Oracle(torch.nn.Module):
    """A 'model' whose next-token logits favour one chosen token everywhere."""

    def __init__(self, vocab, favourite):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.favourite = vocab, favourite

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favourite] = 5.0
        return type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("names", [("business", "sports"), ("tech", "technology")])
def test_label_accuracy_on_both_scoring_paths(tokenizer, names):
    # ("tech", "technology") may share a first token: then whole label sequences are scored
    task = task_of("x", _cls_dataset(names))
    rows = tokenize(task, _cls_dataset(names), tokenizer, max_length=64)
    labels = label_token_ids(task, tokenizer)
    model = Oracle(len(tokenizer), favourite=labels[1][0])
    scores = evaluate(model, task, rows, tokenizer, batch_size=2)
    if labels[0][0] != labels[1][0]:
        assert scores["accuracy"] == 0.5  # always predicts label 1; one of two examples is label 1
    assert math.isclose(scores["perplexity"], math.exp(scores["loss"]), rel_tol=1e-6)


def test_generation_accuracy_is_next_token_accuracy(tokenizer):
    ds = Dataset.from_dict({"prompt": ["hi"], "completion": ["there"]})
    task = task_of("qa", ds)
    rows = tokenize(task, ds, tokenizer, max_length=32)
    answer = [t for t, m in zip(rows[0]["input_ids"], rows[0]["completion_mask"]) if m]
    model = Oracle(len(tokenizer), favourite=answer[0])
    scores = evaluate(model, task, rows, tokenizer, batch_size=1)
    hits = sum(t == answer[0] for t in answer)
    assert scores["accuracy"] == pytest.approx(hits / len(answer))


def test_tasks_are_dealt_round_robin():
    assert [task_slot(i, 5, 2) for i in range(5)] == [(0, 0, 3), (1, 0, 2), (0, 1, 3), (1, 1, 2), (0, 2, 3)]
    with pytest.raises(ValueError, match="num-supernodes"):
        task_slot(0, 1, 2)
