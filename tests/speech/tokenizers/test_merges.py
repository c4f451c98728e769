"""Byte-pair merges over units: learning, applying, and the phone tokeniser that carries them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slamming.errors import ConfigError
from slamming.speech.tokenizers import load_tokenizer, unit_spans
from slamming.speech.tokenizers.merges import apply_merges, check_merges, learn_merges
from slamming.speech.tokenizers.phone import PhoneTokenizer


def encoded(*sequences: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Units as a tokeniser gives them, each lasting (its position + 1) frames."""
    return [(np.asarray(s, dtype=np.uint16), np.arange(1, len(s) + 1, dtype=np.int32)) for s in sequences]


def test_learn_merges_takes_the_most_frequent_pair_then_builds_on_it() -> None:
    merges = learn_merges([[0, 1, 0, 1, 2], [0, 1, 2], [2, 0]], num_merges=5, first_id=3)
    # (0, 1) occurs 3 times -> unit 3; then (3, 2) twice -> unit 4; then no pair occurs twice.
    assert merges == [(0, 1), (3, 2)]


def test_learn_merges_breaks_ties_by_the_smaller_pair_and_never_crosses_two_strings() -> None:
    assert learn_merges([[2, 1], [2, 1], [0, 2], [0, 2]], 1, first_id=3) == [(0, 2)]
    assert learn_merges([[0], [1], [0], [1]], 3, first_id=2) == []  # (0, 1) only across strings
    assert learn_merges([[0, 1, 0, 1]], 0, first_id=2) == []
    with pytest.raises(ConfigError, match=">= 0"):
        learn_merges([[0, 1]], -1, first_id=2)


def test_apply_merges_in_order_sums_durations_and_merges_repeats_left_to_right() -> None:
    [(units, durations)] = apply_merges(encoded([0, 0, 0, 1]), [(0, 0), (3, 1)], first_id=3)
    # "0 0 0 1": (0, 0) merges the first two only -> "3 0 1"; (3, 1) finds nothing adjacent.
    assert units.tolist() == [3, 0, 1] and durations.tolist() == [3, 3, 4]
    assert units.dtype == np.uint16 and durations.dtype == np.int32
    [(units, durations)] = apply_merges(encoded([0, 1, 0, 1, 2]), [(0, 1), (3, 2)], first_id=3)
    assert units.tolist() == [3, 4] and durations.tolist() == [3, 12]


def test_apply_merges_on_a_batch_equals_each_utterance_alone() -> None:
    batch = encoded([0, 1, 2], [], [1, 0], [0], [1, 0, 1, 2, 0, 1])
    merges = [(0, 1), (3, 2), (1, 0)]
    together = apply_merges(batch, merges, first_id=3)
    for one, got in zip(batch, together, strict=True):
        [alone] = apply_merges([one], merges, first_id=3)
        assert got[0].tolist() == alone[0].tolist() and got[1].tolist() == alone[1].tolist()
        assert int(got[1].sum()) == int(one[1].sum())  # every frame still belongs to a unit
    assert together[3][0].tolist() == [0]  # "0" then "1" in the next utterance never merge
    assert together[1][0].tolist() == []


def test_check_merges_refuses_units_that_do_not_exist_yet() -> None:
    assert check_merges([[0, 1], (3, 0)], first_id=3) == [(0, 1), (3, 0)]
    with pytest.raises(ConfigError, match="merge 0 .*does not exist yet"):
        check_merges([[0, 3]], first_id=3)
    with pytest.raises(ConfigError, match="pair"):
        check_merges([[0, 1, 2]], first_id=3)


def tokenizer(merges: list[tuple[int, int]] | None = None, k: int | None = None) -> PhoneTokenizer:
    torch.manual_seed(0)
    return PhoneTokenizer(["a", "b", "c"], [0.0] * 39, [10.0] * 39, k=k, merges=merges)


def test_phone_tokenizer_applies_its_merges_after_recognition() -> None:
    plain = tokenizer()
    merged = plain.with_merges([(1, 2), (0, 3)], k=8)
    assert merged.k == 8 and merged.merges == [(1, 2), (0, 3)]
    torch.manual_seed(1)
    wavs = [torch.randn(16000) * 0.1, torch.randn(8000) * 0.1]
    before = plain.encode_batch(wavs)
    assert [units.tolist() for units, _ in before] == [[1, 2], [1, 2]]  # this untrained recogniser's reading
    for (units, durations), (_, plain_durations) in zip(merged.encode_batch(wavs), before, strict=True):
        assert units.tolist() == [3] and durations.tolist() == [int(plain_durations.sum())]


def test_merges_are_saved_loaded_and_part_of_the_identity(tmp_path) -> None:
    plain, merged = tokenizer(), tokenizer([(0, 1)])
    assert "merges" not in plain.settings()  # tokenisers saved before merges keep their identity
    assert merged.k == 4 and merged.identity["settings_hash"] != plain.identity["settings_hash"]
    merged.save(tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "tokenizer.json").read_text())["settings"]["merges"] == [[0, 1]]
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, PhoneTokenizer)
    assert loaded.merges == [(0, 1)] and loaded.identity == merged.identity


def test_a_k_too_small_for_the_phonemes_and_merges_names_both_settings() -> None:
    with pytest.raises(
        ConfigError, match=r"3 phonemes and 2 merges \(5\).*num_units or lower data.phone_merges"
    ):
        tokenizer([(0, 1), (1, 2)], k=4)


def test_spell_gives_the_phonemes_a_merged_unit_stands_for() -> None:
    merged = tokenizer([(0, 1), (3, 2)])
    assert merged.spell([4, 0, 3, 2]) == ["a", "b", "c", "a", "a", "b", "c"]
    assert tokenizer().spell(np.array([2, 1], dtype=np.uint16)) == ["c", "b"]
    with pytest.raises(ValueError, match="unit 5 is not one of this tokeniser's 5 units"):
        merged.spell([5])


def test_unit_spans_count_the_phonemes_of_each_unit() -> None:
    assert unit_spans(tokenizer()) is None  # no merges: every unit is one phoneme
    spans = unit_spans(tokenizer([(0, 1), (3, 2)], k=7))
    assert spans is not None and spans.tolist() == [1, 1, 1, 2, 3, 1, 1]
