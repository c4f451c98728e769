"""The skip report shared by the readers: counts by reason, examples naming file and line."""

from __future__ import annotations

from pathlib import Path

from slamming.data.corpus.slamkit import ImportReport
from slamming.data.preference.text import TripleReport
from slamming.data.text.reader import TextReport
from slamming.skips import SkipReport


def test_counts_examples_first_and_summary() -> None:
    report = SkipReport()
    assert report.summary() == "skipped 0" and report.num_skipped == 0
    report.skip("a.jsonl", 3, "bad JSON", "Expecting value")
    report.skip(Path("b.txt"), 7, "empty")
    report.skip("a.jsonl", 9, "bad JSON", "Extra data")
    assert report.skipped == {"bad JSON": 2, "empty": 1} and report.num_skipped == 3
    assert report.first == {"bad JSON": "a.jsonl:3", "empty": "b.txt:7"}
    assert report.examples == [
        "a.jsonl:3: bad JSON: Expecting value",
        "b.txt:7: empty",
        "a.jsonl:9: bad JSON: Extra data",
    ]
    assert report.summary() == "skipped 3 (2 bad JSON, 1 empty)"


def test_examples_are_capped_but_every_skip_is_counted() -> None:
    report = SkipReport()
    for line in range(1, 1502):
        report.skip("f", line, "empty")
    assert len(report.examples) == 10 and report.examples[-1] == "f:10: empty"
    assert report.summary() == "skipped 1,501 (1,501 empty)"


def test_the_three_readers_reports_are_skip_reports() -> None:
    text = TextReport(files={"t.txt": "lines"}, lines=4, texts=2)
    text.skip("t.txt", 2, "empty", "no text")
    assert (
        text.summary()
        == "read 2 texts from 4 lines of t.txt (lines); 0 long texts split; skipped 1 (1 empty)"
    )
    assert text.examples == ["t.txt:2: empty: no text"]

    triples = TripleReport("p.jsonl", lines=5, triples=2)
    for line in (2, 3, 5):
        triples.skip("p.jsonl", line, "missing key")
    assert triples.skipped == {"missing key": 3} and triples.skipped_lines == {"missing key": [2, 3, 5]}
    assert triples.summary() == "p.jsonl: 5 lines, 2 triples, skipped 3 (3 missing key: lines 2, 3, 5)"

    imported = ImportReport(Path("f.jsonl"), Path("c"), lines=3, documents=1, tokens=9)
    imported.skip(imported.src, 2, "bad JSON", "Expecting value")
    imported.skip(imported.src, 3, "bad JSON", "Extra data")
    assert imported.summary() == (
        "f.jsonl: imported 1 documents (9 units) into c; skipped 2 of 3 lines\n  bad JSON: 2 lines, first at f.jsonl:2"
    )
    assert all(isinstance(r, SkipReport) for r in (text, triples, imported))
