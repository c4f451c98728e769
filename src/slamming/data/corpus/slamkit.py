"""Import the authors' unit files (slamkit) into a unit corpus, and export a corpus back.

Two line formats (reference/slam-recipe.md §2.3), one JSON object per line:

- ``features.jsonl`` (slamkit ``extract_features``):
  ``{"units": [int, ...], "duration": [int, ...], "file_name": "<path>"}`` — durations are frame
  counts, stored as the corpus durations; ``file_name`` becomes the document's source.
- ``tokens.jsonl`` (slamkit ``prepare_tokens``): ``{"file_name": "<path>", "audio_repr": "<Un3><Un49>..."}``
  — no durations.

A malformed line is one of: bad JSON, a missing key, a non-integer value, ``units``/``duration``
of different lengths, an out-of-range unit id (often a ``num_units`` that is too small), a bad
duration or a bad ``audio_repr`` token. With ``skip_bad`` such lines are skipped and counted: the
:class:`ImportReport` says how many lines of each kind were skipped and where the first ones are
(``file:line: reason``). Without it (the default of ``slamming corpus import-*``, which takes
``--skip-bad``) one malformed line refuses the import: a :class:`~slamming.errors.CorpusError` gives
the counts in one line and nothing is written, so a corpus never silently lacks lines. If no line is
valid nothing is written either: an empty corpus is never written silently.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from slamming.atomic import atomic_path
from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.writer import CorpusWriter
from slamming.errors import CorpusError, SlammingError
from slamming.skips import SkipReport

MAX_EXAMPLES = 10
BAD_JSON = "bad JSON"
NOT_AN_OBJECT = "not a JSON object"
BLANK = "blank line"
MISSING_KEY = "missing key"
NON_INTEGER = "non-integer value"
LENGTH_MISMATCH = "units/duration length mismatch"
OUT_OF_RANGE = "unit id out of range"
BAD_DURATION = "bad duration"
BAD_AUDIO_REPR = "bad audio_repr"
BAD_FILE_NAME = "bad file_name"
EMPTY = "empty document"

# Unit tokens as slamkit writes them. Nine digits at most: larger ids are out of any uint16 range,
# and the cap keeps int64 conversion safe.
_UNIT_TOKENS = re.compile(r"(?:<Un\d{1,9}>)*")
_UNIT_ID = re.compile(r"<Un(\d{1,9})>")
_Parsed = tuple[np.ndarray, np.ndarray | None, str]


class _Skip(Exception):
    """A malformed line: its problem kind and a short detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


@dataclass
class ImportReport(SkipReport):
    """What an import read, wrote and skipped (a :class:`~slamming.skips.SkipReport`).

    Attributes:
        src: The input file.
        dst: The corpus written.
        lines: Lines read.
        documents: Documents written (one per valid line).
        tokens: Units written.
        skipped: Lines skipped per problem kind.
        examples: The first ``MAX_EXAMPLES`` problems as ``"file:line: kind: detail"``.
        first: Where each problem kind first occurred, as ``"file:line"``.
    """

    max_examples: ClassVar[int] = MAX_EXAMPLES

    src: Path
    dst: Path
    lines: int = 0
    documents: int = 0
    tokens: int = 0

    def summary(self) -> str:
        """A header line, then one line per problem kind (count and first location)."""
        head = (
            f"{self.src}: imported {self.documents:,} documents ({self.tokens:,} units) into {self.dst}; "
            f"skipped {self.num_skipped:,} of {self.lines:,} lines"
        )
        kinds = sorted(self.skipped.items(), key=lambda item: (-item[1], item[0]))
        return "\n".join(
            [head] + [f"  {kind}: {n:,} lines, first at {self.first[kind]}" for kind, n in kinds]
        )


def _ints(obj: dict[str, Any], key: str) -> np.ndarray:
    """``obj[key]`` as a 1-D int64 array, or a :class:`_Skip`."""
    value = obj[key]
    if not isinstance(value, list):
        raise _Skip(NON_INTEGER, f"{key} is a JSON {type(value).__name__}, not a list of integers")
    if not value:
        return np.zeros(0, dtype=np.int64)
    try:
        arr = np.array(value)
    except (ValueError, OverflowError, TypeError) as e:
        raise _Skip(NON_INTEGER, f"{key} is not a flat list of integers ({e})") from e
    if arr.ndim != 1 or arr.dtype.kind not in "iu":  # uint64 only for ids >= 2**63: out of range
        raise _Skip(NON_INTEGER, f"{key} holds {arr.dtype} values, not integers")
    return arr


def _require(obj: dict[str, Any], *keys: str) -> None:
    missing = [key for key in keys if key not in obj]
    if missing:
        raise _Skip(
            MISSING_KEY, f"no {', '.join(repr(k) for k in missing)} (keys: {', '.join(obj) or 'none'})"
        )
    if not isinstance(obj["file_name"], str):
        raise _Skip(BAD_FILE_NAME, f"file_name is a JSON {type(obj['file_name']).__name__}, not a string")


def _check_units(units: np.ndarray, num_units: int) -> None:
    if units.size == 0:
        raise _Skip(EMPTY, "no units")
    lo, hi = int(units.min()), int(units.max())
    if lo < 0 or hi >= num_units:
        raise _Skip(OUT_OF_RANGE, f"unit id {lo if lo < 0 else hi} is not in [0, {num_units})")


def _parse_features(obj: dict[str, Any], num_units: int) -> _Parsed:
    _require(obj, "units", "duration", "file_name")
    units, durations = _ints(obj, "units"), _ints(obj, "duration")
    if units.size != durations.size:
        raise _Skip(LENGTH_MISMATCH, f"{units.size} units but {durations.size} durations")
    _check_units(units, num_units)
    lo, hi = int(durations.min()), int(durations.max())
    if lo < 1 or hi >= 2**31:  # the corpus stores int32 run lengths of at least one frame
        raise _Skip(BAD_DURATION, f"durations must be frame counts in [1, 2**31), got {lo if lo < 1 else hi}")
    return units, durations, obj["file_name"]


def _parse_tokens(obj: dict[str, Any], num_units: int) -> _Parsed:
    _require(obj, "audio_repr", "file_name")
    text = obj["audio_repr"]
    if not isinstance(text, str):
        raise _Skip(BAD_AUDIO_REPR, f"audio_repr is a JSON {type(text).__name__}, not a string")
    valid = _UNIT_TOKENS.match(text).end()  # type: ignore[union-attr]  # matches "" at least
    if valid != len(text):
        raise _Skip(BAD_AUDIO_REPR, f"not a <UnN> token at character {valid}: {text[valid : valid + 16]!r}")
    units = np.array(_UNIT_ID.findall(text), dtype=np.int64)
    _check_units(units, num_units)
    return units, None, obj["file_name"]


def _refusal(report: ImportReport, what: str) -> str:
    """The one line that refuses an import with malformed lines (without ``skip_bad``)."""
    kinds = sorted(report.skipped.items(), key=lambda item: (-item[1], item[0]))
    counts = "; ".join(f"{kind}: {n:,}, first at {report.first[kind]}" for kind, n in kinds)
    hint = (
        " (unit ids out of range: is --num-units the K of the tokeniser that made the file?)"
        if OUT_OF_RANGE in report.skipped
        else ""
    )
    return (
        f"{report.src}: {report.num_skipped:,} of {report.lines:,} lines are not valid {what} lines "
        f"({counts}){hint}; nothing was written to {report.dst}: fix the file, or pass --skip-bad "
        f"(skip_bad=True) to import the {report.documents:,} valid lines and skip these"
    )


def _import(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    num_units: int,
    tokenizer: dict[str, Any],
    overwrite: bool,
    parse: Callable[[dict[str, Any], int], _Parsed],
    what: str,
    skip_bad: bool,
) -> ImportReport:
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        state = "is a directory" if src.is_dir() else "does not exist"
        raise SlammingError(f"input file {src} {state}; give the path of a {what} file")
    report = ImportReport(src, dst)
    with CorpusWriter(dst, tokenizer, num_units, overwrite=overwrite) as writer, open(src, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            report.lines += 1
            if not line.strip():
                report.skip(report.src, number, BLANK, "no JSON on this line")
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
                report.skip(report.src, number, BAD_JSON, str(e))
                continue
            try:
                if not isinstance(obj, dict):
                    raise _Skip(NOT_AN_OBJECT, f"a JSON {type(obj).__name__}")
                units, durations, source = parse(obj, num_units)
                if skip_bad or not report.num_skipped:  # refused anyway: stop writing, keep counting
                    writer.add(units, durations=durations, source=source)
            except _Skip as e:
                report.skip(report.src, number, e.kind, e.detail)
                continue
            report.documents += 1
            report.tokens += int(units.size)
        if report.num_skipped and not skip_bad and report.documents:
            raise CorpusError(_refusal(report, what))  # inside the with block: nothing is left behind
        if report.documents == 0:
            kinds = "; ".join(f"{kind}: {n:,}" for kind, n in report.skipped.items()) or "the file is empty"
            first = f"; first: {report.examples[0]}" if report.examples else ""
            # Raised inside the with block, so the writer removes its temporary directory.
            raise CorpusError(
                f"{src} holds no valid {what} line ({report.lines:,} lines; {kinds}{first}); "
                f"nothing was written to {dst}"
            )
    return report


def import_features_jsonl(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    num_units: int,
    tokenizer: dict[str, Any],
    overwrite: bool = False,
    skip_bad: bool = True,
) -> ImportReport:
    """Import a slamkit ``features.jsonl`` (units, durations and file names) into a new corpus.

    Args:
        src: The ``features.jsonl`` file.
        dst: The corpus directory to create.
        num_units: K of the tokeniser; ids outside ``[0, K)`` make a line malformed.
        tokenizer: The tokeniser identity stored in the corpus (e.g. kind, layer, k, frame_rate,
            dedup); its ``frame_rate`` turns durations into hours.
        overwrite: Replace ``dst`` if it is an existing corpus.
        skip_bad: Skip malformed lines and count them in the report; False refuses the whole
            import when a line is malformed (``slamming corpus import-*`` without ``--skip-bad``).

    Returns:
        The report of lines read, documents written and lines skipped.

    Raises:
        SlammingError: ``src`` does not exist.
        CorpusError: ``dst`` exists (and ``overwrite`` is false), no line is valid, or (without
            ``skip_bad``) a line is malformed; nothing is written then.
    """
    return _import(src, dst, num_units, tokenizer, overwrite, _parse_features, "features.jsonl", skip_bad)


def import_tokens_jsonl(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    num_units: int,
    tokenizer: dict[str, Any],
    overwrite: bool = False,
    skip_bad: bool = True,
) -> ImportReport:
    """Import a slamkit ``tokens.jsonl`` (``audio_repr`` strings, no durations) into a new corpus.

    Args:
        src: The ``tokens.jsonl`` file.
        dst: The corpus directory to create.
        num_units: K of the tokeniser; ids outside ``[0, K)`` make a line malformed.
        tokenizer: The tokeniser identity stored in the corpus.
        overwrite: Replace ``dst`` if it is an existing corpus.
        skip_bad: Skip malformed lines and count them in the report; False refuses the whole
            import when a line is malformed (``slamming corpus import-*`` without ``--skip-bad``).

    Returns:
        The report of lines read, documents written and lines skipped.

    Raises:
        SlammingError: ``src`` does not exist.
        CorpusError: ``dst`` exists (and ``overwrite`` is false), no line is valid, or (without
            ``skip_bad``) a line is malformed; nothing is written then.
    """
    return _import(src, dst, num_units, tokenizer, overwrite, _parse_tokens, "tokens.jsonl", skip_bad)


def _export(
    corpus_path: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    overwrite: bool,
    line: Callable[[UnitCorpus, int, str], dict[str, Any]],
) -> int:
    corpus, dst = UnitCorpus(corpus_path), Path(dst)
    if dst.is_dir():
        raise SlammingError(f"{dst} is a directory; give the path of the .jsonl file to write")
    if (dst.exists() or dst.is_symlink()) and not overwrite:
        raise SlammingError(
            f"{dst} already exists; pass overwrite=True (--overwrite on the command line) to replace "
            "it, or choose another path"
        )
    with atomic_path(dst) as tmp:  # a partial export never takes the destination's name
        with open(tmp, "w", encoding="utf-8") as f:
            for i in range(len(corpus)):
                source = corpus.source(i)
                # slamkit needs a string file name; a document without a source gets its index.
                name = (
                    source
                    if isinstance(source, str)
                    else json.dumps(source)
                    if source is not None
                    else str(i)
                )
                # json.dumps defaults (", " and ": ", ASCII escapes) are what slamkit's files use.
                f.write(json.dumps(line(corpus, i, name)) + "\n")
    return len(corpus)


def _features_line(corpus: UnitCorpus, i: int, name: str) -> dict[str, Any]:
    durations = corpus.durations(i)
    assert durations is not None  # checked by export_features_jsonl
    return {"units": corpus.document(i).tolist(), "duration": durations.tolist(), "file_name": name}


def _tokens_line(corpus: UnitCorpus, i: int, name: str) -> dict[str, Any]:
    return {"file_name": name, "audio_repr": "".join(f"<Un{u}>" for u in corpus.document(i).tolist())}


def export_features_jsonl(
    corpus_path: str | os.PathLike[str], dst: str | os.PathLike[str], overwrite: bool = False
) -> int:
    """Write a corpus as a slamkit ``features.jsonl``, in the key order and spacing slamkit writes.

    Importing a valid ``features.jsonl`` and exporting it gives the same bytes. A document's
    ``file_name`` is its source (its index when it has none).

    Args:
        corpus_path: The corpus directory; it must have durations.
        dst: The file to write (atomically).
        overwrite: Replace ``dst`` if it exists.

    Returns:
        The number of lines written.

    Raises:
        CorpusError: The corpus is missing, malformed or has no durations.
        SlammingError: ``dst`` exists and ``overwrite`` is false.
    """
    corpus = UnitCorpus(corpus_path)
    if not corpus.meta.get("has_durations"):
        raise CorpusError(
            f"corpus {corpus.path} has no durations, which features.jsonl needs; use export_tokens_jsonl "
            "(on the command line: `slamming corpus export-tokens`) to write tokens.jsonl instead"
        )
    return _export(corpus_path, dst, overwrite, _features_line)


def export_tokens_jsonl(
    corpus_path: str | os.PathLike[str], dst: str | os.PathLike[str], overwrite: bool = False
) -> int:
    """Write a corpus as a slamkit ``tokens.jsonl`` (``audio_repr`` strings; durations are dropped).

    Args:
        corpus_path: The corpus directory.
        dst: The file to write (atomically).
        overwrite: Replace ``dst`` if it exists.

    Returns:
        The number of lines written.

    Raises:
        CorpusError: The corpus is missing or malformed.
        SlammingError: ``dst`` exists and ``overwrite`` is false.
    """
    return _export(corpus_path, dst, overwrite, _tokens_line)
