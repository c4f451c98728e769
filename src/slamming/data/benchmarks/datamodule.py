"""``PairBenchmarkDataModule``: one test dataloader of audio pairs per benchmark.

The loaders read and resample the audio (in worker processes when ``num_workers`` > 0); the
LightningModule (:class:`~slamming.tasks.evaluate.PairEvaluation`) tokenises it with the model's
own tokeniser and scores it, so this module needs to know nothing about the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from slamming.data.benchmarks.readers import Pair, PairBenchmark, load_benchmarks
from slamming.errors import SlammingError
from slamming.hashing import settings_key
from slamming.speech.audio import read_audio

log = logging.getLogger(__name__)


class PairAudioDataset(Dataset):
    """The pairs of one benchmark as waveforms: ``{"index", "positive", "negative"}``.

    Args:
        pairs: The pairs.
        sample_rate: Rate every waveform is resampled to (the tokeniser's).
    """

    def __init__(self, pairs: Sequence[Pair], sample_rate: int = 16000) -> None:
        self.pairs = list(pairs)
        self.sample_rate = int(sample_rate)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        return {
            "index": index,
            "positive": read_audio(pair.positive, self.sample_rate),
            "negative": read_audio(pair.negative, self.sample_rate),
        }


def collate_pairs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Keep waveforms as lists: each is tokenised alone, so they are never padded together."""
    return {
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "positive": [item["positive"] for item in items],
        "negative": [item["negative"] for item in items],
    }


class PairBenchmarkDataModule(pl.LightningDataModule):
    """Pair benchmarks (sWUGGY, sBLIMP, sSC, tSC, SALMon, manifests) as test data.

    Args:
        benchmarks: One spec per benchmark, read by
            :func:`~slamming.data.benchmarks.readers.load_benchmarks`: ``{kind, path, name?, split?, parts?}``
            (a SALMon spec gives one benchmark per part). Read when the module is built, so a
            wrong layout fails before any model work.
        batch_size: Pairs per batch (two sequences each in one forward pass).
        num_workers: DataLoader worker processes reading audio.
        sample_rate: Rate the audio is resampled to; 16 kHz for slamming's tokenisers.
        context_length: Most ids a scored sequence may have (linked to the model; longer ones keep
            their end, see :func:`~slamming.eval.likelihood.score_units`); None: the model's
            ``max_position_embeddings``.
        max_pairs: Score only the first N pairs of each benchmark (a quick look); None: all.

    Raises:
        SlammingError: a spec in the wrong layout, a missing file, or two benchmarks with one name.
    """

    def __init__(
        self,
        benchmarks: list[dict[str, Any]],
        batch_size: int = 16,
        num_workers: int = 0,
        sample_rate: int = 16000,
        context_length: int | None = None,
        max_pairs: int | None = None,
    ) -> None:
        super().__init__()
        if not benchmarks:
            raise SlammingError("data.benchmarks is empty; list at least one {kind, path} benchmark")
        if batch_size < 1 or (max_pairs is not None and max_pairs < 1):
            raise SlammingError("data.batch_size and data.max_pairs must be at least 1")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.sample_rate = int(sample_rate)
        self.context_length = context_length
        #: The benchmarks, in the order of the test dataloaders.
        self.benchmarks: list[PairBenchmark] = [b for spec in benchmarks for b in load_benchmarks(spec)]
        names = [b.name for b in self.benchmarks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SlammingError(
                f"data.benchmarks has more than one benchmark named {', '.join(repeated)}; give each a name"
            )
        for bench in self.benchmarks:
            if max_pairs is not None:
                bench.pairs = bench.pairs[:max_pairs]
            skipped = "; ".join(f"{n} {reason}" for reason, n in bench.skipped.items())
            log.info(
                "benchmark %s: %d pairs from %s%s",
                bench.name,
                len(bench.pairs),
                bench.path,
                f" (skipped: {skipped})" if skipped else "",
            )

    @property
    def num_units(self) -> int | None:
        """Audio has no unit count: the model's tokeniser decides it (linked as None)."""
        return None

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Audio stays on the CPU: the tokeniser moves it where its features run (HuBERT on the
        # accelerator, MFCCs on the CPU).
        return batch

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per benchmark, in :attr:`benchmarks` order, pairs in metadata order."""
        return [
            DataLoader(
                PairAudioDataset(bench.pairs, self.sample_rate),
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                collate_fn=collate_pairs,
                persistent_workers=False,
            )
            for bench in self.benchmarks
        ]


class EmbeddedBenchmarkDataModule(PairBenchmarkDataModule):
    """The four embedded benchmarks (:mod:`slamming.data.benchmarks.embedded`), built on first use.

    The lexical, syntactic, topic-cloze and spoken-cloze pairs are made from the story generator's
    held-out test split and spoken by espeak-ng into ``<cache_dir>/<settings key>``; a later run with
    the same settings reuses the folder (and says so). The build runs when the module is made, before
    the model loads, because :class:`PairBenchmarkDataModule` reads its benchmarks then to fail fast;
    evaluation runs on one device, so there is no rank to race with.

    Args:
        cache_dir: Where builds are kept.
        num_pairs: Text pairs per benchmark (lexical and syntactic ones are spoken in every voice).
        voices: espeak-ng voices; None: the tiny pretraining config's four.
        seed: Seed of the pairs and of the voice/rate/pitch plan.
        tts_workers: Parallel espeak-ng processes.
        progress: Progress bars while building.
        **kwargs: :class:`PairBenchmarkDataModule` arguments (batch_size, num_workers, context_length,
            max_pairs).
    """

    def __init__(
        self,
        cache_dir: str = "data/benchmarks/embedded",
        num_pairs: int = 400,
        voices: list[str] | None = None,
        seed: int = 0,
        tts_workers: int = 2,
        progress: bool = True,
        batch_size: int = 16,
        num_workers: int = 0,
        sample_rate: int = 16000,
        context_length: int | None = None,
        max_pairs: int | None = None,
    ) -> None:
        from slamming.data.benchmarks.embedded import build_embedded_benchmarks
        from slamming.data.benchmarks.embedded_pairs import BENCHMARKS
        from slamming.speech.tts import DEFAULT_VOICES

        voices = list(voices) if voices else list(DEFAULT_VOICES)
        # A list (no keys to sort): the same bytes as the json.dumps of the folders built before.
        name = settings_key([num_pairs, voices, seed], length=12)
        self.build_dir = Path(cache_dir) / f"n{num_pairs}-seed{seed}-{name}"
        summary = build_embedded_benchmarks(
            self.build_dir,
            num_pairs=num_pairs,
            voices=voices,
            seed=seed,
            tts_workers=tts_workers,
            progress=progress,
        )
        if summary.get("reused"):
            log.info("reusing the embedded benchmarks in %s", self.build_dir)
        specs = [
            {"kind": "manifest", "path": str(self.build_dir / bench / "manifest.jsonl"), "name": bench}
            for bench in BENCHMARKS
        ]
        super().__init__(specs, batch_size, num_workers, sample_rate, context_length, max_pairs)
