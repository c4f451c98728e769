"""Readers of the published pair-benchmark layouts: each gives (positive, negative) audio pairs.

Pairs always come from metadata (a ``gold.csv``, a manifest, the ``_correct``/``_incorrect`` or
``_0``/``_1`` name suffixes), never from the order of file names: slamkit pairs file 2k with file
2k+1 after a sort, which silently mis-pairs data that was not renamed for it.

Accepted layouts (``kind`` in a benchmark spec, see :func:`load_benchmarks`):

- ``zerospeech-lexical`` (sWUGGY) and ``zerospeech-syntactic`` (sBLIMP), the ZeroSpeech 2021 layout:
  ``<root>/lexical/{dev,test}/*.wav`` + ``gold.csv`` with the columns ``id, filename, voice,
  frequency, word, phones, length, correct``, and ``<root>/syntactic/{dev,test}/*.wav`` +
  ``gold.csv`` with ``filename, id, voice, type, subtype, transcription, correct``. ``path`` may also
  be the split folder itself (the one holding ``gold.csv``). A pair is a ``correct`` 1 row (the word
  or grammatical sentence: positive) and a ``correct`` 0 row with the same ``id`` and ``voice``
  (every combination when an (id, voice) has several of either, as the ZeroSpeech toolkit's merge
  does). ``filename`` may carry ``.wav`` or not. sWUGGY pairs are grouped ``oov`` when the word's
  ``frequency`` is ``oov`` or 0, else ``in-vocabulary``; sBLIMP pairs by ``type``.
- ``storycloze`` (sSC, tSC): a folder (searched recursively) of ``<base>_correct.wav`` (positive)
  and ``<base>_incorrect.wav`` (negative), paired by ``<base>`` (its path relative to the folder),
  the SIMS layout the authors' configs name. Other files (``<base>_mutual.wav``, ``.txt``) are
  ignored.
- ``salmon``: ``<root>/<part>/sample_{i}_{0|1}.wav``, 0 the positive (consistent) sample; one
  benchmark per part, ``parts`` naming which (default: every part folder).
- ``manifest``: a ``.jsonl`` (one object a line) or ``.csv`` (with a header) with ``positive`` and
  ``negative`` audio paths (relative to the manifest's folder unless absolute) and optional ``id``,
  ``voice``, ``group`` and ``prefix``: audio heard before either side (a story's shared beginning,
  whose two endings are then the sides), tokenised apart and put in front of both sides' units.

Incomplete pairs (a ``gold.csv`` id/voice with only one side, a ``_correct`` without its
``_incorrect``, a SALMon sample with one option) are skipped and counted in
:attr:`PairBenchmark.skipped`. A pair whose metadata names an audio file that does not exist is an
error naming the file: a half-copied benchmark must not give a number.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slamming.errors import SlammingError

__all__ = ["KINDS", "Pair", "PairBenchmark", "load_benchmarks"]

ZEROSPEECH_SOURCE = "the 2021 dataset of https://download.zerospeech.com"
_ZEROSPEECH_COLUMNS = {
    "lexical": ("id", "filename", "voice", "frequency", "correct"),
    "syntactic": ("id", "filename", "voice", "type", "correct"),
}
_SALMON_FILE = re.compile(r"^sample_(\d+)_([01])\.wav$")
_STORY_SUFFIXES = {"_correct.wav": "positive", "_incorrect.wav": "negative"}


@dataclass(frozen=True)
class Pair:
    """One positive/negative pair.

    Attributes:
        positive: The audio the model should find more likely.
        negative: The other one.
        id: The item the pair belongs to (ZeroSpeech ``id``, story base name, SALMon index).
        voice: The speaker (ZeroSpeech ``voice``), or "".
        group: The reporting group (sBLIMP ``type``, sWUGGY ``oov``/``in-vocabulary``), or "".
        prefix: Audio both sides continue (their units follow its units), or None.
    """

    positive: Path
    negative: Path
    id: str
    voice: str = ""
    group: str = ""
    prefix: Path | None = None


@dataclass
class PairBenchmark:
    """The pairs of one benchmark and where they came from.

    Attributes:
        name: The name results and metrics are reported under.
        kind: One of :data:`KINDS`.
        path: The folder or manifest read.
        pairs: The pairs, in metadata order.
        skipped: Incomplete pairs left out, counted by reason.
    """

    name: str
    kind: str
    path: Path
    pairs: list[Pair]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def zerospeech(self) -> bool:
        """Whether ZeroSpeech's aggregation (voices per id, then ids) applies."""
        return self.kind.startswith("zerospeech-")


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise SlammingError(f"{where} names {path}, which does not exist; copy the benchmark completely")
    return path


def _read_zerospeech(root: Path, task: str, split: str, name: str) -> PairBenchmark:
    folder = root if (root / "gold.csv").is_file() else root / task / split
    gold = folder / "gold.csv"
    if not gold.is_file():
        raise SlammingError(
            f"{root}: no {task}/{split}/gold.csv; expected the ZeroSpeech 2021 layout "
            f"{task}/{{dev,test}}/*.wav + gold.csv ({ZEROSPEECH_SOURCE})"
        )
    with gold.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in _ZEROSPEECH_COLUMNS[task] if c not in columns]
        if missing:
            raise SlammingError(
                f"{gold} lacks the column(s) {', '.join(missing)}; a ZeroSpeech 2021 {task} gold.csv has "
                f"{', '.join(_ZEROSPEECH_COLUMNS[task])}, ..."
            )
        rows = [
            ({k.strip(): (v or "").strip() for k, v in row.items() if k}, n)
            for n, row in enumerate(reader, 2)
        ]
    groups: dict[tuple[str, str], tuple[list[dict[str, str]], list[dict[str, str]]]] = {}
    for row, line in rows:
        if row["correct"] not in ("0", "1"):
            raise SlammingError(f"{gold} line {line}: correct must be 0 or 1, got {row['correct']!r}")
        stem = row["filename"].removesuffix(".wav")
        row["path"] = str(_existing(folder / f"{stem}.wav", f"{gold} line {line}"))
        sides = groups.setdefault((row["id"], row["voice"]), ([], []))
        sides[0 if row["correct"] == "1" else 1].append(row)
    pairs, unpaired = [], 0
    for (item, voice), (positives, negatives) in groups.items():
        if not positives or not negatives:
            unpaired += len(positives) + len(negatives)
            continue
        label = _zerospeech_group(task, positives[0], negatives[0])
        pairs += [
            Pair(Path(p["path"]), Path(n["path"]), item, voice, label) for p in positives for n in negatives
        ]
    skipped = {"rows without the other side of their pair": unpaired} if unpaired else {}
    return PairBenchmark(name, f"zerospeech-{task}", folder, pairs, skipped)


def _zerospeech_group(task: str, positive: dict[str, str], negative: dict[str, str]) -> str:
    if task == "syntactic":
        return positive["type"]
    # The word row carries the frequency band; a non-word row may leave it empty.
    frequency = (positive["frequency"] or negative["frequency"]).lower()
    try:
        oov = frequency == "oov" or float(frequency) == 0
    except ValueError:
        oov = False
    return "oov" if oov else "in-vocabulary"


def _read_storycloze(folder: Path, name: str) -> PairBenchmark:
    layout = "<base>_correct.wav / <base>_incorrect.wav pairs (the SpokenStoryCloze/SIMS layout)"
    if not folder.is_dir():
        raise SlammingError(f"{folder} is not a folder; expected a folder of {layout}")
    sides: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.rglob("*.wav")):
        for suffix, side in _STORY_SUFFIXES.items():
            if path.name.endswith(suffix):
                base = str(path.relative_to(folder))[: -len(suffix)]
                sides.setdefault(base, {})[side] = path
    pairs = [Pair(s["positive"], s["negative"], base) for base, s in sides.items() if len(s) == 2]
    if not pairs:
        raise SlammingError(f"{folder}: no story pairs found; expected a folder of {layout}")
    unpaired = len(sides) - len(pairs)
    return PairBenchmark(
        name, "storycloze", folder, pairs, {"files without their pair": unpaired} if unpaired else {}
    )


def _read_salmon(root: Path, parts: Iterable[str] | str | None, name: str) -> list[PairBenchmark]:
    layout = "the SALMon layout <root>/<part>/sample_{i}_{0|1}.wav (https://github.com/slp-rl/salmon)"
    found = (
        sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and any(_SALMON_FILE.match(f.name) for f in p.iterdir())
        )
        if root.is_dir()
        else []
    )
    if not found:
        raise SlammingError(f"{root}: no part folders with sample_<i>_<0|1>.wav files; expected {layout}")
    wanted = found if parts in (None, "all", ["all"]) else [parts] if isinstance(parts, str) else list(parts)
    unknown = [p for p in wanted if p not in found]
    if unknown:
        raise SlammingError(f"{root} has no SALMon part {', '.join(unknown)}; it has {', '.join(found)}")
    benchmarks = []
    for part in wanted:
        samples: dict[int, dict[str, Path]] = {}
        for path in (root / part).iterdir():
            match = _SALMON_FILE.match(path.name)
            if match:
                samples.setdefault(int(match.group(1)), {})[match.group(2)] = path
        pairs = [Pair(s["0"], s["1"], str(i)) for i, s in sorted(samples.items()) if len(s) == 2]
        unpaired = len(samples) - len(pairs)
        skipped = {"samples without both options": unpaired} if unpaired else {}
        benchmarks.append(PairBenchmark(f"{name}/{part}", "salmon", root / part, pairs, skipped))
    return benchmarks


def _manifest_rows(path: Path) -> list[tuple[dict[str, Any], int]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [(dict(row), line) for line, row in enumerate(csv.DictReader(handle), 2)]
    rows = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise SlammingError(
                f"{path} line {line} is not valid JSON ({err.msg}); fix or remove it"
            ) from None
        if not isinstance(row, dict):
            raise SlammingError(f"{path} line {line} is not a JSON object; write one object a line")
        rows.append((row, line))
    return rows


def _read_manifest(path: Path, name: str) -> PairBenchmark:
    expected = (
        "a .jsonl or .csv manifest with positive and negative audio paths (optional id, voice, group, prefix)"
    )
    if not path.is_file() or path.suffix not in (".jsonl", ".csv"):
        raise SlammingError(f"{path} is not a file ending .jsonl or .csv; expected {expected}")
    pairs = []
    for row, line in _manifest_rows(path):
        where = f"{path} line {line}"
        if not row.get("positive") or not row.get("negative"):
            raise SlammingError(f"{where} lacks positive or negative; expected {expected}")
        pos, neg = (path.parent / str(row[key]) for key in ("positive", "negative"))
        prefix = _existing(path.parent / str(row["prefix"]), where) if row.get("prefix") else None
        pairs.append(
            Pair(
                _existing(pos, where),
                _existing(neg, where),
                str(row.get("id") or line),
                str(row.get("voice") or ""),
                str(row.get("group") or ""),
                prefix,
            )
        )
    if not pairs:
        raise SlammingError(f"{path} holds no pairs; expected {expected}")
    return PairBenchmark(name, "manifest", path, pairs)


KINDS = ("zerospeech-lexical", "zerospeech-syntactic", "storycloze", "salmon", "manifest")
_DEFAULT_NAMES = {"zerospeech-lexical": "sWUGGY", "zerospeech-syntactic": "sBLIMP", "salmon": "SALMon"}
_SPEC_KEYS = {"kind", "path", "name", "split", "parts"}


def load_benchmarks(spec: Mapping[str, Any]) -> list[PairBenchmark]:
    """Read the benchmark(s) one spec describes.

    Args:
        spec: ``kind`` (one of :data:`KINDS`), ``path`` (the folder or manifest), optional ``name``
            (default: sWUGGY, sBLIMP, SALMon, or the folder/manifest name), ``split`` (ZeroSpeech:
            ``dev`` by default, or ``test``) and ``parts`` (SALMon: a part name, a list, or ``all``).

    Returns:
        One benchmark, or one per SALMon part (named ``<name>/<part>``).

    Raises:
        SlammingError: an unknown kind or key, a folder in another layout, a malformed metadata file,
            or a pair naming an audio file that does not exist.
    """
    unknown = sorted(set(spec) - _SPEC_KEYS)
    kind = spec.get("kind")
    if unknown or kind not in KINDS or not spec.get("path"):
        problem = f"unknown key(s) {', '.join(unknown)}" if unknown else f"kind {kind!r}"
        if not unknown and kind in KINDS:
            problem = "no path"
        raise SlammingError(
            f"benchmark {dict(spec)}: {problem}; a benchmark is {{kind: {'|'.join(KINDS)}, path: ..., "
            "name: optional, split: dev|test (ZeroSpeech), parts: all|[...] (SALMon)}"
        )
    path = Path(spec["path"]).expanduser()
    name = str(spec.get("name") or _DEFAULT_NAMES.get(kind) or path.stem)
    try:
        if kind in ("zerospeech-lexical", "zerospeech-syntactic"):
            split = str(spec.get("split") or "dev")
            return [_read_zerospeech(path, kind.removeprefix("zerospeech-"), split, name)]
        if kind == "storycloze":
            return [_read_storycloze(path, name)]
        if kind == "salmon":
            return _read_salmon(path, spec.get("parts"), name)
        return [_read_manifest(path, name)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise SlammingError(
            f"benchmark {name} ({path}): a metadata file is not UTF-8 CSV/JSON text ({err})"
        ) from None
