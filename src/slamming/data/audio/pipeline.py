"""Audio from a manifest as batches of 16 kHz mono waveforms, on fairseq2's data pipeline.

``AudioManifestDataModule`` feeds ``slamming predict`` (unit extraction). The engine is a fairseq2
``DataPipeline``::

    read_sequence(manifest entries) -> shard(rank, world_size, allow_uneven=True)
      -> filter(not already done)          # skip_ids, checked from the header, no decoding
      -> map(decode, num_parallel_calls)   # WAV/FLAC: fairseq2's AudioDecoder; others: soundfile
      -> filter(decoded and long enough)   # bad and short files are recorded and counted
      -> yield_from(cut into windows)      # ids "<rel>" or "<rel>#<segment>"
      -> bucket(batch_size) | bucket_by_length(max_batch_seconds) -> map(collate) -> prefetch

Decoding is :class:`~slamming.data.audio.decode.AudioFileDecoder`: fairseq2's native decoder for WAV
and FLAC, :func:`slamming.speech.audio.read_audio` (soundfile) for other formats and for every file
the native path cannot vouch for; both give the same samples (``bench/audio_bench.py`` checks them,
and measured the native path faster: docs/perf-log.md, 2026-12-02). Mono mixing and resampling to
``sample_rate`` are the same code on both paths.

Sharding happens on manifest entries, before decoding, so each rank decodes only its own files
and every segment of a file lands on the same rank; ranks get disjoint shares whose union is the
whole manifest (``allow_uneven=True``: without it fairseq2 drops the tail that does not divide).

**Segmentation rule.** A recording of ``N`` samples (after resampling) and a window of
``W = round(max_seconds * sample_rate)`` samples is cut into consecutive, non-overlapping windows
``[0, W), [W, 2W), ...``; a last window shorter than ``min_seconds`` is merged into the one before
it (so a window may be up to ``max_seconds + min_seconds`` long). A recording that gives a single
window is not cut: its id is its relative path. Otherwise segment ``k`` has id ``"<rel>#<k>"``. A
70 s file with ``max_seconds=30`` gives 30, 30 and 10 s; a 60.05 s file gives 30 and 30.05 s.

**Bad input.** A file that is missing, empty, corrupt or not audio does not stop the pipeline: it is
recorded in :attr:`AudioManifestDataModule.bad_files` as ``(path, reason)`` and named in
:meth:`~AudioManifestDataModule.summary`. Files shorter than ``min_seconds`` are skipped and
counted. With several ranks, each rank records the files of its own shard only.

Each batch is ``{"waveforms": list[(T,) float32], "ids": list[str], "orders": list[int],
"segments": list[int], "sources": list[str]}``. ``order`` is the position of the file in the
manifest (shared by the segments of a cut file), so sorting outputs by ``(order, segment)``
restores manifest order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lightning.pytorch as pl
import soundfile as sf
from fairseq2.data.data_pipeline import DataPipeline, read_sequence

from slamming.data.audio.decode import AudioFileDecoder
from slamming.data.audio.manifest import ManifestEntry, read_manifest
from slamming.errors import AudioError, SlammingError

__all__ = ["AudioBatches", "AudioManifestDataModule", "segment_bounds"]

Batch = dict[str, list[Any]]


def segment_bounds(num_samples: int, window: int | None, min_samples: int) -> list[tuple[int, int]]:
    """Cut ``num_samples`` into consecutive windows of ``window`` samples (the module's rule).

    Args:
        num_samples: length of the recording.
        window: window length in samples, or None for no cutting.
        min_samples: a last window shorter than this is merged into the previous one.

    Returns:
        ``(start, end)`` sample ranges covering ``[0, num_samples)`` without overlap.
    """
    if window is None or num_samples <= window:
        return [(0, num_samples)]
    bounds = [(start, min(start + window, num_samples)) for start in range(0, num_samples, window)]
    if bounds[-1][1] - bounds[-1][0] < min_samples:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def _collate(examples: list[dict[str, Any]]) -> Batch:
    return {
        "waveforms": [e["waveform"] for e in examples],
        "ids": [e["id"] for e in examples],
        "orders": [e["order"] for e in examples],
        "segments": [e["segment"] for e in examples],
        "sources": [e["source"] for e in examples],
    }


class AudioBatches:
    """A re-iterable view of a single-pass fairseq2 ``DataPipeline``.

    Every ``iter()`` resets the pipeline and starts from the beginning, so Lightning can loop over it
    once per epoch or per ``predict`` call; the one exception is the first ``iter()`` after
    :meth:`load_state_dict`, which continues from the restored position.

    Args:
        pipeline: the fairseq2 pipeline yielding batches.
        on_batch: called with each batch as it is handed out (used for the summary counts).
    """

    def __init__(self, pipeline: DataPipeline, on_batch: Callable[[Batch], None] | None = None) -> None:
        self._pipeline = pipeline
        self._on_batch = on_batch
        self._resume = False

    def __iter__(self) -> Iterator[Batch]:
        if self._resume:
            self._resume = False
        else:
            self._pipeline.reset()
        for batch in self._pipeline:
            if self._on_batch is not None:
                self._on_batch(batch)
            yield batch

    def state_dict(self, strict: bool = True) -> dict[str, Any]:
        """fairseq2's pipeline state at the current position.

        Args:
            strict: also save the pipeline's buffers (prefetched, bucketed examples), so no example
                is lost on resume. The state then holds those waveforms; ``False`` keeps it small
                but the buffered examples are skipped after a resume.

        Returns:
            The state dictionary (``{"position": ...}``).
        """
        return self._pipeline.state_dict(strict=strict)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`; the next ``iter()`` continues from it."""
        self._pipeline.load_state_dict(state)
        self._resume = True


class AudioManifestDataModule(pl.LightningDataModule):
    """Batches of mono waveforms from an audio manifest, for ``predict`` (unit extraction).

    See the module docstring for the pipeline, the segmentation rule and bad-file handling.

    Args:
        manifest: a directory (scanned for .wav/.flac/.ogg), a .tsv or a .jsonl manifest (see
            :mod:`slamming.data.audio.manifest`).
        sample_rate: sample rate of the waveforms handed out.
        max_seconds: recordings longer than this are cut into windows; None never cuts.
        min_seconds: files shorter than this are skipped and counted; a last window shorter than
            this is merged into the previous one.
        batch_size: items per batch (when ``max_batch_seconds`` is None).
        max_batch_seconds: if set, batch by length with fairseq2's ``bucket_by_length`` so a batch
            holds at most this much audio (needs ``max_seconds``; at least ``max_seconds +
            min_seconds``). Batches then mix manifest order.
        num_parallel_calls: files decoded in parallel.
        native_decoding: decode WAV and FLAC with fairseq2's ``AudioDecoder`` (same samples, less
            CPU); False reads every file with soundfile.
        prefetch: batches prepared ahead.
        skip_ids: ids finished by an earlier run; they are neither decoded nor handed out (a file is
            not decoded when all of its segment ids are listed).
        rank: this process's shard when no trainer is attached (a trainer's global rank wins).
        world_size: number of shards when no trainer is attached.
    """

    def __init__(
        self,
        manifest: str,
        sample_rate: int = 16000,
        max_seconds: float | None = 30.0,
        min_seconds: float = 0.1,
        batch_size: int = 8,
        max_batch_seconds: float | None = None,
        num_parallel_calls: int = 2,
        native_decoding: bool = True,
        prefetch: int = 2,
        skip_ids: Iterable[str] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if sample_rate <= 0 or batch_size < 1 or num_parallel_calls < 1 or prefetch < 0:
            raise SlammingError(
                "sample_rate and batch_size and num_parallel_calls must be positive and prefetch >= 0, got "
                f"{sample_rate}, {batch_size}, {num_parallel_calls}, {prefetch}"
            )
        if min_seconds < 0 or (max_seconds is not None and max_seconds <= min_seconds):
            raise SlammingError(
                f"need 0 <= min_seconds < max_seconds, got min_seconds={min_seconds}, max_seconds={max_seconds}"
            )
        if max_batch_seconds is not None and (
            max_seconds is None or max_batch_seconds < max_seconds + min_seconds
        ):
            raise SlammingError(
                f"max_batch_seconds={max_batch_seconds} needs max_seconds set and must be at least "
                "max_seconds + min_seconds (the longest window); raise it or use batch_size"
            )
        if not 0 <= rank < world_size:
            raise SlammingError(f"rank {rank} is not in [0, world_size={world_size})")
        self.manifest = str(manifest)
        self.sample_rate = int(sample_rate)
        self.max_seconds = max_seconds
        self.min_seconds = float(min_seconds)
        self.batch_size = int(batch_size)
        self.max_batch_seconds = max_batch_seconds
        self.num_parallel_calls = int(num_parallel_calls)
        self.native_decoding = bool(native_decoding)
        self._decoder: AudioFileDecoder | None = None  # made with the pipeline (it holds fairseq2 objects)
        self.prefetch = int(prefetch)
        self.skip_ids = frozenset(skip_ids or ())
        self.rank, self.world_size = rank, world_size
        self._window = None if max_seconds is None else round(max_seconds * self.sample_rate)
        self._min_samples = round(self.min_seconds * self.sample_rate)
        self._entries: list[ManifestEntry] | None = None
        self._loader: AudioBatches | None = None
        self._loader_key: tuple[int, int] | None = None
        self._pending_state: dict[str, Any] | None = None
        # Filled while iterating; keyed so that a second pass does not count twice.
        self._bad: dict[str, tuple[int, str]] = {}
        self._short: dict[str, float] = {}
        self._skipped: set[str] = set()
        self._yielded: dict[str, tuple[str, int]] = {}

    # ----------------------------------------------------------------------------------- manifest
    @property
    def entries(self) -> list[ManifestEntry]:
        """All manifest entries, in order (read on first use)."""
        if self._entries is None:
            self._entries = read_manifest(self.manifest)
        return self._entries

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, so that a malformed one fails before any work starts."""
        del stage
        _ = self.entries

    # ----------------------------------------------------------------------------------- pipeline
    def _segment_ids(self, rel: str, num_samples: int) -> list[str]:
        bounds = segment_bounds(num_samples, self._window, self._min_samples)
        return [rel] if len(bounds) == 1 else [f"{rel}#{k}" for k in range(len(bounds))]

    def _not_done(self, item: dict[str, Any]) -> bool:
        """False when every id of the file is in ``skip_ids``; reads the header only."""
        rel = item["rel"]
        if rel in self.skip_ids:
            self._skipped.add(rel)
            return False
        try:
            info = sf.info(item["path"])
        except Exception:  # noqa: BLE001 - decoding reports the error properly
            return True
        # Length after resampling, as torchaudio computes it: ceil(frames * new / old).
        num_samples = -(-info.frames * self.sample_rate // int(info.samplerate))
        if num_samples < self._min_samples:
            return True
        ids = self._segment_ids(rel, num_samples)
        if all(i in self.skip_ids for i in ids):
            self._skipped.update(ids)
            return False
        return True

    def _decode(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """Decode one file; None (recorded with its reason) for bad or too short files."""
        try:
            assert self._decoder is not None  # made by build_pipeline
            wav = self._decoder(item["path"])
        except AudioError as err:
            self._bad[item["path"]] = (item["order"], str(err))
            return None
        except Exception as err:  # noqa: BLE001 - one unreadable file must not stop the run
            self._bad[item["path"]] = (
                item["order"],
                f"cannot read audio {item['path']}: {type(err).__name__}: {err}",
            )
            return None
        if wav.numel() < self._min_samples:
            self._short[item["path"]] = wav.numel() / self.sample_rate
            return None
        return {**item, "waveform": wav}

    def _segments(self, item: dict[str, Any]) -> DataPipeline:
        wav, rel = item["waveform"], item["rel"]
        bounds = segment_bounds(wav.numel(), self._window, self._min_samples)
        ids = self._segment_ids(rel, wav.numel())
        examples = []
        for k, ((start, end), item_id) in enumerate(zip(bounds, ids, strict=True)):
            if item_id in self.skip_ids:
                self._skipped.add(item_id)
                continue
            examples.append(
                {
                    "waveform": wav[start:end].clone() if len(bounds) > 1 else wav,
                    "id": item_id,
                    "order": item["order"],
                    "segment": k,
                    "source": item["path"],
                }
            )
        return read_sequence(examples).and_return()

    def _bucket_sizes(self) -> list[tuple[int, int]]:
        """(batch size, max length) pairs: halving lengths, doubling batch sizes.

        fairseq2's ``create_bucket_sizes`` gives one bucket per batch size (599 buckets for 60 s
        batches of 0.1-30 s items at 16 kHz), each holding a partly filled buffer of waveforms;
        powers of two keep the buckets, and so the buffered audio, logarithmic.
        """
        assert self.max_batch_seconds is not None
        max_samples = round(self.max_batch_seconds * self.sample_rate)
        sizes, n = [], 1
        while max_samples // n >= max(self._min_samples, 1):
            sizes.append((n, max_samples // n))
            n *= 2
        return sorted(sizes, key=lambda s: s[1])

    def build_pipeline(self, rank: int, world_size: int) -> DataPipeline:
        """The fairseq2 pipeline for one rank's shard (see the module docstring)."""
        items = [{"order": i, "path": str(e.path), "rel": e.rel} for i, e in enumerate(self.entries)]
        if self._decoder is None:
            self._decoder = AudioFileDecoder(self.sample_rate, native=self.native_decoding)
        builder = read_sequence(items).shard(rank, world_size, allow_uneven=True)
        if self.skip_ids:
            builder = builder.filter(self._not_done)
        builder = builder.map(self._decode, num_parallel_calls=self.num_parallel_calls)
        builder = builder.filter(lambda x: x is not None).yield_from(self._segments)
        if self.max_batch_seconds is None:
            builder = builder.bucket(self.batch_size)
        else:
            builder = builder.bucket_by_length(self._bucket_sizes(), selector="waveform")
        builder = builder.map(_collate)
        if self.prefetch > 0:
            builder = builder.prefetch(self.prefetch)
        return builder.and_return()

    def _record(self, batch: Batch) -> None:
        for item_id, source, wav in zip(batch["ids"], batch["sources"], batch["waveforms"], strict=True):
            self._yielded[item_id] = (source, wav.numel())

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return self.rank, self.world_size

    def predict_dataloader(self) -> AudioBatches:
        """The re-iterable batches of this rank's shard (rank and world size from the trainer)."""
        key = self._rank_and_world()
        if self._loader is None or self._loader_key != key:
            self._loader = AudioBatches(self.build_pipeline(*key), on_batch=self._record)
            self._loader_key = key
        if self._pending_state is not None:
            self._loader.load_state_dict(self._pending_state)
            self._pending_state = None
        return self._loader

    def state_dict(self) -> dict[str, Any]:
        """The pipeline position (``{}`` before the loader is built); see :meth:`AudioBatches.state_dict`."""
        return {} if self._loader is None else {"pipeline": self._loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a saved position the next time the loader is iterated.

        The summary and :attr:`bad_files` then cover only what this run decodes, not the files
        before the saved position.
        """
        if "pipeline" not in state_dict:
            return
        if self._loader is None:
            self._pending_state = state_dict["pipeline"]
        else:
            self._loader.load_state_dict(state_dict["pipeline"])

    # ------------------------------------------------------------------------------------ summary
    @property
    def bad_files(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file this rank could not decode, in manifest order."""
        return [(path, reason) for path, (_, reason) in sorted(self._bad.items(), key=lambda kv: kv[1][0])]

    @property
    def short_files(self) -> list[str]:
        """Files of this rank skipped for being shorter than ``min_seconds``."""
        return sorted(self._short)

    @property
    def skipped_ids(self) -> list[str]:
        """Ids of this rank not processed because they were in ``skip_ids``."""
        return sorted(self._skipped)

    def summary(self) -> str:
        """Counts of what this rank has handed out so far: files, segments, hours, skips, bad files."""
        files = {source for source, _ in self._yielded.values()}
        samples = sum(n for _, n in self._yielded.values())
        rank, world = self._loader_key or (self.rank, self.world_size)
        lines = [
            f"audio {self.manifest} (rank {rank} of {world}): {len(files)} files, {len(self._yielded)} items "
            f"({sum('#' in i for i in self._yielded)} of them segments), {samples / self.sample_rate / 3600:.4f} hours",
            f"skipped: {len(self._skipped)} ids already done, {len(self._short)} files shorter than "
            f"{self.min_seconds:g} s",
            f"bad files: {len(self._bad)}",
        ]
        lines += [f"  {path}: {reason}" for path, reason in self.bad_files]
        return "\n".join(lines)
