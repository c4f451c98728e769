"""Tests of the embedded pair benchmarks: the text pairs and their spoken build (real espeak-ng)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from slamming.data.benchmarks.embedded import (
    BENCHMARKS,
    TextPair,
    build_embedded_benchmarks,
    embedded_pairs,
    lexical_pairs,
    split_beginning,
    spoken_cloze_pairs,
    syntactic_pairs,
    topic_cloze_pairs,
)
from slamming.data.text.lexicon import WORD_CLASSES, espeak_phonemes, story_vocabulary
from slamming.data.text.stories import CHARACTERS, StoryGenerator, split_of
from slamming.errors import SlammingError

N = 400
GENDER = dict(CHARACTERS)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@pytest.fixture(scope="module")
def pairs() -> dict[str, list[TextPair]]:
    return embedded_pairs(N, seed=0)


@pytest.fixture(scope="module")
def trained_texts() -> set[str]:
    generator = StoryGenerator(0)
    return {story.text for split in ("train", "val") for story in generator.stories(2000, split)}


def test_counts_ids_and_determinism(pairs: dict[str, list[TextPair]]) -> None:
    assert list(pairs) == list(BENCHMARKS)
    for name, items in pairs.items():
        assert len(items) == N, name
        assert len({p.id for p in items}) == N, name
    assert embedded_pairs(N, seed=0) == pairs
    # A smaller request is a prefix; another seed gives other pairs.
    assert lexical_pairs(50, seed=0) == pairs["lexical"][:50]
    assert topic_cloze_pairs(50, seed=0) == pairs["topic_cloze"][:50]
    assert spoken_cloze_pairs(50, seed=0) == pairs["spoken_cloze"][:50]
    assert lexical_pairs(50, seed=1) != pairs["lexical"][:50]
    assert topic_cloze_pairs(5, seed=1) != pairs["topic_cloze"][:5]
    assert syntactic_pairs(5, seed=1, screen_stories=100) != pairs["syntactic"][:5]
    assert lexical_pairs(0) == [] and syntactic_pairs(0) == []
    with pytest.raises(ValueError):
        topic_cloze_pairs(-1)


def test_lexical_non_words_are_new_sounds(pairs: dict[str, list[TextPair]]) -> None:
    vocabulary = story_vocabulary()
    lowered = {w.lower() for w in vocabulary}
    items = pairs["lexical"]
    assert {p.group for p in items} <= set(WORD_CLASSES)
    assert Counter(p.group for p in items)["name"] >= 30  # every class is represented
    for p in items:
        assert p.positive in vocabulary and vocabulary[p.positive] == p.group
        assert p.negative.isalpha() and re.search("[aeiouy]", p.negative.lower()), p
        assert p.negative.lower() not in lowered and p.negative.lower() != p.positive.lower(), p
        assert p.negative[0].isupper() == p.positive[0].isupper(), p
    assert len({p.positive for p in items}) == N  # 400 distinct words, one non-word each
    # No non-word sounds like a story word or like another non-word (espeak-ng's own phonemes).
    word_sounds = set(espeak_phonemes(sorted(lowered)))
    nonword_sounds = espeak_phonemes([p.negative.lower() for p in items])
    assert not word_sounds & set(nonword_sounds)
    assert len(set(nonword_sounds)) == N


def test_syntactic_pairs_swap_two_neighbours(pairs: dict[str, list[TextPair]]) -> None:
    generator = StoryGenerator(0)
    sentences = {
        s for split in ("train", "val", "test") for st in generator.stories(2000, split) for s in st.sentences
    }
    items = pairs["syntactic"]
    assert Counter(p.group for p in items) == {
        "determiner_order": 100,
        "adjective_noun": 100,
        "preposition_determiner": 100,
        "subject_verb": 100,
    }
    assert len({p.positive for p in items}) == N
    for p in items:
        assert p.positive in sentences and p.negative not in sentences, p
        assert p.negative[0].isupper() and p.negative[-1] == p.positive[-1], p
        pos, neg = _words(p.positive), _words(p.negative)
        assert Counter(pos) == Counter(neg) and pos != neg, p
        diff = [i for i, (a, b) in enumerate(zip(pos, neg, strict=True)) if a != b]
        i = diff[0]
        assert diff == [i, i + 1] and (neg[i], neg[i + 1]) == (pos[i + 1], pos[i]), p
        if p.group == "determiner_order":
            assert pos[i] in ("a", "an", "the"), p
        elif p.group == "preposition_determiner":
            assert pos[i + 1] in ("a", "an", "the", "his", "her"), p
        elif p.group == "adjective_noun":
            assert pos[i - 1] in ("a", "an", "the", "his", "her"), p
        else:
            assert pos[i] in ("he", "she") or pos[i].capitalize() in GENDER, p
    # Held out: no positive is a sentence of the first 2,000 train or validation stories.
    trained = {s for split in ("train", "val") for st in generator.stories(2000, split) for s in st.sentences}
    assert not trained & {p.positive for p in items}


def test_cloze_pairs_are_held_out_and_share_the_beginning(
    pairs: dict[str, list[TextPair]], trained_texts: set[str]
) -> None:
    tests = {story.id: story for story in StoryGenerator(0).stories(N, "test")}
    test_endings = {story.sentences[-1] for story in tests.values()} | {
        s.sentences[-1] for s in StoryGenerator(0).stories(N + 16, "test")
    }
    for name in ("topic_cloze", "spoken_cloze"):
        for p in pairs[name]:
            story = tests[p.id]
            assert p.positive == story.text and split_of(p.positive) == "test"
            assert p.positive not in trained_texts and p.negative not in trained_texts
            assert p.negative != p.positive
            beginning = " ".join(story.sentences[:-1])
            assert p.negative.startswith(beginning + " ")
            ending = p.negative[len(beginning) + 1 :]
            if name == "topic_cloze":
                assert ending in test_endings and ending != story.sentences[-1]
                assert not re.search(rf"\b{story.character}\b", ending), p
    groups = Counter(p.group for p in pairs["spoken_cloze"])
    assert set(groups) == {"character", "object", "place"} and min(groups.values()) >= 120
    for p in pairs["spoken_cloze"]:
        story = tests[p.id]
        ending = p.negative[len(" ".join(story.sentences[:-1])) + 1 :]
        old = {"character": story.character, "object": story.object, "place": story.place}[p.group]
        assert not re.search(rf"\b{old}\b", ending), p
        if p.group == "character":
            names = [w for w in re.findall(r"[A-Z][a-z]+", ending) if w in GENDER]
            assert names and all(GENDER[n] == GENDER[story.character] for n in names), p


def _manifest(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_build_speaks_every_pair_and_reuses(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    voices = ("en-us", "en-us+f3")
    summary = build_embedded_benchmarks(out, num_pairs=6, voices=voices, progress=False)
    assert summary["reused"] is False and not (tmp_path / "bench.partial").exists()
    done = json.loads((out / "done.json").read_text())
    assert done["key"] == summary["key"] and done["settings"]["voices"] == list(voices)
    assert done["hours"] > 0
    expected_rows = {"lexical": 12, "syntactic": 12, "topic_cloze": 6, "spoken_cloze": 6}
    for name in BENCHMARKS:
        rows = _manifest(out / name / "manifest.jsonl")
        assert len(rows) == expected_rows[name] == done["benchmarks"][name]["rows"]
        texts = [json.loads(line) for line in (out / name / "texts.jsonl").read_text().splitlines()]
        assert [t["id"] for t in texts] == list(dict.fromkeys(r["id"] for r in rows))
        cloze = name in ("topic_cloze", "spoken_cloze")
        sides = ("prefix", "positive", "negative") if cloze else ("positive", "negative")
        for row in rows:
            assert set(row) == {*sides, "id", "group", "voice"}
            for side in sides:
                info = sf.info(str(out / name / row[side]))
                assert (info.samplerate, info.channels) == (16000, 1) and info.frames > 1000, row
        if cloze:  # the beginning is spoken once; each side is an ending, shorter than it
            row = rows[0]
            prefix, pos, neg = (sf.info(str(out / name / row[side])).frames for side in sides)
            assert prefix > pos and prefix > neg
        if name in ("lexical", "syntactic"):  # every pair in every voice, one id across voices
            by_id = Counter(r["id"] for r in rows)
            assert set(by_id.values()) == {2}
            assert {(r["id"], r["voice"]) for r in rows} == {(i, v) for i in by_id for v in voices}
        else:
            assert [r["voice"] for r in rows] == list(voices) * 3
    # The benchmark reader of `slamming test` takes every manifest as it is, nothing skipped.
    from slamming.data.benchmarks.readers import load_benchmarks

    for name in BENCHMARKS:
        (bench,) = load_benchmarks(
            {"kind": "manifest", "path": str(out / name / "manifest.jsonl"), "name": name}
        )
        assert len(bench.pairs) == expected_rows[name] and not bench.skipped
        assert all(p.positive.is_file() and p.negative.is_file() for p in bench.pairs)
    # The spoken cloze's prefixes and positives are the topic cloze's utterances (same story, voice,
    # rate and pitch): linked to those files, not spoken again; its negatives are its own.
    topic, spoken = (_manifest(out / name / "manifest.jsonl") for name in ("topic_cloze", "spoken_cloze"))
    for t, s in zip(topic, spoken, strict=True):
        assert (t["id"], t["voice"]) == (s["id"], s["voice"])
        for side in ("prefix", "positive"):
            assert os.path.samefile(out / "topic_cloze" / t[side], out / "spoken_cloze" / s[side])
        assert not os.path.samefile(out / "topic_cloze" / t["negative"], out / "spoken_cloze" / s["negative"])
    assert done["benchmarks"]["spoken_cloze"]["hours"] > done["benchmarks"]["topic_cloze"]["hours"] / 2
    # The two sides of a pair are different audio.
    row = _manifest(out / "lexical" / "manifest.jsonl")[0]
    pos, _ = sf.read(str(out / "lexical" / row["positive"]))
    neg, _ = sf.read(str(out / "lexical" / row["negative"]))
    assert pos.shape != neg.shape or (pos != neg).any()

    stamp = (out / "done.json").stat().st_mtime_ns
    again = build_embedded_benchmarks(out, num_pairs=6, voices=voices, progress=False)
    assert again["reused"] is True and again["key"] == summary["key"]
    assert (out / "done.json").stat().st_mtime_ns == stamp
    with pytest.raises(SlammingError, match="other settings"):
        build_embedded_benchmarks(out, num_pairs=5, voices=voices, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SlammingError, match="not a finished"):
        build_embedded_benchmarks(mine, num_pairs=1, voices=voices, progress=False)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(SlammingError, match="distinct"):
        build_embedded_benchmarks(tmp_path / "x", num_pairs=1, voices=("en-us", "en-us"), progress=False)


def test_cloze_pairs_sets_only_the_cloze_counts(pairs: dict[str, list[TextPair]]) -> None:
    more = embedded_pairs(20, seed=0, cloze_pairs=30)
    assert {name: len(items) for name, items in more.items()} == {
        "lexical": 20,
        "syntactic": 20,
        "topic_cloze": 30,
        "spoken_cloze": 30,
    }
    # The same streams as without it: each count is a prefix of the longer list.
    assert more["lexical"] == pairs["lexical"][:20] and more["syntactic"] == pairs["syntactic"][:20]
    assert more["topic_cloze"] == pairs["topic_cloze"][:30]
    assert more["spoken_cloze"] == pairs["spoken_cloze"][:30]
    assert embedded_pairs(20, seed=0, cloze_pairs=20) == embedded_pairs(20, seed=0)


def test_build_with_cloze_pairs(tmp_path: Path) -> None:
    from slamming.data.benchmarks.datamodule import EmbeddedBenchmarkDataModule
    from slamming.errors import ConfigError

    # cloze_pairs equal to num_pairs is the build without it.
    plain = EmbeddedBenchmarkDataModule(cache_dir=str(tmp_path), num_pairs=2, voices=["en-us"])
    same = EmbeddedBenchmarkDataModule(cache_dir=str(tmp_path), num_pairs=2, voices=["en-us"], cloze_pairs=2)
    assert same.build_dir == plain.build_dir and plain.build_dir.name.startswith("n2-seed0-")
    dm = EmbeddedBenchmarkDataModule(
        cache_dir=str(tmp_path), num_pairs=2, voices=["en-us"], cloze_pairs=3, progress=False
    )
    assert dm.build_dir.name.startswith("n2-c3-seed0-") and dm.build_dir != plain.build_dir
    dm.prepare_data()
    dm.setup("test")
    assert dm.benchmarks is not None
    assert {b.name: len(b.pairs) for b in dm.benchmarks} == {
        "lexical": 2,
        "syntactic": 2,
        "topic_cloze": 3,
        "spoken_cloze": 3,
    }
    done = json.loads((dm.build_dir / "done.json").read_text())
    assert done["settings"]["cloze_pairs"] == 3
    assert (
        "cloze_pairs"
        not in build_embedded_benchmarks(
            tmp_path / "plain", num_pairs=1, voices=["en-us"], cloze_pairs=1, progress=False
        )["settings"]
    )
    with pytest.raises(ConfigError, match="cloze_pairs"):
        EmbeddedBenchmarkDataModule(cache_dir=str(tmp_path), cloze_pairs=0)
    with pytest.raises(SlammingError, match="cloze_pairs"):
        build_embedded_benchmarks(tmp_path / "bad", num_pairs=1, voices=["en-us"], cloze_pairs=0)


def test_split_beginning_shares_whole_sentences(pairs: dict[str, list[TextPair]]) -> None:
    for name in ("topic_cloze", "spoken_cloze"):
        for p in pairs[name][:50]:
            beginning, pos, neg = split_beginning(p.positive, p.negative)
            assert f"{beginning} {pos}" == p.positive and f"{beginning} {neg}" == p.negative
            assert pos != neg and pos.count(". ") == 0  # one ending sentence each
    assert split_beginning("A b. C d! E f.", "A b. C d! G h.") == ("A b. C d!", "E f.", "G h.")
    # Never the whole of a text, even when one text is the other's beginning.
    assert split_beginning("A b. C d.", "A b. C d. E f.") == ("A b.", "C d.", "C d. E f.")
    with pytest.raises(SlammingError, match="share no first sentence"):
        split_beginning("A b. C d.", "X y. C d.")


def test_link_copies_where_the_file_system_has_no_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slamming.data.benchmarks import embedded

    source = tmp_path / "a.wav"
    source.write_bytes(b"RIFF-and-more")
    embedded._link(source, tmp_path / "linked" / "b.wav")
    assert os.path.samefile(source, tmp_path / "linked" / "b.wav")

    def refuse(src: object, dst: object) -> None:
        raise OSError("links not supported")

    monkeypatch.setattr(embedded.os, "link", refuse)
    embedded._link(source, tmp_path / "copied" / "c.wav")
    copy = tmp_path / "copied" / "c.wav"
    assert copy.read_bytes() == source.read_bytes() and not os.path.samefile(source, copy)
