"""Reading a user's text corpus for speech synthesis: plain lines, jsonl, or TinyStories-style files.

:class:`~slamming.data.pretrain.synthetic.SyntheticSpeechDataModule` speaks these texts instead of its
generated stories. Three layouts are understood:

- ``lines``: one utterance per non-empty line.
- ``jsonl``: one JSON object per line; the text is under a chosen key (``"text"`` by default).
- ``tinystories``: stories separated by ``<|endoftext|>`` (the layout of the TinyStories ``.txt``
  dumps, the text behind the Slam paper's sTinyStories); a story's lines are joined.

Whitespace inside every text is collapsed to single spaces. Bad input never stops the read: a line
that is not UTF-8, a malformed jsonl line or an empty text is skipped and counted in a
:class:`TextReport` with ``file:line`` examples. A text longer than ``max_chars`` is cut at sentence
ends so no single utterance is too long for the TTS engine.

The corpus is identified by its content (:attr:`TextCorpus.content_hash`), not by file names, so a
renamed file reuses a cached build and an edited line triggers a new one. :func:`split_texts` picks
the validation texts by a hash of each text, so adding texts later never moves existing ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from slamming.errors import SlammingError
from slamming.skips import SkipReport

T = TypeVar("T")

__all__ = [
    "ENDOFTEXT",
    "FORMATS",
    "TextCorpus",
    "TextReport",
    "detect_format",
    "read_texts",
    "split_long_text",
    "split_texts",
    "text_id",
]

#: The story separator of TinyStories-style files.
ENDOFTEXT = "<|endoftext|>"
#: Accepted values of ``format``.
FORMATS: tuple[str, ...] = ("auto", "lines", "jsonl", "tinystories")
#: How many ``file:line`` problem examples a report keeps.
MAX_EXAMPLES = 10

TextFormat = Literal["auto", "lines", "jsonl", "tinystories"]

# A sentence ends at ., ! or ? (optionally followed by one closing quote or bracket) before whitespace.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")


@dataclass
class TextReport(SkipReport):
    """What :func:`read_texts` read, kept and skipped (a :class:`~slamming.skips.SkipReport`).

    Attributes:
        files: Each input file with the format it was read as.
        lines: Lines read, all files together.
        texts: Texts kept (after splitting long ones).
        split: Texts longer than ``max_chars`` that were cut into several.
        skipped: Skipped lines or texts per problem kind (``invalid_utf8``, ``invalid_json``,
            ``not_an_object``, ``missing_field``, ``not_a_string``, ``empty``, ``too_short``).
        examples: The first :data:`MAX_EXAMPLES` problems as ``"file:line: kind: detail"``.
    """

    max_examples: ClassVar[int] = MAX_EXAMPLES

    files: dict[str, str] = field(default_factory=dict)
    lines: int = 0
    texts: int = 0
    split: int = 0

    def summary(self) -> str:
        """One line: files, lines, texts kept, texts split and problems per kind."""
        files = ", ".join(f"{path} ({fmt})" for path, fmt in self.files.items())
        return (
            f"read {self.texts:,} texts from {self.lines:,} lines of {files}; "
            f"{self.split:,} long texts split; {super().summary()}"
        )


@dataclass(frozen=True)
class TextCorpus:
    """The texts of a user corpus, in file order, with a report and a content hash.

    Attributes:
        texts: Whitespace-normalised texts, each between ``min_chars`` and ``max_chars`` long.
        report: What was read and skipped.
        content_hash: sha256 (hex) over :attr:`texts` in order; independent of file names.
    """

    texts: list[str]
    report: TextReport
    content_hash: str


def text_id(text: str) -> str:
    """A stable 16-hex-digit id of a text (blake2b), the same on every machine and run."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def content_hash(texts: Iterable[str]) -> str:
    """sha256 (hex) over ``texts`` in order; each text is length-prefixed so boundaries count."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def detect_format(path: str | Path) -> str:
    """The layout of a text file: ``jsonl`` by extension, ``tinystories`` if it holds the separator.

    Args:
        path: an existing file.

    Returns:
        ``"jsonl"`` for a ``.jsonl`` file, ``"tinystories"`` for a file containing
        :data:`ENDOFTEXT`, else ``"lines"``.
    """
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return "jsonl"
    marker = ENDOFTEXT.encode()
    with path.open("rb") as handle:
        for line in handle:
            if marker in line:
                return "tinystories"
    return "lines"


def split_long_text(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars`` characters, preferring sentence ends.

    Sentences are packed greedily into pieces. A sentence longer than ``max_chars`` is cut between
    words, and a word longer than ``max_chars`` is cut where the limit falls.

    Args:
        text: whitespace-normalised text.
        max_chars: the longest piece allowed (>= 1).

    Returns:
        The pieces in order; ``[text]`` when it already fits.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if len(text) <= max_chars:
        return [text]
    parts: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        parts.extend(
            _split_words(sentence.strip(), max_chars) if len(sentence) > max_chars else [sentence.strip()]
        )
    pieces: list[str] = []
    current = ""
    for part in parts:
        if not part:
            continue
        if current and len(current) + 1 + len(part) <= max_chars:
            current = f"{current} {part}"
        else:
            if current:
                pieces.append(current)
            current = part
    if current:
        pieces.append(current)
    return pieces


def _split_words(sentence: str, max_chars: int) -> list[str]:
    """Words of an over-long sentence, with over-long words cut into ``max_chars`` chunks."""
    words: list[str] = []
    for word in sentence.split(" "):
        words.extend(word[i : i + max_chars] for i in range(0, len(word), max_chars))
    return words


def split_texts(texts: list[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split texts into train and validation by a seeded hash of each text.

    A text goes to validation iff ``blake2b(seed, text)``, read as a number in [0, 1), is below
    ``val_fraction``. Its split therefore depends only on the text, the seed and the fraction:
    adding or removing other texts never moves it, and copies of a text share one split.

    Args:
        texts: the texts, in corpus order.
        val_fraction: expected share of validation texts, in [0, 1).
        seed: a non-negative integer; another seed draws another split.

    Returns:
        ``(train, val)``, each in corpus order.
    """
    return split_by_hash(texts, lambda text: text, val_fraction, seed)


def split_by_hash(
    items: Iterable[T], key: Callable[[T], str], val_fraction: float, seed: int = 0
) -> tuple[list[T], list[T]]:
    """Split items into train and validation by a seeded hash of ``key(item)``.

    An item goes to validation iff ``blake2b(seed, key(item))``, read as a number in [0, 1), is below
    ``val_fraction`` (see :func:`split_texts`); items sharing a key share a split.

    Raises:
        SlammingError: ``val_fraction`` outside [0, 1) or a negative seed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SlammingError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if seed < 0:
        raise SlammingError(f"the split seed must be a non-negative integer, got {seed}")
    prefix = f"{int(seed)}\0".encode()
    train: list[T] = []
    val: list[T] = []
    for item in items:
        digest = hashlib.blake2b(prefix + key(item).encode("utf-8"), digest_size=8).digest()
        (val if int.from_bytes(digest, "big") / 2**64 < val_fraction else train).append(item)
    return train, val


def _decoded_lines(path: Path, report: TextReport) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line that decodes as UTF-8; the others are counted."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            report.lines += 1
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                report.skip(path, number, "invalid_utf8", f"byte {err.start} is not UTF-8")


def _lines_texts(path: Path, report: TextReport) -> Iterator[tuple[Path, int, str]]:
    for number, line in _decoded_lines(path, report):
        if line.strip():
            yield path, number, line


def _jsonl_texts(path: Path, key: str, report: TextReport) -> Iterator[tuple[Path, int, str]]:
    for number, line in _decoded_lines(path, report):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            report.skip(path, number, "invalid_json", err.msg)
            continue
        if not isinstance(row, dict):
            report.skip(path, number, "not_an_object", f"a JSON {type(row).__name__}, expected an object")
        elif key not in row:
            report.skip(path, number, "missing_field", f"no {key!r} key (keys: {', '.join(sorted(row)[:5])})")
        elif not isinstance(row[key], str):
            report.skip(path, number, "not_a_string", f"{key!r} is a JSON {type(row[key]).__name__}")
        else:
            yield path, number, row[key]


def _tinystories_texts(path: Path, report: TextReport) -> Iterator[tuple[Path, int, str]]:
    story: list[str] = []
    start = 1
    opened = False  # a separator before the first story does not close an (empty) story
    for number, line in _decoded_lines(path, report):
        for i, part in enumerate(line.split(ENDOFTEXT)):
            if i > 0 and opened:  # a separator ends the story gathered so far (an empty one is counted)
                yield path, start if story else number, " ".join(story)
                story = []
            if part.strip():
                if not story:
                    start = number
                story.append(part)
                opened = True
    if story:
        yield path, start, " ".join(story)


def read_texts(
    paths: list[str],
    format: TextFormat = "auto",
    field: str = "text",
    min_chars: int = 1,
    max_chars: int = 2000,
) -> TextCorpus:
    """Read, clean and fingerprint the texts of one or more files.

    Args:
        paths: text files, read in this order.
        format: ``"lines"``, ``"jsonl"``, ``"tinystories"``, or ``"auto"`` to decide per file
            (see :func:`detect_format`).
        field: the key that holds the text in jsonl objects.
        min_chars: texts shorter than this (after whitespace normalisation) are skipped and counted.
        max_chars: texts longer than this are split at sentence ends (:func:`split_long_text`).

    Returns:
        The :class:`TextCorpus`.

    Raises:
        SlammingError: no paths, a missing path or a directory, an unknown format, bad limits, or no
            usable text at all (the message holds the report).
    """
    if format not in FORMATS:
        raise SlammingError(f"unknown text format {format!r}; use one of {', '.join(FORMATS)}")
    if min_chars < 1 or max_chars < min_chars:
        raise SlammingError(
            f"need 1 <= min_chars <= max_chars, got min_chars={min_chars}, max_chars={max_chars}"
        )
    if not paths:
        raise SlammingError("no text files given: list at least one in data.text_files")
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise SlammingError(f"text file {name} does not exist; fix the path in data.text_files")
        if not path.is_file():
            raise SlammingError(
                f"text file {name} is not a file; list the files themselves in data.text_files"
            )
    report = TextReport()
    texts: list[str] = []
    for name in paths:
        path = Path(name)
        kind = detect_format(path) if format == "auto" else format
        report.files[name] = kind
        if kind == "jsonl":
            found = _jsonl_texts(path, field, report)
        elif kind == "tinystories":
            found = _tinystories_texts(path, report)
        else:
            found = _lines_texts(path, report)
        for source, number, raw in found:
            text = " ".join(raw.split())
            if not text:
                report.skip(source, number, "empty", "no text")
            elif len(text) < min_chars:
                report.skip(source, number, "too_short", f"{len(text)} characters < min_chars={min_chars}")
            else:
                pieces = split_long_text(text, max_chars)
                report.split += int(len(pieces) > 1)
                texts.extend(pieces)
    report.texts = len(texts)
    if not texts:
        raise SlammingError(f"no usable text in {', '.join(paths)}: {report.summary()}")
    return TextCorpus(texts=texts, report=report, content_hash=content_hash(texts))
