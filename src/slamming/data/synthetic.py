"""``SyntheticSpeechDataModule``: stories → TTS → unit tokeniser → unit corpora, cached, then packed.

Everything happens offline: the stories come from :mod:`slamming.data.stories`, the speech from
espeak-ng, the units from an MFCC tokeniser fitted on the synthesised training speech. The whole
build runs once in ``prepare_data`` (rank 0 of each node) and lands in a cache folder named by a
hash of every setting that changes its content; a second run with the same settings reuses it and
says so. Audio is streamed — synthesised, tokenised and written one utterance at a time — so memory
does not grow with the number of stories.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from slamming.data.corpus_writer import CorpusWriter
from slamming.data.pretrain import UnitDataModule
from slamming.data.stories import Story, StoryGenerator
from slamming.speech.tokenizer import MFCCTokenizer
from slamming.speech.tts import DEFAULT_VOICES, EspeakEngine, plan_jobs, synthesize_many

#: Bump when the build's output changes for the same settings (invalidates old caches).
BUILD_VERSION = 1


class SyntheticSpeechDataModule(UnitDataModule):
    """Builds spoken-story unit corpora offline and serves them like :class:`UnitDataModule`.

    Args:
        cache_dir: where built corpora are kept (one sub-folder per settings hash).
        num_train_stories: stories spoken for training.
        num_val_stories: held-out stories spoken for validation (a disjoint split).
        story_seed: seed of the story generator.
        voices: espeak-ng voices; each story gets one, drawn from ``tts_seed``.
        rate_range: speaking rate range (words per minute).
        pitch_range: pitch range (espeak-ng scale 0–99).
        tts_seed: seed of the voice/rate/pitch plan.
        tts_workers: parallel synthesis processes.
        num_units: k-means size K of the tokeniser (the model's vocabulary is K + 2).
        frame_rate: frame rate of the MFCC units when ``segment`` is off.
        segment: phone-like change-point segments instead of fixed frames (what made a tiny model
            learn story coherence in our measurements).
        fit_stories: training stories whose speech fits the k-means.
        kmeans_seed: seed of the k-means fit.
        progress: show progress bars while building.
        **kwargs: :class:`UnitDataModule` arguments (context_length, batch_size, num_workers, seed,
            verify_checksums, pin_memory).
    """

    def __init__(
        self,
        cache_dir: str = "data/synthetic",
        num_train_stories: int = 2000,
        num_val_stories: int = 100,
        story_seed: int = 0,
        voices: list[str] | None = None,
        rate_range: tuple[int, int] = (150, 190),
        pitch_range: tuple[int, int] = (35, 65),
        tts_seed: int = 0,
        tts_workers: int = 2,
        num_units: int = 100,
        frame_rate: int = 25,
        segment: bool = True,
        fit_stories: int = 200,
        kmeans_seed: int = 0,
        progress: bool = True,
        context_length: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        verify_checksums: bool = True,
        pin_memory: bool = True,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.settings: dict[str, Any] = {
            "build_version": BUILD_VERSION,
            "num_train_stories": int(num_train_stories),
            "num_val_stories": int(num_val_stories),
            "story_seed": int(story_seed),
            "voices": list(voices) if voices else list(DEFAULT_VOICES),
            "rate_range": [int(rate_range[0]), int(rate_range[1])],
            "pitch_range": [int(pitch_range[0]), int(pitch_range[1])],
            "tts_seed": int(tts_seed),
            "num_units": int(num_units),
            "frame_rate": int(frame_rate),
            "segment": bool(segment),
            "fit_stories": int(min(fit_stories, num_train_stories)),
            "kmeans_seed": int(kmeans_seed),
        }
        self.tts_workers = int(tts_workers)
        self.progress = progress
        key = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
        self.build_dir = self.cache_dir / f"stories-{key}"
        super().__init__(
            train=str(self.build_dir / "train"),
            val=str(self.build_dir / "val") if num_val_stories > 0 else None,
            context_length=context_length,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            verify_checksums=verify_checksums,
            pin_memory=pin_memory,
        )
        self._num_units = int(num_units)

    def _ready_to_open(self) -> bool:
        return (self.build_dir / "done.json").exists()

    @property
    def tokenizer_dir(self) -> Path:
        """Folder of the fitted tokeniser (reusable to tokenise other speech the same way)."""
        return self.build_dir / "tokenizer"

    def prepare_data(self) -> None:
        done = self.build_dir / "done.json"
        if done.exists():
            info = json.loads(done.read_text())
            rank_zero_info(
                f"reusing the cached synthetic corpus {self.build_dir} "
                f"({info['train_documents']} train / {info['val_documents']} val stories, {info['hours']:.1f} h of speech)"
            )
            return
        self.build()

    def build(self) -> None:
        """Synthesise, tokenise and write the corpora into :attr:`build_dir`."""
        s = self.settings
        started = time.perf_counter()
        tmp = self.build_dir.with_name(self.build_dir.name + ".partial")
        if tmp.exists():  # left by an interrupted build of ours: nothing of the user's
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        rank_zero_info(
            f"building the synthetic corpus {self.build_dir}: {s['num_train_stories']} + {s['num_val_stories']} "
            f"stories, voices {', '.join(s['voices'])}, {s['num_units']} units"
        )
        generator = StoryGenerator(s["story_seed"])
        train = generator.stories(s["num_train_stories"], "train")
        val = generator.stories(s["num_val_stories"], "val") if s["num_val_stories"] else []
        engine = EspeakEngine(
            voices=s["voices"], rate_range=tuple(s["rate_range"]), pitch_range=tuple(s["pitch_range"])
        )
        train_jobs = plan_jobs([st.text for st in train], engine, s["tts_seed"])
        fit_jobs = train_jobs[: s["fit_stories"]]
        fit_wavs = list(synthesize_many(engine, fit_jobs, workers=self.tts_workers, progress=self.progress))
        tokenizer = MFCCTokenizer(k=s["num_units"], frame_rate=s["frame_rate"], segment=s["segment"])
        tokenizer.fit(fit_wavs, seed=s["kmeans_seed"])
        tokenizer.save(tmp / "tokenizer")
        stats: dict[str, Any] = {}
        stats["train"] = self._write_split(
            tmp / "train", train, train_jobs, engine, tokenizer, reuse=fit_wavs
        )
        del fit_wavs
        if val:
            val_jobs = plan_jobs([st.text for st in val], engine, s["tts_seed"] + 1)
            stats["val"] = self._write_split(tmp / "val", val, val_jobs, engine, tokenizer, reuse=[])
        hours = sum(v["seconds"] for v in stats.values()) / 3600
        summary = {
            "settings": s,
            "train_documents": len(train),
            "val_documents": len(val),
            "hours": hours,
            "tokens": {k: v["tokens"] for k, v in stats.items()},
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / "done.json").write_text(json.dumps(summary, indent=2))
        if self.build_dir.exists():  # a previous build without done.json: incomplete, ours
            shutil.rmtree(self.build_dir)
        tmp.rename(self.build_dir)
        rank_zero_info(
            f"built {self.build_dir} in {summary['build_seconds']:.0f} s: {hours:.1f} h of speech, "
            f"{stats['train']['tokens']} train tokens"
        )

    def _write_split(
        self,
        path: Path,
        stories: list[Story],
        jobs: list,
        engine: EspeakEngine,
        tokenizer: MFCCTokenizer,
        reuse: list,
    ) -> dict[str, float]:
        seconds = 0.0
        tokens = 0
        rest = synthesize_many(engine, jobs[len(reuse) :], workers=self.tts_workers, progress=self.progress)
        with CorpusWriter(path, tokenizer=tokenizer.identity, num_units=tokenizer.k) as writer:
            for i, story in enumerate(stories):
                wav = reuse[i] if i < len(reuse) else next(rest)
                units, durations = tokenizer.encode(wav)
                job = jobs[i]
                writer.add(
                    units,
                    durations=durations,
                    text=story.text,
                    source=f"{story.id}|{job.voice}|{job.rate}|{job.pitch}",
                )
                seconds += wav.numel() / engine.sample_rate
                tokens += len(units)
        return {"seconds": seconds, "tokens": tokens}

    def setup(self, stage: str | None = None) -> None:
        if self._identity is None:
            self._read_identity()
        super().setup(stage)
