"""Reading user text corpora: formats, problem counting, long-text splitting, content hash, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slamming.data.text.reader import (
    ENDOFTEXT,
    content_hash,
    detect_format,
    read_texts,
    split_long_text,
    split_texts,
    text_id,
)
from slamming.errors import SlammingError


def _write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_plain_lines_one_text_per_non_empty_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.txt", "  The cat sat.  \n\n\tA dog   ran away.\n   \nLast line without newline"
    )
    corpus = read_texts([path])
    assert corpus.texts == ["The cat sat.", "A dog ran away.", "Last line without newline"]
    assert corpus.report.files == {path: "lines"}
    assert corpus.report.lines == 5 and corpus.report.texts == 3
    assert corpus.report.skipped == {} and corpus.report.split == 0
    assert corpus.report.summary().endswith("; 0 long texts split; skipped 0")


def test_jsonl_malformed_lines_are_counted_with_locations(tmp_path: Path) -> None:
    rows = [
        json.dumps({"text": "First good one.", "id": 1}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"body": "wrong key"}),
        json.dumps({"text": 42}),
        json.dumps({"text": "   "}),
        "",
        json.dumps({"text": "Second  good\none."}),
    ]
    path = _write(tmp_path / "data.jsonl", "\n".join(rows) + "\n")
    corpus = read_texts([path])
    assert corpus.texts == ["First good one.", "Second good one."]
    report = corpus.report
    assert report.files == {path: "jsonl"} and report.lines == 8
    assert report.skipped == {
        "invalid_json": 1,
        "not_an_object": 1,
        "missing_field": 1,
        "not_a_string": 1,
        "empty": 1,
    }
    assert report.num_skipped == 5
    assert [e.split(": ")[0] for e in report.examples] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6)]
    assert report.examples[0].startswith(f"{path}:2: invalid_json: ")
    assert report.summary() == (
        f"read 2 texts from 8 lines of {path} (jsonl); 0 long texts split; skipped 5 "
        "(1 empty, 1 invalid_json, 1 missing_field, 1 not_a_string, 1 not_an_object)"
    )


def test_jsonl_custom_field_and_invalid_utf8(tmp_path: Path) -> None:
    data = b'{"story": "Caf\xc3\xa9 at noon."}\n{"story": "bad \xff byte"}\n{"text": "no story key"}\n'
    path = _write(tmp_path / "s.jsonl", data)
    corpus = read_texts([path], field="story")
    assert corpus.texts == ["Café at noon."]
    assert corpus.report.skipped == {"invalid_utf8": 1, "missing_field": 1}
    assert corpus.report.examples[0].startswith(f"{path}:2: invalid_utf8")


def test_tinystories_separators_join_lines_and_count_empty_stories(tmp_path: Path) -> None:
    text = (
        f"{ENDOFTEXT}\n"  # a leading separator closes nothing
        "Once upon a time, there was a cat.\n"
        "\n"
        "The cat   liked milk.\n"
        f"{ENDOFTEXT}\n"
        f"  {ENDOFTEXT}  \n"  # an empty story between two separators
        "Tom had a red ball.\n"
        f"He played with it.{ENDOFTEXT}Then it rained.\n"
    )
    path = _write(tmp_path / "TinyStories-valid.txt", text)
    corpus = read_texts([path])
    assert corpus.report.files == {path: "tinystories"}
    assert corpus.texts == [
        "Once upon a time, there was a cat. The cat liked milk.",
        "Tom had a red ball. He played with it.",
        "Then it rained.",
    ]
    assert corpus.report.skipped == {"empty": 1}
    assert corpus.report.examples == [f"{path}:6: empty: no text"]


def test_auto_detection_and_forced_format(tmp_path: Path) -> None:
    jsonl = _write(tmp_path / "a.jsonl", '{"text": "hi there"}\n')
    stories = _write(tmp_path / "b.txt", f"one\n{ENDOFTEXT}\ntwo\n")
    lines = _write(tmp_path / "c.txt", '{"text": "looks like json"}\nplain\n')
    assert [detect_format(p) for p in (jsonl, stories, lines)] == ["jsonl", "tinystories", "lines"]
    corpus = read_texts([jsonl, stories, lines])
    assert corpus.texts == ["hi there", "one", "two", '{"text": "looks like json"}', "plain"]
    assert list(corpus.report.files.values()) == ["jsonl", "tinystories", "lines"]
    forced = read_texts([stories], format="lines")
    assert forced.texts == ["one", ENDOFTEXT, "two"]
    with pytest.raises(SlammingError, match="unknown text format 'csv'"):
        read_texts([lines], format="csv")  # type: ignore[arg-type]


def test_long_texts_split_at_sentence_ends_and_short_ones_skipped(tmp_path: Path) -> None:
    sentence = "The small fox ran home."  # 23 characters
    long_text = " ".join([sentence] * 5)  # 119 characters
    path = _write(tmp_path / "a.txt", f"{long_text}\nok\nHello there.\n")
    corpus = read_texts([path], min_chars=3, max_chars=50)
    assert corpus.texts == [f"{sentence} {sentence}", f"{sentence} {sentence}", sentence, "Hello there."]
    assert all(len(t) <= 50 for t in corpus.texts)
    assert corpus.report.split == 1 and corpus.report.texts == 4
    assert corpus.report.skipped == {"too_short": 1}


def test_split_long_text_falls_back_to_words_then_characters() -> None:
    assert split_long_text("Short.", 10) == ["Short."]
    assert split_long_text('He said "Go." She went! Why? Yes.', 14) == [
        'He said "Go."',
        "She went! Why?",
        "Yes.",
    ]
    assert split_long_text("one two three four five", 9) == ["one two", "three", "four five"]
    assert split_long_text("abcdefghijkl mn", 5) == ["abcde", "fghij", "kl mn"]
    with pytest.raises(ValueError):
        split_long_text("x", 0)


def test_missing_path_directory_and_empty_corpus_are_one_clear_error(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.txt", "hello\n")
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(
        SlammingError, match=r"text file .*nope\.txt does not exist; fix the path in data\.text_files"
    ):
        read_texts([good, missing])
    with pytest.raises(SlammingError, match="is not a file"):
        read_texts([str(tmp_path)])
    with pytest.raises(SlammingError, match="no text files given"):
        read_texts([])
    blank = _write(tmp_path / "blank.jsonl", '{"text": ""}\n')
    with pytest.raises(SlammingError, match=r"no usable text in .*blank\.jsonl: .*1 empty"):
        read_texts([blank])


def test_content_hash_follows_content_not_file_names(tmp_path: Path) -> None:
    lines = [f"Sentence number {i}." for i in range(10)]
    first = read_texts([_write(tmp_path / "a.txt", "\n".join(lines) + "\n")])
    renamed = read_texts([_write(tmp_path / "renamed.txt", "\n".join(lines) + "\n")])
    reformatted = read_texts(
        [_write(tmp_path / "b.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in lines))]
    )
    spaced = read_texts([_write(tmp_path / "c.txt", "\n\n".join(f"  {t} " for t in lines))])
    assert first.content_hash == renamed.content_hash == reformatted.content_hash == spaced.content_hash
    assert first.content_hash == content_hash(lines) and len(first.content_hash) == 64
    edited = read_texts([_write(tmp_path / "d.txt", "\n".join([*lines[:4], "Changed.", *lines[5:]]))])
    assert edited.content_hash != first.content_hash
    # Text boundaries are part of the content: "ab" + "c" is not "a" + "bc".
    assert content_hash(["ab", "c"]) != content_hash(["a", "bc"])


def test_split_is_deterministic_and_stable_when_texts_are_added() -> None:
    texts = [f"Story number {i} about a cat." for i in range(400)]
    train, val = split_texts(texts, 0.1, seed=0)
    assert (train, val) == split_texts(texts, 0.1, seed=0)
    assert sorted(train + val) == sorted(texts) and not set(train) & set(val)
    assert 20 <= len(val) <= 60  # 10 % of 400, loosely
    assert train == [t for t in texts if t in set(train)]  # corpus order is kept
    more = [f"Another text {i}." for i in range(300)]
    train2, val2 = split_texts(texts[:200] + more + texts[200:], 0.1, seed=0)
    assert set(val) <= set(val2) and set(train) <= set(train2)
    assert set(split_texts(texts, 0.1, seed=1)[1]) != set(val)
    assert split_texts(texts, 0.0) == (texts, [])
    with pytest.raises(SlammingError, match="val_fraction"):
        split_texts(texts, 1.0)


def test_text_id_is_a_stable_short_hash() -> None:
    assert text_id("hello") == text_id("hello") and len(text_id("hello")) == 16
    assert text_id("hello") != text_id("hello.")
