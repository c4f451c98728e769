"""Text preference triples for DPO: reading them, making them, and the paper's auto-BLEU filter.

A triple is a prompt, a *chosen* continuation and a *rejected* one. The Slam paper's DPO data is
SpokenSwag: SWAG rows turned into triples (prompt = ``sent1``; chosen = ``sent2`` + the true ending;
rejected = ``sent2`` + a wrong ending), spoken by TTS, with pairs whose auto-BLEU of prompt + chosen
exceeds 0.3 dropped (reference/slam-recipe.md §1.5). This module holds the text side of that:

- :func:`read_swag_csv` reads SWAG's CSV layout; :func:`read_triples_jsonl` reads any
  ``{"prompt", "chosen", "rejected"}`` jsonl. Bad rows are skipped and counted in a
  :class:`TripleReport`, never a traceback.
- :func:`story_triples` makes triples offline from the embedded story generator (true ending vs
  another story's ending, or vs the same ending with a wrong character, object or place), so the
  tiny pipeline needs no download.
- :func:`filter_auto_bleu` is the repetition filter (auto-BLEU, :mod:`slamming.data.text.repetition`); :func:`split_triples` is a
  deterministic train/validation split for file sources.

:mod:`slamming.data.preference.tts` turns the triples into spoken unit triples.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slamming.data.text.reader import content_hash, split_by_hash
from slamming.data.text.repetition import auto_bleu
from slamming.data.text.stories import CONTRADICTIONS, StoryGenerator, contradict_ending, prefix_and_ending
from slamming.errors import SlammingError
from slamming.skips import SkipReport

__all__ = [
    "SWAG_COLUMNS",
    "TextTriple",
    "TripleReport",
    "filter_auto_bleu",
    "read_swag_csv",
    "read_triples_jsonl",
    "split_triples",
    "story_triples",
    "triple_id",
    "triples_hash",
]

#: Columns a SWAG CSV must have; others (``video-id``, ``fold-ind``, ``startphrase``, ...) are ignored.
SWAG_COLUMNS: tuple[str, ...] = ("sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label")
_ENDINGS = ("ending0", "ending1", "ending2", "ending3")
# Everything that is neither a word character nor whitespace; deleted, so "don't" reads "dont".
# How many line numbers a summary lists per reason before it says "and N more".
_SHOWN_LINES = 5
# Stories drawn past the last triple's, from which a contradicted ending takes its new name.
_LOOKAHEAD = 64


@dataclass(frozen=True)
class TextTriple:
    """One text preference triple.

    Attributes:
        prompt: the context both continuations follow.
        chosen: the preferred continuation.
        rejected: the dispreferred continuation.
        id: a stable id (:func:`triple_id` of the three texts), the same on every machine and run.
    """

    prompt: str
    chosen: str
    rejected: str
    id: str


def triple_id(prompt: str, chosen: str, rejected: str) -> str:
    """A stable 16-hex-digit id of a triple: blake2b over the three texts, NUL-separated."""
    data = "\0".join((prompt, chosen, rejected)).encode("utf-8")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _make(prompt: str, chosen: str, rejected: str) -> TextTriple:
    return TextTriple(prompt, chosen, rejected, triple_id(prompt, chosen, rejected))


def triples_hash(triples: Iterable[TextTriple]) -> str:
    """sha256 (hex) over the triples' texts in order, for cache keys; lengths are prefixed so the
    boundaries between texts count."""
    return content_hash(text for t in triples for text in (t.prompt, t.chosen, t.rejected))


@dataclass
class TripleReport(SkipReport):
    """What reading a triple file kept and skipped (a :class:`~slamming.skips.SkipReport`).

    Attributes:
        path: the file read.
        lines: non-blank lines (jsonl) or data rows (CSV) seen.
        triples: triples kept.
        skipped: lines skipped per reason.
        skipped_lines: per reason, the line numbers (1-based, in the file) of the skipped lines.
        unit: what :attr:`lines` counts, ``"lines"`` or ``"rows"``.
    """

    path: str
    lines: int = 0
    triples: int = 0
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)
    unit: str = "lines"

    def skip(self, file: str | os.PathLike[str], line: int, reason: str, detail: str = "") -> None:
        """Count one skipped ``line`` under ``reason`` and remember its number."""
        super().skip(file, line, reason, detail)
        self.skipped_lines.setdefault(reason, []).append(line)

    def summary(self) -> str:
        """One line, e.g. ``x.jsonl: 10 lines, 8 triples, skipped 2 (1 empty side: line 3; ...)``."""
        head = f"{self.path}: {self.lines} {self.unit}, {self.triples} triples, skipped {self.num_skipped}"
        if not self.skipped_lines:
            return head
        parts = []
        for reason, lines in self.skipped_lines.items():
            shown = ", ".join(str(n) for n in lines[:_SHOWN_LINES])
            more = f" and {len(lines) - _SHOWN_LINES} more" if len(lines) > _SHOWN_LINES else ""
            parts.append(f"{len(lines)} {reason}: line{'s' if len(lines) > 1 else ''} {shown}{more}")
        return f"{head} ({'; '.join(parts)})"


def filter_auto_bleu(
    triples: Iterable[TextTriple], max_auto_bleu: float = 0.3
) -> tuple[list[TextTriple], list[TextTriple]]:
    """Drop triples whose ``prompt + " " + chosen`` has auto-BLEU strictly above ``max_auto_bleu``.

    This is SpokenSwag's filter (slamkit's preference data config): a chosen side that repeats
    itself would teach the model to prefer repetition.

    Returns:
        ``(kept, dropped)``, each in input order.
    """
    kept: list[TextTriple] = []
    dropped: list[TextTriple] = []
    for triple in triples:
        score = auto_bleu(triple.prompt + " " + triple.chosen)
        (dropped if score > max_auto_bleu else kept).append(triple)
    return kept, dropped


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise SlammingError(f"{what} {path} does not exist or is not a file; fix the path")


def read_triples_jsonl(
    path: str | Path, prompt_key: str = "prompt", chosen_key: str = "chosen", rejected_key: str = "rejected"
) -> tuple[list[TextTriple], TripleReport]:
    """Read triples from a jsonl file: one JSON object per line with three string values.

    Blank lines are ignored. Malformed JSON, a non-object line, a missing key, a non-string value
    and a side that is empty after stripping whitespace are skipped and counted with their line
    numbers. Texts are stripped of surrounding whitespace.

    Returns:
        ``(triples, report)``.

    Raises:
        SlammingError: the file is missing, or no line holds a usable triple.
    """
    path = Path(path)
    _check_file(path, "the preference file")
    keys = (prompt_key, chosen_key, rejected_key)
    report = TripleReport(str(path))
    triples: list[TextTriple] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            report.lines += 1
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                report.skip(path, number, "not UTF-8")
                continue
            except json.JSONDecodeError:
                report.skip(path, number, "malformed JSON")
                continue
            if not isinstance(row, dict):
                report.skip(path, number, "not a JSON object")
            elif any(key not in row for key in keys):
                report.skip(path, number, "missing key")
            elif any(not isinstance(row[key], str) for key in keys):
                report.skip(path, number, "non-string value")
            elif any(not row[key].strip() for key in keys):
                report.skip(path, number, "empty side")
            else:
                triples.append(_make(*(row[key].strip() for key in keys)))
    report.triples = len(triples)
    if not triples:
        raise SlammingError(
            f"{report.summary()}; no usable triple: each line must be a JSON object with non-empty string "
            f"values under {', '.join(repr(k) for k in keys)} (set prompt_key/chosen_key/rejected_key to rename)"
        )
    return triples, report


def read_swag_csv(
    path: str | Path, seed: int = 0, gold_only: bool = False
) -> tuple[list[TextTriple], TripleReport]:
    """Read SWAG's CSV layout as SpokenSwag triples.

    prompt = ``sent1``; chosen = ``sent2`` + ``" "`` + the labelled ending; rejected = ``sent2`` +
    ``" "`` + one of the wrong endings. Which wrong ending is drawn from ``seed`` and the row's own
    content, so a row gets the same rejected side whatever else the file holds. Rows with a label
    that is not an integer 0-3, an empty ``sent1`` or ending, or no wrong ending that differs from
    the chosen text are skipped and counted.

    Args:
        path: a CSV with at least the :data:`SWAG_COLUMNS` header.
        seed: seed of the wrong-ending choice.
        gold_only: keep only rows whose ``gold-source`` starts with ``"gold"`` (the paper uses SWAG's
            gold rows); needs that column.

    Returns:
        ``(triples, report)``; the report counts data rows and names their line numbers.

    Raises:
        SlammingError: the file is missing, lacks required columns, or yields no usable triple.
    """
    path = Path(path)
    _check_file(path, "the SWAG CSV")
    required = SWAG_COLUMNS + (("gold-source",) if gold_only else ())
    report = TripleReport(str(path), unit="rows")
    triples: list[TextTriple] = []
    # utf-8-sig: a spreadsheet-saved CSV starts with a BOM that would rename the first column.
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in required if column not in (reader.fieldnames or [])]
        if missing:
            raise SlammingError(
                f"{path} lacks the SWAG column(s) {', '.join(missing)}; a SWAG CSV needs a header with "
                f"{', '.join(required)} (the layout of SWAG's train.csv / val.csv)"
            )
        for row in reader:
            report.lines += 1
            line = reader.line_num
            reason, triple = _swag_row(row, seed, gold_only)
            if triple is None:
                report.skip(path, line, reason)
            else:
                triples.append(triple)
    report.triples = len(triples)
    if not triples:
        raise SlammingError(f"{report.summary()}; no usable SWAG row (check the label and ending columns)")
    return triples, report


def _swag_row(row: dict[str, str | None], seed: int, gold_only: bool) -> tuple[str, TextTriple | None]:
    """One SWAG row as a triple, or the reason it is skipped."""
    # A short row gives None for its missing cells; treat them as empty.
    cells = {key: (value or "").strip() for key, value in row.items() if isinstance(key, str)}
    if gold_only and not cells.get("gold-source", "").startswith("gold"):
        return "not gold", None
    try:
        label = int(cells["label"])
    except ValueError:
        return "bad label", None
    if not 0 <= label <= 3:
        return "bad label", None
    endings = [cells[name] for name in _ENDINGS]
    if not cells["sent1"] or not all(endings):
        return "empty sent1 or ending", None

    def continuation(ending: str) -> str:
        # SWAG's sent2 is the start of the next sentence ("The man"); an empty one adds nothing.
        return f"{cells['sent2']} {ending}".strip()

    chosen = continuation(endings[label])
    wrong = [continuation(e) for j, e in enumerate(endings) if j != label]
    wrong = [text for text in wrong if text != chosen]
    if not wrong:
        return "rejected equals chosen", None
    # Seeded by the row's content, not its position, so reordering the file keeps each choice.
    row_key = hashlib.blake2b(
        "\0".join([cells["sent1"], cells["sent2"], *endings, str(label)]).encode()
    ).hexdigest()
    rejected = random.Random(f"{seed}:{row_key}").choice(wrong)
    return "", _make(cells["sent1"], chosen, rejected)


def story_triples(
    n: int, split: str = "train", seed: int = 0, contradictions: float = 0.0, start: int = 0
) -> list[TextTriple]:
    """Triples from the embedded story generator: a story's beginning, its ending, a wrong ending.

    The wrong ending is another story's (the next story of the same split whose ending differs: a
    topic cloze negative) or, for a share ``contradictions`` of the triples spread evenly (triple
    ``i`` is one when ``floor((i + 1) c) > floor(i c)``), the story's own ending with its character,
    object or place swapped for another story's (:func:`~slamming.data.text.stories.contradict_ending`,
    the kind used least so far among those the ending allows: a spoken cloze negative). Either way
    ``story_triples(n)`` is a prefix of ``story_triples(n + m)``. Splits never share a story
    (:func:`slamming.data.text.stories.split_of`), so ``"val"``/``"test"`` triples are held out.
    ``start`` skips the split's first stories: ``start=2000`` gives triples from none of the 2,000
    stories a ``num_train_stories: 2000`` pretraining learnt from (the same seed's train stream).

    Args:
        n: number of triples (``>= 0``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: the story generator's seed.
        contradictions: the share of contradicted endings, in [0, 1].
        start: the split's story the first triple is made from (``>= 0``).

    Returns:
        ``n`` triples in story order, from stories ``start`` to ``start + n - 1``.

    Raises:
        SlammingError: an unknown split, a negative ``n`` or ``start``, or ``contradictions``
            outside [0, 1].
    """
    if n < 0:
        raise SlammingError(f"the number of story triples must be >= 0, got {n}")
    if start < 0:
        raise SlammingError(f"the first story of the triples must be >= 0, got {start}")
    if not 0.0 <= contradictions <= 1.0:
        raise SlammingError(f"data.contradictions is a share in [0, 1], got {contradictions}")
    generator = StoryGenerator(seed)
    pool = generator.stories(start + n + _LOOKAHEAD, split) if n else []
    used = dict.fromkeys(CONTRADICTIONS, 0)
    triples = []
    for i in range(start, start + n):
        beginning, ending = prefix_and_ending(pool[i])
        rejected = None
        if math.floor((i - start + 1) * contradictions) > math.floor((i - start) * contradictions):
            # The pool reaches _LOOKAHEAD stories past the last triple, so the candidates looked at
            # (never wrapping round in practice) do not depend on n.
            endings = {kind: contradict_ending(pool[i], kind, pool, i) for kind in CONTRADICTIONS}
            fits = [kind for kind in CONTRADICTIONS if endings[kind] is not None]
            if fits:
                kind = min(fits, key=lambda k: (used[k], CONTRADICTIONS.index(k)))
                used[kind] += 1
                rejected = endings[kind]
        j = i + 1
        while rejected is None:
            if j >= len(pool):
                pool = generator.stories(len(pool) + 16, split)
            other = prefix_and_ending(pool[j])[1]
            if other != ending:
                rejected = other
            j += 1
        triples.append(_make(" ".join(beginning), ending, rejected))
    return triples


def split_triples(
    triples: Sequence[TextTriple], val_fraction: float, seed: int = 0
) -> tuple[list[TextTriple], list[TextTriple]]:
    """Split triples into train and validation by a seeded hash of the prompt.

    A triple goes to validation iff ``blake2b(seed, prompt)``, read as a number in [0, 1), is below
    ``val_fraction``; triples sharing a prompt therefore share a split, and adding other triples never
    moves one.

    Returns:
        ``(train, val)``, each in input order.

    Raises:
        SlammingError: ``val_fraction`` outside [0, 1) or a negative seed.
    """
    return split_by_hash(triples, lambda triple: triple.prompt, val_fraction, seed)
