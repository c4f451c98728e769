"""Text preference triples: auto-BLEU and its filter, jsonl and SWAG CSV reading, story triples."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from slamming.data.preference.text import (
    TextTriple,
    filter_auto_bleu,
    read_swag_csv,
    read_triples_jsonl,
    split_triples,
    story_triples,
    triple_id,
    triples_hash,
)
from slamming.data.text.repetition import auto_bleu
from slamming.data.text.stories import StoryGenerator, prefix_and_ending
from slamming.errors import SlammingError


def _triple(prompt: str, chosen: str, rejected: str = "something else") -> TextTriple:
    return TextTriple(prompt, chosen, rejected, triple_id(prompt, chosen, rejected))


def test_filter_drops_repetitive_keeps_normal_and_boundary() -> None:
    repetitive = _triple("the dog ran", "the dog ran the dog ran the dog ran")
    normal = _triple("A man walks into a bar.", "He orders a glass of water and sits down.")
    # go on | on and | and go | go on | on then | then go | go on | on to | to see | see it -> 3/10.
    boundary = _triple("go on and go on", "then go on to see it")
    assert auto_bleu(boundary.prompt + " " + boundary.chosen) == 0.3
    kept, dropped = filter_auto_bleu([repetitive, normal, boundary])
    assert kept == [normal, boundary]
    assert dropped == [repetitive]
    # A stricter threshold drops the boundary triple too.
    assert filter_auto_bleu([boundary], max_auto_bleu=0.29) == ([], [boundary])


def test_read_jsonl_skips_and_counts_bad_lines(tmp_path: Path) -> None:
    good = {"prompt": " A man sits. ", "chosen": "He reads.", "rejected": "He flies."}
    lines = [
        json.dumps(good),
        json.dumps({"prompt": "p2", "chosen": "c2", "rejected": "r2", "extra": 1}),
        json.dumps({"prompt": "p3", "chosen": "   ", "rejected": "r3"}),
        "",
        '{"prompt": "p5", ',
        json.dumps({"prompt": "p6", "chosen": "c6"}),
        json.dumps({"prompt": "p7", "chosen": "c7", "rejected": 3}),
        "[1, 2]",
        json.dumps({"prompt": "p9", "chosen": "c9", "rejected": "r9"}),
    ]
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(lines) + "\n")
    triples, report = read_triples_jsonl(path)
    assert [t.prompt for t in triples] == ["A man sits.", "p2", "p9"]
    assert triples[0] == TextTriple(
        "A man sits.", "He reads.", "He flies.", triple_id("A man sits.", "He reads.", "He flies.")
    )
    assert report.summary() == (
        f"{path}: 8 lines, 3 triples, skipped 5 (1 empty side: line 3; 1 malformed JSON: line 5; "
        "1 missing key: line 6; 1 non-string value: line 7; 1 not a JSON object: line 8)"
    )
    # Other key names.
    renamed = tmp_path / "renamed.jsonl"
    renamed.write_text(json.dumps({"q": "p", "good": "c", "bad": "r"}) + "\n")
    triples, _ = read_triples_jsonl(renamed, prompt_key="q", chosen_key="good", rejected_key="bad")
    assert (triples[0].prompt, triples[0].chosen, triples[0].rejected) == ("p", "c", "r")


def test_read_jsonl_errors(tmp_path: Path) -> None:
    with pytest.raises(SlammingError, match="nowhere.jsonl does not exist"):
        read_triples_jsonl(tmp_path / "nowhere.jsonl")
    empty = tmp_path / "bad.jsonl"
    empty.write_text('{"prompt": "p"}\nnot json\n')
    with pytest.raises(SlammingError, match=r"no usable triple.*'prompt', 'chosen', 'rejected'") as err:
        read_triples_jsonl(empty)
    assert "\n" not in str(err.value) and "2 lines, 0 triples" in str(err.value)


_SWAG_HEADER = ["video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source"]
_SWAG_HEADER += ["ending0", "ending1", "ending2", "ending3", "label", "notes"]


def _swag_row(sent1: str, sent2: str, endings: list[str], label: str, gold: str = "gold") -> list[str]:
    return ["vid", "7", f"{sent1} {sent2}", sent1, sent2, gold, *endings, label, "ignored"]


def _write_swag(path: Path, header: list[str] = _SWAG_HEADER) -> Path:
    rows = [
        _swag_row(
            "A man is in a kitchen.", "He", ["cuts an onion.", "swims.", "sings loudly.", "flies."], "0"
        ),
        _swag_row("A dog runs.", "The dog", ["stops.", "stops.", "jumps over a log.", "stops."], "1", "gen"),
        _swag_row("Bad label here.", "She", ["a.", "b.", "c.", "d."], "x"),
        _swag_row("Label out of range.", "She", ["a.", "b.", "c.", "d."], "4"),
        _swag_row("An ending is empty.", "She", ["a.", "", "c.", "d."], "0"),
        _swag_row("All endings are the same.", "It", ["ends.", "ends.", "ends.", "ends."], "2"),
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_read_swag_csv(tmp_path: Path) -> None:
    path = _write_swag(tmp_path / "train.csv")
    triples, report = read_swag_csv(path)
    assert [(t.prompt, t.chosen) for t in triples] == [
        ("A man is in a kitchen.", "He cuts an onion."),
        ("A dog runs.", "The dog stops."),
    ]
    assert triples[0].rejected in {"He swims.", "He sings loudly.", "He flies."}
    # The only wrong ending that differs from the true one is forced.
    assert triples[1].rejected == "The dog jumps over a log."
    assert triples[0].id == triple_id(triples[0].prompt, triples[0].chosen, triples[0].rejected)
    assert report.summary() == (
        f"{path}: 6 rows, 2 triples, skipped 4 (2 bad label: lines 4, 5; 1 empty sent1 or ending: line 6; "
        "1 rejected equals chosen: line 7)"
    )
    # Deterministic across calls; the paper's gold rows only on request.
    assert read_swag_csv(path)[0] == triples
    rejected = {read_swag_csv(path, seed=s)[0][0].rejected for s in range(12)}
    assert len(rejected) > 1  # the seed does choose among the wrong endings
    gold, gold_report = read_swag_csv(path, gold_only=True)
    assert gold == triples[:1] and gold_report.skipped_lines["not gold"] == [3]
    assert gold_report.skipped["not gold"] == 1 and gold_report.first["not gold"] == f"{path}:3"


def test_read_swag_csv_errors(tmp_path: Path) -> None:
    header = [c for c in _SWAG_HEADER if c not in ("label", "ending3")]
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(header) + "\n")
    with pytest.raises(SlammingError, match=r"bad.csv lacks the SWAG column\(s\) ending3, label"):
        read_swag_csv(bad)
    with pytest.raises(SlammingError, match="missing.csv does not exist"):
        read_swag_csv(tmp_path / "missing.csv")
    only_bad = tmp_path / "only_bad.csv"
    with only_bad.open("w", newline="") as handle:
        csv.writer(handle).writerows([_SWAG_HEADER, _swag_row("s", "t", ["a", "b", "c", "d"], "9")])
    with pytest.raises(SlammingError, match="1 rows, 0 triples.*no usable SWAG row"):
        read_swag_csv(only_bad)


def test_story_triples() -> None:
    train = story_triples(12, "train", seed=0)
    stories = StoryGenerator(0).stories(12, "train")
    assert len(train) == 12
    endings = {prefix_and_ending(s)[1] for s in StoryGenerator(0).stories(40, "train")}
    for triple, story in zip(train, stories, strict=True):
        beginning, ending = prefix_and_ending(story)
        assert triple.prompt == " ".join(beginning)
        assert triple.chosen == ending
        assert triple.rejected != ending and triple.rejected in endings
    assert story_triples(12, "train", seed=0) == train
    assert story_triples(5, "train", seed=0) == train[:5]
    assert story_triples(12, "train", seed=1) != train
    val = story_triples(6, "val", seed=0)
    assert not {t.prompt for t in val} & {t.prompt for t in train}
    assert story_triples(0) == []
    with pytest.raises(SlammingError, match="unknown story split"):
        story_triples(2, "dev")


def test_story_triples_with_contradictions_swap_one_name_in_the_stories_own_ending() -> None:
    plain = story_triples(40, "train", seed=0)
    mixed = story_triples(40, "train", seed=0, contradictions=0.25)
    stories = StoryGenerator(0).stories(40, "train")
    assert story_triples(30, "train", seed=0, contradictions=0.25) == mixed[:30]
    assert [t.chosen for t in mixed] == [t.chosen for t in plain]
    kinds = []
    for i, (triple, story) in enumerate(zip(mixed, stories, strict=True)):
        if i % 4 != 3:  # floor((i + 1) / 4) > floor(i / 4) only at i = 3, 7, 11, ...
            assert triple == plain[i]
            continue
        changed = [
            (a, b) for a, b in zip(triple.chosen.split(), triple.rejected.split(), strict=True) if a != b
        ]
        assert changed, triple  # same sentence, one name replaced (a place may be two words)
        old = " ".join(a for a, _ in changed).strip(".,")
        kind = next(k for k in ("character", "object", "place") if old in getattr(story, k))
        new = " ".join(b for _, b in changed).strip(".,")
        assert new not in story.text
        kinds.append(kind)
    assert len(kinds) == 10 and set(kinds) == {"character", "object", "place"}
    assert story_triples(12, "train", seed=0, contradictions=1.0)[0].rejected != plain[0].rejected
    with pytest.raises(SlammingError, match="share in"):
        story_triples(2, contradictions=1.5)


def test_story_triples_from_a_later_story_skip_the_first_ones() -> None:
    first = story_triples(30, "train", seed=0)
    later = story_triples(10, "train", seed=0, start=20)
    stories = StoryGenerator(0).stories(30, "train")
    # Triple k of start=20 is made from story 20 + k: the same triple as without a start.
    assert later == first[20:30]
    assert story_triples(4, "train", seed=0, start=20) == later[:4]
    prompts = {" ".join(prefix_and_ending(s)[0]) for s in stories[:20]}
    assert not prompts & {t.prompt for t in later}
    # With contradictions the share counts from the first triple made, not from story 0.
    mixed = story_triples(8, "train", seed=0, contradictions=0.5, start=20)
    assert [t == p for t, p in zip(mixed, first[20:28], strict=True)] == [True, False] * 4
    assert [t.chosen for t in mixed] == [t.chosen for t in first[20:28]]
    with pytest.raises(SlammingError, match="first story of the triples must be >= 0, got -1"):
        story_triples(2, start=-1)


def test_split_triples_by_prompt() -> None:
    triples = [_triple(f"prompt {i % 50}", f"chosen {i}") for i in range(200)]
    train, val = split_triples(triples, 0.25, seed=0)
    assert len(train) + len(val) == 200 and 20 < len(val) < 90
    assert not {t.prompt for t in train} & {t.prompt for t in val}  # one prompt, one split
    assert split_triples(triples, 0.25, seed=0) == (train, val)
    assert split_triples(triples, 0.25, seed=1) != (train, val)
    assert split_triples(triples, 0.0) == (triples, [])
    with pytest.raises(SlammingError, match="val_fraction"):
        split_triples(triples, 1.0)


def test_triples_hash_names_the_content() -> None:
    a = [_triple("p", "c", "r")]
    assert triples_hash(a) == triples_hash([_triple("p", "c", "r")])
    assert triples_hash(a) != triples_hash([_triple("p", "c", "r2")])
    assert triples_hash([_triple("ab", "c", "r")]) != triples_hash([_triple("a", "bc", "r")])
