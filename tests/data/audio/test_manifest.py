"""Manifest reading: directory scans, TSV and JSONL lists, and their error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slamming.data.audio.manifest import ManifestEntry, read_manifest
from slamming.errors import SlammingError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_directory_scan_is_recursive_sorted_and_filters_suffixes(tmp_path: Path) -> None:
    for name in ["b.wav", "a/z.FLAC", "a/c.ogg", "notes.txt", "a/d.mp4", "0.wav"]:
        _touch(tmp_path / name)
    entries = read_manifest(tmp_path)
    assert [e.rel for e in entries] == ["0.wav", "a/c.ogg", "a/z.FLAC", "b.wav"]
    assert entries[1] == ManifestEntry(path=tmp_path / "a" / "c.ogg", rel="a/c.ogg")


def test_empty_directory_names_the_directory(tmp_path: Path) -> None:
    _touch(tmp_path / "readme.txt")
    with pytest.raises(SlammingError, match=r"no audio files .* found under .*"):
        read_manifest(tmp_path)


def test_tsv_with_relative_and_absolute_paths(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "m.tsv"
    absolute = tmp_path / "abs.wav"
    manifest.write_text(
        "path\tduration\ttext\n"
        "../audio/a.wav\t1.5\thello world\n"
        "\n"
        f"{absolute}\t\ttab\tinside\n"
        "./b.flac\t2\t\n"
    )
    entries = read_manifest(manifest)
    assert entries == [
        ManifestEntry(path=lists / "../audio/a.wav", rel="../audio/a.wav", duration=1.5, text="hello world"),
        ManifestEntry(path=absolute, rel=absolute.as_posix(), duration=None, text="tab\tinside"),
        ManifestEntry(path=lists / "./b.flac", rel="b.flac", duration=2.0, text=""),
    ]


def test_tsv_path_only_and_column_order(tmp_path: Path) -> None:
    (tmp_path / "p.tsv").write_text("path\na.wav\nb/c.wav\n")
    assert [e.rel for e in read_manifest(tmp_path / "p.tsv")] == ["a.wav", "b/c.wav"]
    (tmp_path / "q.tsv").write_text("duration\tpath\n3.0\tx.wav\n")
    assert read_manifest(tmp_path / "q.tsv") == [ManifestEntry(tmp_path / "x.wav", "x.wav", 3.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file\tduration\na.wav\t1\n", r"m\.tsv:1: header"),
        ("path\tlength\na.wav\t1\n", r"m\.tsv:1: header"),
        ("path\tduration\na.wav\n", r"m\.tsv:2: expected 2 tab-separated fields, got 1"),
        ("path\tduration\na.wav\tlong\n", r"m\.tsv:2: duration 'long' is not a number"),
        ("path\tduration\na.wav\t-1\n", r"m\.tsv:2: duration"),
        ("path\tduration\n\t1\n", r"m\.tsv:2: missing or empty audio path"),
        ("path\na.wav\n./a.wav\n", r"lists a\.wav twice"),
        ("", r"is empty"),
        ("path\n", r"lists no audio files"),
    ],
)
def test_bad_tsv_lines_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.tsv").write_text(text)
    with pytest.raises(SlammingError, match=message):
        read_manifest(tmp_path / "m.tsv")


def test_jsonl_manifest(tmp_path: Path) -> None:
    rows = [{"path": "a.wav", "duration": 1.25, "text": "hi"}, {"path": "sub/b.flac"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_manifest(tmp_path / "m.jsonl") == [
        ManifestEntry(tmp_path / "a.wav", "a.wav", 1.25, "hi"),
        ManifestEntry(tmp_path / "sub/b.flac", "sub/b.flac", None, None),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"m\.jsonl:2: not valid JSON"),
        ('["a.wav"]', r"m\.jsonl:2: expected an object"),
        ('{"duration": 1}', r"m\.jsonl:2: missing or empty audio path"),
        ('{"path": "b.wav", "duration": "x"}', r"m\.jsonl:2: duration 'x'"),
        ('{"path": "b.wav", "duration": true}', r"m\.jsonl:2: duration True"),
        ('{"path": "b.wav", "text": 3}', r"m\.jsonl:2: text must be a string"),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav"}\n' + line + "\n")
    with pytest.raises(SlammingError, match=message):
        read_manifest(tmp_path / "m.jsonl")


def test_missing_or_unknown_manifest(tmp_path: Path) -> None:
    with pytest.raises(SlammingError, match=r"does not exist"):
        read_manifest(tmp_path / "nope.tsv")
    (tmp_path / "list.csv").write_text("path\na.wav\n")
    with pytest.raises(SlammingError, match=r"neither a directory, a \.tsv nor a \.jsonl"):
        read_manifest(tmp_path / "list.csv")
