"""Tests of the slamkit importers and exporters (slamming.data.corpus.slamkit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.slamkit import (
    BAD_AUDIO_REPR,
    BAD_DURATION,
    BAD_FILE_NAME,
    BAD_JSON,
    BLANK,
    EMPTY,
    LENGTH_MISMATCH,
    MISSING_KEY,
    NON_INTEGER,
    NOT_AN_OBJECT,
    OUT_OF_RANGE,
    export_features_jsonl,
    export_tokens_jsonl,
    import_features_jsonl,
    import_tokens_jsonl,
)
from slamming.data.corpus.writer import CorpusWriter
from slamming.errors import CorpusError, SlammingError

HUBERT = {
    "kind": "hubert",
    "model": "mhubert-base-25hz",
    "layer": 11,
    "k": 500,
    "frame_rate": 25,
    "dedup": True,
}


def _features(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(1, 30))
        rows.append(
            {
                "units": rng.integers(0, 500, size=length).tolist(),
                "duration": rng.integers(1, 6, size=length).tolist(),
                "file_name": f"LibriSpeech/dev-clean/{i}.flac",
            }
        )
    return rows


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_features_import_keeps_units_durations_and_file_names(tmp_path: Path) -> None:
    rows = _features(12)
    src = _write_lines(tmp_path / "features.jsonl", [json.dumps(r) for r in rows])
    report = import_features_jsonl(src, tmp_path / "c", num_units=500, tokenizer=HUBERT)
    assert (report.lines, report.documents, report.num_skipped) == (12, 12, 0)
    assert report.tokens == sum(len(r["units"]) for r in rows)  # type: ignore[arg-type]
    corpus = UnitCorpus(tmp_path / "c")
    assert corpus.tokenizer == HUBERT and corpus.num_units == 500
    for i, row in enumerate(rows):
        assert corpus.document(i).tolist() == row["units"]
        assert corpus.durations(i).tolist() == row["duration"]  # type: ignore[union-attr]
        assert corpus.source(i) == row["file_name"]
    frames = sum(sum(r["duration"]) for r in rows)  # type: ignore[arg-type]
    assert corpus.hours == pytest.approx(frames / 25 / 3600)
    assert report.summary() == (
        f"{src}: imported 12 documents ({report.tokens:,} units) into {tmp_path / 'c'}; skipped 0 of 12 lines"
    )


def test_features_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    good = _features(3)
    lines = [
        json.dumps(good[0]),
        "{not json",  # 2
        "",  # 3
        json.dumps([1, 2]),  # 4
        json.dumps({"units": [1], "file_name": "a"}),  # 5
        json.dumps({"units": [1, 2], "duration": [1], "file_name": "b"}),  # 6
        json.dumps({"units": [1.5], "duration": [1], "file_name": "c"}),  # 7
        json.dumps({"units": "1 2", "duration": [1, 1], "file_name": "d"}),  # 8
        json.dumps({"units": [1, 500], "duration": [1, 1], "file_name": "e"}),  # 9
        json.dumps({"units": [-1], "duration": [1], "file_name": "f"}),  # 10
        json.dumps({"units": [1, 2], "duration": [1, 0], "file_name": "g"}),  # 11
        json.dumps({"units": [], "duration": [], "file_name": "h"}),  # 12
        json.dumps({"units": [1], "duration": [1], "file_name": 7}),  # 13
        json.dumps({"units": [[1], [2]], "duration": [1, 1], "file_name": "i"}),  # 14
        json.dumps(good[1]),
        json.dumps({"units": [3], "duration": [2**40], "file_name": "j"}),  # 16
        json.dumps(good[2]),
    ]
    src = _write_lines(tmp_path / "features.jsonl", lines)
    report = import_features_jsonl(src, tmp_path / "c", 500, HUBERT)
    assert (report.lines, report.documents, report.num_skipped) == (17, 3, 14)
    assert report.skipped == {
        BAD_JSON: 1,
        BLANK: 1,
        NOT_AN_OBJECT: 1,
        MISSING_KEY: 1,
        LENGTH_MISMATCH: 1,
        NON_INTEGER: 3,
        OUT_OF_RANGE: 2,
        BAD_DURATION: 2,
        EMPTY: 1,
        BAD_FILE_NAME: 1,
    }
    assert report.examples[0].startswith(f"{src}:2: bad JSON: ")
    assert report.examples[3] == f"{src}:5: missing key: no 'duration' (keys: units, file_name)"
    assert f"{src}:9: unit id out of range: unit id 500 is not in [0, 500)" in report.examples
    # Only the first ten problems (lines 2-11) are kept as examples; all are counted.
    assert (
        report.examples[-1] == f"{src}:11: bad duration: durations must be frame counts in [1, 2**31), got 0"
    )
    assert len(report.examples) == 10
    assert report.first[OUT_OF_RANGE] == f"{src}:9" and report.first[BAD_DURATION] == f"{src}:11"
    big = import_features_jsonl(_write_lines(tmp_path / "big.jsonl", lines[15:]), tmp_path / "d", 500, HUBERT)
    assert big.examples == [
        f"{tmp_path / 'big.jsonl'}:1: bad duration: durations must be frame counts in [1, 2**31), got {2**40}"
    ]
    summary = report.summary().splitlines()
    assert summary[0].endswith("skipped 14 of 17 lines")
    assert summary[1] == f"  non-integer value: 3 lines, first at {src}:7"
    assert len(summary) == 1 + len(report.skipped)  # one line per problem kind
    corpus = UnitCorpus(tmp_path / "c")
    assert [corpus.source(i) for i in range(3)] == [g["file_name"] for g in good]
    assert corpus.document(2).tolist() == good[2]["units"]


def test_tokens_import_parses_audio_repr(tmp_path: Path) -> None:
    lines = [
        json.dumps({"file_name": "a.wav", "audio_repr": "<Un3><Un49><Un7>"}),
        json.dumps({"file_name": "b.wav", "audio_repr": "<Un3><Un4x>"}),
        json.dumps({"file_name": "c.wav", "audio_repr": "<Un3> <Un4>"}),
        json.dumps({"file_name": "d.wav", "audio_repr": "<Un3><Un500>"}),
        json.dumps({"file_name": "e.wav", "audio_repr": ""}),
        json.dumps({"file_name": "f.wav", "audio_repr": ["<Un1>"]}),
        json.dumps({"audio_repr": "<Un1>"}),
        json.dumps({"file_name": "g.wav", "audio_repr": "<Un0><Un499>"}),
    ]
    src = _write_lines(tmp_path / "tokens.jsonl", lines)
    report = import_tokens_jsonl(src, tmp_path / "c", 500, HUBERT)
    assert (report.documents, report.num_skipped) == (2, 6)
    assert report.skipped == {BAD_AUDIO_REPR: 3, OUT_OF_RANGE: 1, EMPTY: 1, MISSING_KEY: 1}
    assert report.examples[0] == f"{src}:2: bad audio_repr: not a <UnN> token at character 5: '<Un4x>'"
    assert report.examples[1] == f"{src}:3: bad audio_repr: not a <UnN> token at character 5: ' <Un4>'"
    corpus = UnitCorpus(tmp_path / "c")
    assert corpus.document(0).tolist() == [3, 49, 7] and corpus.document(1).tolist() == [0, 499]
    assert corpus.source(1) == "g.wav" and corpus.durations(0) is None and corpus.hours is None


def test_missing_input_and_all_bad_lines(tmp_path: Path) -> None:
    with pytest.raises(
        SlammingError, match=r"input file .*nope.jsonl does not exist; give the path of a features"
    ):
        import_features_jsonl(tmp_path / "nope.jsonl", tmp_path / "c", 500, HUBERT)
    with pytest.raises(SlammingError, match="is a directory"):
        import_tokens_jsonl(tmp_path, tmp_path / "c", 500, HUBERT)
    src = _write_lines(
        tmp_path / "bad.jsonl", ["{oops", json.dumps({"units": [600], "duration": [1], "file_name": "x"})]
    )
    with pytest.raises(
        CorpusError,
        match=r"bad.jsonl holds no valid features.jsonl line \(2 lines; bad JSON: 1; "
        r"unit id out of range: 1; first: .*bad.jsonl:1: bad JSON.*nothing was written to",
    ):
        import_features_jsonl(src, tmp_path / "c", 500, HUBERT)
    empty = _write_lines(tmp_path / "empty.jsonl", [])
    with pytest.raises(CorpusError, match=r"\(0 lines; the file is empty\)"):
        import_tokens_jsonl(empty, tmp_path / "c", 500, HUBERT)
    # Neither the corpus nor a temporary directory was left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.jsonl"]


def test_import_never_replaces_an_existing_corpus_unasked(tmp_path: Path) -> None:
    src = _write_lines(tmp_path / "f.jsonl", [json.dumps(r) for r in _features(2)])
    import_features_jsonl(src, tmp_path / "c", 500, HUBERT)
    with pytest.raises(CorpusError, match="already exists; pass overwrite=True"):
        import_features_jsonl(src, tmp_path / "c", 500, HUBERT)
    report = import_features_jsonl(src, tmp_path / "c", 500, HUBERT, overwrite=True)
    assert report.documents == 2 and len(UnitCorpus(tmp_path / "c")) == 2


def test_features_round_trip_is_byte_identical(tmp_path: Path) -> None:
    rows = _features(20, seed=3)
    rows[4]["file_name"] = "données/é.wav"  # non-ASCII names escape exactly as json.dumps does
    src = _write_lines(tmp_path / "features.jsonl", [json.dumps(r) for r in rows])
    import_features_jsonl(src, tmp_path / "c", 500, HUBERT)
    assert export_features_jsonl(tmp_path / "c", tmp_path / "out.jsonl") == 20
    assert (tmp_path / "out.jsonl").read_bytes() == src.read_bytes()
    with pytest.raises(SlammingError, match="out.jsonl already exists; pass overwrite=True"):
        export_features_jsonl(tmp_path / "c", tmp_path / "out.jsonl")
    assert export_features_jsonl(tmp_path / "c", tmp_path / "out.jsonl", overwrite=True) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "features.jsonl", "out.jsonl"]


def test_tokens_round_trip_and_documents_without_source(tmp_path: Path) -> None:
    lines = [json.dumps({"file_name": f"{i}.wav", "audio_repr": f"<Un{i}><Un{i + 1}>"}) for i in range(5)]
    src = _write_lines(tmp_path / "tokens.jsonl", lines)
    import_tokens_jsonl(src, tmp_path / "c", 500, HUBERT)
    assert export_tokens_jsonl(tmp_path / "c", tmp_path / "out.jsonl") == 5
    assert (tmp_path / "out.jsonl").read_bytes() == src.read_bytes()
    # Durations are needed for features.jsonl: a clear error, and no file.
    with pytest.raises(
        CorpusError, match="has no durations, which features.jsonl needs; use export_tokens_jsonl"
    ):
        export_features_jsonl(tmp_path / "c", tmp_path / "f.jsonl")
    assert not (tmp_path / "f.jsonl").exists()

    with CorpusWriter(tmp_path / "plain", HUBERT, 500) as writer:
        writer.add([5, 6], durations=[2, 3])
    export_features_jsonl(tmp_path / "plain", tmp_path / "plain.jsonl")
    assert json.loads((tmp_path / "plain.jsonl").read_text()) == {
        "units": [5, 6],
        "duration": [2, 3],
        "file_name": "0",
    }
