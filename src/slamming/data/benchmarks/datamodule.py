"""``PairBenchmarkDataModule`` and ``EmbeddedBenchmarkDataModule``: one test dataloader of audio
pairs per benchmark.

The loaders read and resample the audio (in worker processes when ``num_workers`` > 0); the
LightningModule (:class:`~slamming.tasks.evaluate.PairEvaluation`) tokenises it with the model's
own tokeniser and scores it, so these modules need to know nothing about the model. Neither builds
anything when it is made: the published benchmarks are only listed then, and the embedded ones are
spoken in ``prepare_data``, after the model (and its tokeniser) has been checked.

Each waveform comes with its key, a digest of its file's bytes and the rate
(:func:`~slamming.speech.audio.audio_key`); a file whose key is in ``known_audio`` (set by the
LightningModule: it has the file's units cached) is read but not decoded, and its side is None.
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
from slamming.errors import ConfigError, SlammingError
from slamming.hashing import settings_key
from slamming.speech.audio import audio_key, decode_audio_bytes, read_audio_file

log = logging.getLogger(__name__)


#: The audio of a pair: its two sides and the optional shared beginning.
SIDES = ("positive", "negative", "prefix")


class PairAudioDataset(Dataset):
    """The pairs of one benchmark as waveforms: ``{"index", "positive", "negative", "prefix",
    "keys"}``, ``keys`` the :func:`~slamming.speech.audio.audio_key` of each side's file.

    Args:
        pairs: The pairs.
        sample_rate: Rate every waveform is resampled to (the tokeniser's).
        known: Keys of audio not to decode: such a side is None (its key still given).
    """

    def __init__(
        self, pairs: Sequence[Pair], sample_rate: int = 16000, known: frozenset[str] = frozenset()
    ) -> None:
        self.pairs = list(pairs)
        self.sample_rate = int(sample_rate)
        self.known = known

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        item: dict[str, Any] = {"index": index, "keys": {}}
        for side in SIDES:
            path = getattr(pair, side)
            if path is None:
                item[side] = item["keys"][side] = None
                continue
            data = read_audio_file(path)
            key = item["keys"][side] = audio_key(data, self.sample_rate)
            item[side] = None if key in self.known else decode_audio_bytes(data, self.sample_rate, str(path))
        return item


def collate_pairs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Keep waveforms as lists: each is tokenised alone, so they are never padded together.
    ``prefix`` holds each pair's shared beginning, or None; ``keys[side]`` each side's key."""
    return {
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        **{side: [item.get(side) for item in items] for side in SIDES},
        "keys": {side: [item["keys"].get(side) for item in items] for side in SIDES},
    }


class _PairDataModule(pl.LightningDataModule):
    """What both pair data modules share: the loader settings, the test loaders and the reading."""

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        sample_rate: int,
        context_length: int | None,
        max_pairs: int | None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (max_pairs is not None and max_pairs < 1):
            raise ConfigError("data.batch_size and data.max_pairs must be at least 1")
        if sample_rate < 1:
            raise ConfigError(
                f"data.sample_rate must be a positive rate in Hz (16000 for slamming's tokenisers), got {sample_rate}"
            )
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.sample_rate = int(sample_rate)
        self.context_length = context_length
        self.max_pairs = max_pairs
        #: The benchmarks, in the order of the test dataloaders (None until they are read).
        self.benchmarks: list[PairBenchmark] | None = None
        #: Keys of audio whose units the LightningModule has: the loaders do not decode it.
        self.known_audio: frozenset[str] = frozenset()

    def _read(self, specs: Sequence[dict[str, Any]]) -> list[PairBenchmark]:
        """Read ``specs`` into benchmarks, each cut to ``max_pairs``, and log what each holds."""
        benchmarks = [b for spec in specs for b in load_benchmarks(spec)]
        names = [b.name for b in benchmarks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SlammingError(
                f"data.benchmarks has more than one benchmark named {', '.join(repeated)}; give each a name"
            )
        for bench in benchmarks:
            if self.max_pairs is not None:
                bench.pairs = bench.pairs[: self.max_pairs]
            skipped = "; ".join(f"{n} {reason}" for reason, n in bench.skipped.items())
            log.info(
                "benchmark %s: %d pairs from %s%s",
                bench.name,
                len(bench.pairs),
                bench.path,
                f" (skipped: {skipped})" if skipped else "",
            )
        return benchmarks

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
        if self.benchmarks is None:
            raise RuntimeError("the benchmarks are read by setup(); the trainer calls it before testing")
        return [
            DataLoader(
                PairAudioDataset(bench.pairs, self.sample_rate, self.known_audio),
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                collate_fn=collate_pairs,
                persistent_workers=False,
            )
            for bench in self.benchmarks
        ]


class PairBenchmarkDataModule(_PairDataModule):
    """Pair benchmarks (sWUGGY, sBLIMP, sSC, tSC, SALMon, manifests) as test data.

    Args:
        benchmarks: One spec per benchmark, read by
            :func:`~slamming.data.benchmarks.readers.load_benchmarks`: ``{kind, path, name?, split?, parts?}``
            (a SALMon spec gives one benchmark per part). Read when the module is built (the files
            exist already: reading them lists and checks them, it builds nothing), so a wrong
            layout fails before any model work.
        batch_size: Pairs per batch (two sequences each in one forward pass).
        num_workers: DataLoader worker processes reading audio.
        sample_rate: Rate the audio is resampled to; 16 kHz for slamming's tokenisers.
        context_length: Most ids a scored sequence may have (linked to the model; longer ones keep
            their end, see :func:`~slamming.eval.likelihood.score_units`); None: the model's
            ``max_position_embeddings``.
        max_pairs: Score only the first N pairs of each benchmark (a quick look); None: all.

    Raises:
        SlammingError: a spec in the wrong layout, a missing file, or two benchmarks with one name.
        ConfigError: no spec, a batch size or ``max_pairs`` below 1, or a sample rate below 1 Hz.
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
        if not benchmarks:
            raise ConfigError("data.benchmarks is empty; list at least one {kind, path} benchmark")
        super().__init__(batch_size, num_workers, sample_rate, context_length, max_pairs)
        self.benchmarks = self._read(benchmarks)


class EmbeddedBenchmarkDataModule(_PairDataModule):
    """The four embedded benchmarks (:mod:`slamming.data.benchmarks.embedded`), built on first use.

    The lexical, syntactic, topic-cloze and spoken-cloze pairs are made from the story generator's
    held-out test split and spoken by espeak-ng into ``<cache_dir>/<settings key>``; a later run with
    the same settings reuses the folder (and says so). The build is :meth:`prepare_data`'s, which
    the trainer calls after the model is made: a model that cannot be scored (no tokeniser, a
    tokeniser that does not match it) stops the run before minutes of speech are synthesised. The
    settings are checked when the module is made; :meth:`setup` reads the built benchmarks.

    Args:
        cache_dir: Where builds are kept.
        num_pairs: Text pairs per benchmark (lexical and syntactic ones are spoken in every voice).
        voices: espeak-ng voices; None: the tiny pretraining config's four.
        seed: Seed of the pairs and of the voice/rate/pitch plan.
        tts_workers: Parallel espeak-ng processes.
        progress: Progress bars while building.
        batch_size: Pairs per batch (two sequences each in one forward pass).
        num_workers: DataLoader worker processes reading audio.
        sample_rate: Rate the audio is resampled to; 16 kHz for slamming's tokenisers.
        context_length: Most ids a scored sequence may have (linked to the model); None: the model's
            ``max_position_embeddings``.
        max_pairs: Score only the first N pairs of each benchmark (a quick look); None: all.
        cloze_pairs: Pairs of the topic and spoken cloze benchmarks, which are spoken in one voice
            per pair (so 1,000 give a 95 % interval of about ±3 points); None: ``num_pairs``.

    Raises:
        ConfigError: ``num_pairs``, ``cloze_pairs``, ``tts_workers``, ``batch_size``, ``max_pairs``
            or ``sample_rate`` below 1, a negative ``seed``, or an empty list of voices.
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
        cloze_pairs: int | None = None,
    ) -> None:
        from slamming.data.benchmarks.embedded import BUILD_VERSION
        from slamming.speech.tts import DEFAULT_VOICES

        super().__init__(batch_size, num_workers, sample_rate, context_length, max_pairs)
        if num_pairs < 1 or tts_workers < 1 or seed < 0 or (cloze_pairs is not None and cloze_pairs < 1):
            raise ConfigError(
                "data.num_pairs, data.cloze_pairs and data.tts_workers must be at least 1 and data.seed "
                f"at least 0, got num_pairs={num_pairs}, cloze_pairs={cloze_pairs}, "
                f"tts_workers={tts_workers}, seed={seed}"
            )
        if voices is not None and not voices:
            raise ConfigError(
                "data.voices is empty; list espeak-ng voices, or leave it null for the defaults"
            )
        self.voices = list(voices) if voices else list(DEFAULT_VOICES)
        self.num_pairs, self.seed, self.tts_workers = int(num_pairs), int(seed), int(tts_workers)
        self.progress = progress
        self.cloze_pairs = None if cloze_pairs is None or cloze_pairs == num_pairs else int(cloze_pairs)
        # The build version is in the name, so a build of an older version sits beside the new one
        # instead of being refused as "other settings".
        name = settings_key([num_pairs, self.voices, seed, self.cloze_pairs, BUILD_VERSION], length=12)
        counts = f"n{num_pairs}" + (f"-c{self.cloze_pairs}" if self.cloze_pairs else "")
        self.build_dir = Path(cache_dir) / f"{counts}-seed{seed}-{name}"

    def prepare_data(self) -> None:
        """Speak the benchmarks into :attr:`build_dir`, or reuse an earlier build of these settings."""
        from slamming.data.benchmarks.embedded import build_embedded_benchmarks

        summary = build_embedded_benchmarks(
            self.build_dir,
            num_pairs=self.num_pairs,
            voices=self.voices,
            seed=self.seed,
            tts_workers=self.tts_workers,
            progress=self.progress,
            cloze_pairs=self.cloze_pairs,
        )
        if summary.get("reused"):
            log.info("reusing the embedded benchmarks in %s", self.build_dir)

    def setup(self, stage: str | None = None) -> None:
        """Read the built benchmarks (once)."""
        from slamming.data.benchmarks.embedded_pairs import BENCHMARKS

        if self.benchmarks is None:
            specs = [
                {"kind": "manifest", "path": str(self.build_dir / bench / "manifest.jsonl"), "name": bench}
                for bench in BENCHMARKS
            ]
            self.benchmarks = self._read(specs)
