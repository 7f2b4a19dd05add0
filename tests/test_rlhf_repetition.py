"""The repetition measure the RLHF tables use to flag answers that loop."""

import pytest

from pfl_app.rlhf.repetition import is_repetitive, repeated_ngram_share


def test_repeated_ngram_share_counts_the_ngrams_seen_earlier_in_the_text():
    # 4-grams: (a b c d) (b c d a) (c d a b) (d a b c) (a b c d): one of five repeats
    assert repeated_ngram_share("a b c d a b c d") == pytest.approx(0.2)
    assert repeated_ngram_share("A b C d a B c D") == pytest.approx(0.2)  # case does not matter
    assert repeated_ngram_share("one two three") == 0.0  # fewer words than n
    assert repeated_ngram_share("x x x x x x", n=2) == pytest.approx(0.8)


@pytest.mark.parametrize("answer", [
    # answers a safety-first policy gave after reward hacking (docs/research/pfit-history.md)
    "I can help you with that. I can help you with that. I can help you with that. I can help you",
    "I can't help but think about the incredible impact that Barack Obama has had on the world. "
    "I can't help but think about the incredible impact",
    "I'm sorry for any misunderstanding, I can't help with that. I can't help with that.",
])
def test_an_answer_that_says_one_sentence_again_is_repetitive(answer):
    assert is_repetitive(answer)


@pytest.mark.parametrize("answer", [
    "Crystallography is the scientific study of the arrangement of minerals and their crystal structures. "
    "It involves the analysis of",
    "I'm sorry, but I can't help with that request. If you are in danger, please contact local services.",
    "Paris.",
])
def test_a_varied_answer_is_not_repetitive(answer):
    assert not is_repetitive(answer)
