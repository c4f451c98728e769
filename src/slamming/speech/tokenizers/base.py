"""What every unit tokeniser shares: its folder format, run-length dedup, identity checks, loading.

A saved tokeniser is a folder with ``tokenizer.json`` (format version, kind, settings, identity) and
``kmeans.safetensors`` (the centroids); :func:`load_tokenizer` opens one of any kind.

Every unit stream carries the tokeniser's identity. Corpora and checkpoints store it, and
:func:`check_identity` refuses to mix units from different tokenisers, because unit 42 of one
k-means means nothing to a model trained on another. Units whose tokeniser nobody named (the
authors' files imported without ``--tokenizer``) carry
:func:`~slamming.speech.tokenizers.identity.unknown_identity`, which
:func:`check_identity` never mixes with a known one. :class:`UnitTokenizer` is what the data
modules, stages and callbacks use of a tokeniser.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from slamming.errors import SlammingError, TokenizerMismatchError
from slamming.speech.kmeans import KMeans
from slamming.speech.tokenizers.identity import is_unknown

if TYPE_CHECKING:
    from slamming.speech.tokenizers.hubert import HubertTokenizer
    from slamming.speech.tokenizers.mfcc import MFCCTokenizer
    from slamming.speech.tokenizers.phone import PhoneTokenizer

CONFIG_FILE = "tokenizer.json"
KMEANS_FILE = "kmeans.safetensors"
FORMAT_VERSION = 1


@runtime_checkable
class UnitTokenizer(Protocol):
    """Speech → deduplicated units: what the rest of slamming uses of a tokeniser of any kind."""

    kind: str

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that decides which unit a sound gets (kind, k, frame rate, dedup, hashes)."""
        ...

    def encode(self, wav: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One 16 kHz mono waveform → (units, run lengths in frames)."""
        ...

    def encode_batch(self, wavs: Sequence[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several waveforms at once; each result equals :meth:`encode` of that waveform alone."""
        ...

    def save(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the tokeniser folder."""
        ...


def unit_spans(tokenizer: object) -> np.ndarray | None:
    """``(k,)`` how many units of its recognition each of ``tokenizer``'s units stands for, where it
    merges units (a phone tokeniser with byte-pair merges); None where every unit is one."""
    spans = getattr(tokenizer, "unit_spans", None)
    return None if spans is None else spans()


def dedup(
    units: Sequence[int] | np.ndarray, weights: Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Collapse runs of equal consecutive units.

    Args:
        units: 1-D unit sequence.
        weights: optional per-unit durations (e.g. segment lengths in frames); a run's duration is
            the sum of its weights. Without weights every unit counts 1, giving plain run lengths.

    Returns:
        ``(units, durations)``: the first unit of every run (same dtype as the input) and the int64
        duration of every run. ``durations.sum()`` equals ``weights.sum()`` (or ``len(units)``).

    Example:
        ``dedup([5, 5, 2, 2, 2, 5])`` gives ``([5, 2, 5], [2, 3, 1])``.
    """
    array = np.asarray(units)
    if array.ndim != 1:
        raise ValueError(f"units must be 1-D, got shape {array.shape}")
    counts = np.ones(len(array), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    if counts.shape != array.shape:
        raise ValueError(f"weights shape {counts.shape} does not match units shape {array.shape}")
    if len(array) == 0:
        return array.copy(), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], array[1:] != array[:-1]]))
    return array[starts], np.add.reduceat(counts, starts)


def write_config(
    directory: str | os.PathLike[str],
    kind: str,
    settings: dict[str, Any],
    identity: dict[str, Any],
    overwrite: bool = False,
    before: Callable[[Path], None] | None = None,
) -> Path:
    """Write a tokeniser folder's ``tokenizer.json`` (format, kind, settings, identity).

    ``before(directory)`` writes the kind's weights first (centroids, a recogniser), so a folder with
    a ``tokenizer.json`` always has them. One loader (:func:`load_tokenizer`) reads every kind.

    Raises:
        SlammingError: the directory already holds a tokeniser and ``overwrite`` is False.
    """
    directory = Path(directory)
    config = directory / CONFIG_FILE
    if config.exists() and not overwrite:
        raise SlammingError(f"{config} already exists; pass overwrite=True or choose another directory")
    directory.mkdir(parents=True, exist_ok=True)
    if before is not None:
        before(directory)
    payload = {"format_version": FORMAT_VERSION, "kind": kind, "settings": settings, "identity": identity}
    config.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return directory


def save_tokenizer_files(
    directory: str | os.PathLike[str],
    kind: str,
    settings: dict[str, Any],
    identity: dict[str, Any],
    kmeans: KMeans,
    overwrite: bool = False,
) -> Path:
    """Write a k-means tokeniser's folder: ``tokenizer.json`` + ``kmeans.safetensors`` (the centroids).

    Raises:
        SlammingError: the directory already holds a tokeniser and ``overwrite`` is False.
    """
    return write_config(
        directory,
        kind,
        settings,
        identity,
        overwrite,
        before=lambda folder: kmeans.save(folder / KMEANS_FILE, metadata={"kind": kind}),
    )


def check_identity(expected: Mapping[str, Any], actual: Mapping[str, Any], what: str) -> None:
    """Raise if two tokeniser identities differ.

    An unknown identity (:func:`~slamming.speech.tokenizers.identity.unknown_identity`) against a
    known one is refused with its own message: the units may or may not match, and nothing can tell.

    Args:
        expected: the identity the consumer was built for (a model's or a corpus's).
        actual: the identity of the units offered to it.
        what: what is being checked, for the message (e.g. ``"corpus data/units vs model"``).

    Raises:
        TokenizerMismatchError: one line naming every differing key with both values, or saying
            which side's tokeniser is unknown.
    """
    if is_unknown(expected) != is_unknown(actual):
        side, known = ("expected", actual) if is_unknown(expected) else ("got", expected)
        raise TokenizerMismatchError(
            f"{what}: tokeniser unknown on one side ({side} units of an unknown tokeniser, e.g. a corpus "
            f"imported without --tokenizer; the other side's is kind {known.get('kind')!r}, "
            f"k={known.get('k')!r}), so the units cannot be shown to match and are not mixed; import the "
            "corpus again with `slamming corpus import-... --tokenizer FOLDER` naming the tokeniser "
            "that made its units, or use data and model that both record it"
        )
    missing = object()

    def show(value: Any) -> str:
        return "<missing>" if value is missing else repr(value)

    differences = [
        f"{key}: expected {show(expected.get(key, missing))}, got {show(actual.get(key, missing))}"
        for key in sorted(set(expected) | set(actual))
        if expected.get(key, missing) != actual.get(key, missing)
    ]
    if differences:
        raise TokenizerMismatchError(
            f"{what}: tokeniser mismatch ({'; '.join(differences)}); re-tokenise the audio with the "
            "expected tokeniser, or use the corpus/model made with the same one"
        )


def read_config(directory: Path) -> dict[str, Any]:
    """The parsed ``tokenizer.json`` of a saved tokeniser."""
    config = directory / CONFIG_FILE
    if not config.is_file():
        raise SlammingError(
            f"no tokeniser at {directory}: {config} does not exist; fit and save one first or fix the path"
        )
    try:
        payload = json.loads(config.read_text(encoding="utf-8"))
        if not isinstance(payload, dict) or "kind" not in payload:
            raise ValueError("no 'kind' field")
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError) as err:
        raise SlammingError(
            f"{config} is not a valid tokenizer.json ({err}); save the tokeniser again"
        ) from err
    return payload


def recorded_identity(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The identity a saved tokeniser folder records in its ``tokenizer.json``.

    Raises:
        SlammingError: no tokeniser there, or its ``tokenizer.json`` records no identity.
    """
    directory = Path(directory)
    identity = read_config(directory).get("identity")
    if not isinstance(identity, dict) or not identity:
        raise SlammingError(
            f"{directory / CONFIG_FILE} records no tokeniser identity; save the tokeniser again with "
            "this slamming (`slamming tokenizer fit` or `from-kmeans`)"
        )
    return identity


def load_tokenizer(
    directory: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> MFCCTokenizer | HubertTokenizer | PhoneTokenizer:
    """Load a saved tokeniser of any kind (``"mfcc"``, ``"hubert"`` or ``"phone"``), by its
    ``tokenizer.json``.

    Raises:
        SlammingError: no tokeniser there, or an unknown kind.
    """
    from slamming.speech.tokenizers.hubert import HubertTokenizer
    from slamming.speech.tokenizers.mfcc import MFCCTokenizer
    from slamming.speech.tokenizers.phone import PhoneTokenizer

    directory = Path(directory)
    kind = read_config(directory)["kind"]
    if kind == MFCCTokenizer.kind:
        return MFCCTokenizer.load(directory, device=device)
    if kind == HubertTokenizer.kind:
        return HubertTokenizer.load(directory, device=device)
    if kind == PhoneTokenizer.kind:
        return PhoneTokenizer.load(directory, device=device)
    raise SlammingError(
        f"{directory / CONFIG_FILE} has tokeniser kind {kind!r}; this version knows 'mfcc', 'hubert' and 'phone'"
    )
