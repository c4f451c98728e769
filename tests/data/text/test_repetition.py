"""Auto-BLEU against the hand-derived examples of its docstring."""

from __future__ import annotations

import pytest

from slamming.data.text.repetition import auto_bleu


def test_auto_bleu_hand_examples() -> None:
    # the cat | cat the | the cat: positions 0 and 2 repeat -> 2/3.
    assert auto_bleu("the cat the cat") == pytest.approx(2 / 3)
    # Case and punctuation do not make words differ.
    assert auto_bleu("The cat, the CAT!") == pytest.approx(2 / 3)
    # (a b) (b c) (c a) (a b): 2 of 4.
    assert auto_bleu("a b c a b") == 0.5
    assert auto_bleu("one two three four") == 0.0
    # Fewer than two bigrams.
    assert auto_bleu("hello there") == 0.0 and auto_bleu("") == 0.0
    # Unigrams: "a" at 3 positions of 5 repeat, "b" at 2 -> 5/5; "c" alone -> 0 of it.
    assert auto_bleu("a b a b a", n=1) == 1.0
    assert auto_bleu("a b a c", n=1) == 0.5
