"""``PromptDataModule``: the prompts that ``slamming predict`` continues with a unit LM.

``prompts`` is one of:

- **audio**: a folder of ``.wav``/``.flac``/``.ogg`` files, or a ``.tsv``/``.jsonl`` audio manifest
  (:mod:`slamming.data.audio.manifest`). Each file is read mono at ``sample_rate`` and cut to its first
  ``prompt_seconds`` (3 s, as slamkit does); the generation module tokenises it with the model's own
  tokeniser.
- **units**: a unit corpus folder (``meta.json``; its tokeniser identity is checked against the
  model's), each document cut to the units that fit in ``prompt_seconds`` when the corpus has
  durations; or a ``.jsonl`` whose lines are ``{"id": "...", "units": [3, 17, ...]}`` (raw units
  ``0..K-1``, used whole).

A ``.jsonl`` is told apart by its first line: ``units`` makes it a unit file, ``path`` an audio
manifest. Items carry their position in the prompt list (``index``), from which each prompt's sampling
seed is derived, so results do not depend on batching or on the number of devices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader, Dataset

from slamming.data.audio.manifest import jsonl_rows, read_manifest
from slamming.data.corpus.format import UnitCorpus
from slamming.errors import SlammingError
from slamming.speech.audio import read_audio

__all__ = ["PromptDataModule", "read_unit_prompts"]

Prompt = dict[str, Any]


def read_unit_prompts(path: Path) -> list[tuple[str, np.ndarray]]:
    """``(id, units)`` from a jsonl of ``{"id": ..., "units": [...]}`` lines, in file order.

    Raises:
        SlammingError: malformed JSON, a missing or repeated id, or units that are not a list of
            integers >= 0 (one line naming the file and line).
    """
    prompts: list[tuple[str, np.ndarray]] = []
    seen: set[str] = set()
    for where, row in jsonl_rows(path):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str | int) or "units" not in row:
            raise SlammingError(f'{where}: expected {{"id": "...", "units": [3, 17, ...]}}; fix the line')
        units = row["units"]
        if not isinstance(units, list) or not all(isinstance(u, int) and u >= 0 for u in units):
            raise SlammingError(f"{where}: units must be a list of integers >= 0 (raw units 0..K-1)")
        ident = str(row["id"])
        if ident in seen:
            raise SlammingError(f"{where}: id {ident!r} appears twice; give every prompt its own id")
        seen.add(ident)
        prompts.append((ident, np.asarray(units, dtype=np.int64)))
    if not prompts:
        raise SlammingError(f'{path} holds no prompts; add lines like {{"id": "a", "units": [3, 17]}}')
    return prompts


def _jsonl_kind(path: Path) -> str:
    """``"units"`` or ``"audio"``: what the first non-empty line of a ``.jsonl`` describes."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return "audio"  # read_manifest reports the bad line
                return "units" if isinstance(row, dict) and "units" in row else "audio"
    raise SlammingError(f"{path} is empty; give audio (a path per line) or unit prompts (id and units)")


class _Prompts(Dataset):
    """Items ``{"index", "id", "units" | None, "waveform" | None}``; audio is read on access."""

    def __init__(self, specs: list[Prompt], sample_rate: int, prompt_seconds: float | None) -> None:
        self.specs, self.sample_rate, self.prompt_seconds = specs, sample_rate, prompt_seconds

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> Prompt:
        spec = self.specs[i]
        item: Prompt = {
            "index": spec["index"],
            "id": spec["id"],
            "units": spec.get("units"),
            "waveform": None,
        }
        if spec.get("path") is not None:
            wav = read_audio(spec["path"], self.sample_rate)
            if self.prompt_seconds is not None:
                wav = wav[: int(round(self.prompt_seconds * self.sample_rate))]
            item["waveform"] = wav
        return item


def _as_list(batch: list[Prompt]) -> list[Prompt]:
    return batch


class PromptDataModule(pl.LightningDataModule):
    """Prompts for ``slamming predict`` with :class:`~slamming.tasks.generate.UnitGeneration`.

    Args:
        prompts: an audio folder or ``.tsv``/``.jsonl`` manifest, a unit corpus folder, or a
            ``.jsonl`` of unit prompts (see the module docstring).
        prompt_seconds: keep the first this many seconds of each audio prompt (and of each corpus
            document with durations); None keeps everything.
        sample_rate: rate audio is read at (the tokenisers' 16 kHz).
        max_prompts: use only the first this many prompts (None: all).
        batch_size: prompts per generation batch (left padded; see :mod:`slamming.eval.generate`).
        num_workers: DataLoader workers reading audio.

    Raises:
        SlammingError: the prompts are missing or malformed, or a setting is out of range.
    """

    def __init__(
        self,
        prompts: str,
        prompt_seconds: float | None = 3.0,
        sample_rate: int = 16000,
        max_prompts: int | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if prompt_seconds is not None and not prompt_seconds > 0:
            raise SlammingError(
                f"data.prompt_seconds must be > 0 (or null for whole prompts), got {prompt_seconds}"
            )
        if batch_size < 1:
            raise SlammingError(f"data.batch_size must be >= 1, got {batch_size}")
        if max_prompts is not None and max_prompts < 1:
            raise SlammingError(f"data.max_prompts must be >= 1 (or null for all), got {max_prompts}")
        self.prompts = Path(prompts)
        self.prompt_seconds = prompt_seconds
        self.sample_rate = int(sample_rate)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        #: Tokeniser identity of unit prompts from a corpus; None for audio and unit jsonl.
        self.tokenizer: dict[str, Any] | None = None
        self.kind, specs = self._read()
        self.specs = specs[:max_prompts] if max_prompts else specs

    def _read(self) -> tuple[str, list[Prompt]]:
        path = self.prompts
        if path.is_dir() and (path / "meta.json").is_file():
            return "units", self._corpus_specs(UnitCorpus(path))
        if path.is_file() and path.suffix.lower() == ".jsonl" and _jsonl_kind(path) == "units":
            return "units", [
                {"index": i, "id": ident, "units": units}
                for i, (ident, units) in enumerate(read_unit_prompts(path))
            ]
        entries = read_manifest(path)
        return "audio", [{"index": i, "id": e.rel, "path": str(e.path)} for i, e in enumerate(entries)]

    def _corpus_specs(self, corpus: UnitCorpus) -> list[Prompt]:
        self.tokenizer = dict(corpus.tokenizer)
        frame_rate = self.tokenizer.get("frame_rate")
        specs = []
        for i in range(len(corpus)):
            units = np.asarray(corpus.document(i), dtype=np.int64)
            durations = corpus.durations(i)
            if self.prompt_seconds is not None and durations is not None and frame_rate:
                frames = np.cumsum(np.asarray(durations, dtype=np.float64))
                keep = int(np.searchsorted(frames, self.prompt_seconds * float(frame_rate), side="right"))
                units = units[: max(keep, 1)]
            source = corpus.source(i)
            specs.append({"index": i, "id": str(source) if source is not None else str(i), "units": units})
        return specs

    def __len__(self) -> int:
        return len(self.specs)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            _Prompts(self.specs, self.sample_rate, self.prompt_seconds),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_as_list,
        )

    def describe(self) -> str:
        """One line for the log: what the prompts are."""
        return f"{len(self.specs)} {self.kind} prompt(s) from {self.prompts}"
