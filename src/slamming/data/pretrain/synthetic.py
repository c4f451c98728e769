"""``SyntheticSpeechDataModule``: texts → TTS → unit tokeniser → unit corpora, cached, then packed.

Everything happens offline: the texts are the generated stories of :mod:`slamming.data.text.stories`
(the default) or a user's corpus read by :mod:`slamming.data.text.reader` (plain lines, jsonl or
TinyStories-style files); the speech comes from espeak-ng in several voices on parallel workers, the
units from an MFCC tokeniser fitted on the synthesised training speech. With ``engine="piper"`` the
speech comes from a Piper neural voice instead (the ``tts`` extra), which also says when each word is
spoken: those timings are kept in the corpora (``UnitCorpus.words``). The whole build runs once in
``prepare_data`` (rank 0 of each node) and lands in a cache folder named by a hash of every setting
that changes its content — for a user corpus, the hash of its texts, not its file names. A second
run with the same settings reuses it and says so; a process that starts the same build while another
runs it waits for it (a file lock), then reuses it. Audio is streamed — synthesised, tokenised and
written one utterance at a time — so memory does not grow with the number of texts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from slamming.atomic import atomic_build
from slamming.data.corpus.writer import CorpusWriter
from slamming.data.pretrain.datamodule import UnitDataModule
from slamming.data.pretrain.tokenizer_fit import fit_mfcc_tokenizer, fit_phone_tokenizer, phone_build_settings
from slamming.data.text.reader import TextCorpus, TextFormat, read_texts, split_texts, text_id
from slamming.data.text.stories import StoryGenerator
from slamming.errors import ConfigError, SlammingError
from slamming.hashing import settings_key
from slamming.locks import build_lock
from slamming.speech.speak import speak_groups
from slamming.speech.tokenizers import NORMALIZATIONS, UnitTokenizer
from slamming.speech.tokenizers.phone import PhoneTokenizer
from slamming.speech.tts import (
    DEFAULT_VOICES,
    EspeakEngine,
    SpeechJob,
    TTSEngine,
    WordTiming,
    plan_jobs,
)

#: Bump when the build's output changes for the same settings (invalidates old caches).
BUILD_VERSION = 1


class SyntheticSpeechDataModule(UnitDataModule):
    """Builds spoken unit corpora offline and serves them like :class:`UnitDataModule`.

    Args:
        cache_dir: where built corpora are kept (one sub-folder per settings hash).
        num_train_stories: stories spoken for training (generated stories only).
        num_val_stories: held-out stories spoken for validation (a disjoint split; generated
            stories only).
        story_seed: seed of the story generator, or of the train/validation split of ``text_files``.
        engine: the TTS engine: ``"espeak"`` (espeak-ng, the default) or ``"piper"``
            (:class:`~slamming.speech.piper.PiperEngine`, noise off, with word timings stored in the
            corpora).
        piper_voice: path of a Piper ``.onnx`` voice; ``None`` is the bundled ``en_US-joe-medium``.
        voices: the engine's voices (espeak-ng voice names, or Piper speaker names); each text gets
            one, drawn from ``tts_seed``. ``None``: espeak's :data:`DEFAULT_VOICES`, or every speaker
            of the Piper voice.
        rate_range: speaking rate range; ``None`` is the engine's: espeak (150, 190) words per
            minute, Piper (85, 115) percent of the voice's speed.
        pitch_range: pitch range; ``None`` is the engine's: espeak (35, 65) on its 0–99 scale,
            Piper (0, 0) (it has no pitch control).
        tts_seed: seed of the voice/rate/pitch plan.
        tts_workers: parallel synthesis processes.
        tokenizer: ``"mfcc"`` (the default): MFCC change-point units with k-means, which change with
            the voice; ``"phone"``: units from a small CTC phone recogniser trained on the fitting
            speech and espeak-ng's phonemes of its text
            (:class:`~slamming.speech.tokenizers.phone.PhoneTokenizer`), the same in every voice
            (espeak-ng only).
        phone_steps: training steps of the phone recogniser (``tokenizer: phone``).
        phone_merges: byte-pair merges of the phone units (:mod:`slamming.speech.tokenizers.merges`;
            ``num_units`` must hold them and the 65-70 phonemes). 0: one unit per phoneme.
        phone_voices: the voices the recogniser learns from (``tokenizer: phone``); ``None``: the
            corpus's voices and :data:`~slamming.speech.tts.RECOGNISER_VARIANTS`.
        phone_tokenizer: a saved phone tokeniser to use rather than train one: its folder, or
            ``"bundled"``, the demo's, which ships with slamming (``slamming tokenizer train-phone``
            made it; see :func:`~slamming.data.pretrain.tokenizer_fit.phone_build_settings`).
            ``None``: the build trains the recogniser (about 3 minutes).
        num_units: K, the number of units (the model's vocabulary is K + 2): the k-means size, or
            with ``tokenizer: phone`` a bound on the phonemes (spare ids stay unused).
        frame_rate: frame rate of the MFCC units when ``segment`` is off.
        segment: phone-like change-point segments instead of fixed frames (what made a tiny model
            learn story coherence in our measurements).
        normalization: ``"corpus"``: MFCC statistics and the segment threshold are fitted on the
            fitting speech, so a word alone is tokenised as inside a story (what let the tiny model
            pass the embedded lexical test); ``"utterance"``: each utterance's own (the corpora
            built before this option). See :class:`~slamming.speech.tokenizers.MFCCTokenizer`.
        fit_stories: training texts whose speech fits the k-means (the first ones).
        kmeans_seed: seed of the k-means fit (of the phone recogniser's weights and batches with
            ``tokenizer: phone``).
        progress: show progress bars while building.
        text_files: a user's text corpus to speak instead of the generated stories (see
            :func:`slamming.data.text.reader.read_texts`). The files are read when the module is made, to
            hash their content for the cache key; lines that cannot be used are skipped and counted.
        text_format: ``"auto"``, ``"lines"``, ``"jsonl"`` or ``"tinystories"``.
        text_field: the key holding the text in jsonl files.
        val_fraction: share of ``text_files`` texts held out for validation, chosen by a hash of
            each text (:func:`slamming.data.text.reader.split_texts`), so adding texts never moves others.
        **kwargs: :class:`UnitDataModule` arguments (context_length, batch_size, num_workers, seed,
            verify_checksums, pin_memory).

    Raises:
        SlammingError: a text file is missing or holds no usable text, or every text fell into
            validation.
    """

    def __init__(
        self,
        cache_dir: str = "data/synthetic",
        num_train_stories: int = 2000,
        num_val_stories: int = 100,
        story_seed: int = 0,
        engine: Literal["espeak", "piper"] = "espeak",
        piper_voice: str | None = None,
        voices: list[str] | None = None,
        rate_range: tuple[int, int] | None = None,
        pitch_range: tuple[int, int] | None = None,
        tts_seed: int = 0,
        tts_workers: int = 2,
        tokenizer: Literal["mfcc", "phone"] = "mfcc",
        phone_steps: int = 500,
        phone_merges: int = 0,
        phone_voices: list[str] | None = None,
        phone_tokenizer: str | None = None,
        num_units: int = 100,
        frame_rate: int = 25,
        segment: bool = True,
        normalization: str = "corpus",
        fit_stories: int = 200,
        kmeans_seed: int = 0,
        progress: bool = True,
        text_files: list[str] | None = None,
        text_format: TextFormat = "auto",
        text_field: str = "text",
        val_fraction: float = 0.05,
        context_length: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        verify_checksums: bool = True,
        pin_memory: bool = True,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.text_corpus: TextCorpus | None = None
        self._given: tuple[PhoneTokenizer, Path] | None = None  # data.phone_tokenizer, opened
        if text_files:
            self.text_corpus = read_texts(list(text_files), format=text_format, field=text_field)
            self._train_texts, self._val_texts = split_texts(
                self.text_corpus.texts, val_fraction, seed=story_seed
            )
            if not self._train_texts:
                raise SlammingError(
                    f"all {len(self._val_texts)} texts of data.text_files fell into validation; "
                    "lower data.val_fraction or add texts"
                )
            source: dict[str, Any] = {
                "texts_sha256": self.text_corpus.content_hash,
                "val_fraction": float(val_fraction),
                "split_seed": int(story_seed),
            }
            num_train, num_val = len(self._train_texts), len(self._val_texts)
        else:
            for name, value in (
                ("num_train_stories", num_train_stories),
                ("num_val_stories", num_val_stories),
            ):
                if int(value) < 0:
                    raise ConfigError(f"data.{name} must be >= 0, got {value}")
            source = {
                "num_train_stories": int(num_train_stories),
                "num_val_stories": int(num_val_stories),
                "story_seed": int(story_seed),
            }
            self._train_texts, self._val_texts = [], []
            num_train, num_val = int(num_train_stories), int(num_val_stories)
        if engine == "espeak":
            if piper_voice is not None:
                raise SlammingError("data.piper_voice is set but data.engine is espeak; set engine: piper")
            engine_settings: dict[str, Any] = {"voices": list(voices) if voices else list(DEFAULT_VOICES)}
            rate_range, pitch_range = rate_range or (150, 190), pitch_range or (35, 65)
        elif engine == "piper":
            from slamming.speech.piper import PiperEngine, voice_fingerprint

            piper = PiperEngine(voice=piper_voice, voices=voices, **_ranges(rate_range, pitch_range))
            # The espeak build's key has no engine entries, so caches built before Piper stay valid.
            engine_settings = {
                "engine": "piper",
                "piper_voice_sha256": voice_fingerprint(piper.model_path),
                "voices": list(piper.voices),
            }
            rate_range, pitch_range = piper.rate_range, piper.pitch_range
        else:
            raise SlammingError(f"data.engine must be 'espeak' or 'piper', got {engine!r}")
        self.piper_voice = piper_voice
        self.settings: dict[str, Any] = {
            "build_version": BUILD_VERSION,
            **source,
            **engine_settings,
            "rate_range": [int(rate_range[0]), int(rate_range[1])],
            "pitch_range": [int(pitch_range[0]), int(pitch_range[1])],
            "tts_seed": int(tts_seed),
            "num_units": int(num_units),
            "frame_rate": int(frame_rate),
            "segment": bool(segment),
            "fit_stories": int(min(fit_stories, num_train)),
            "kmeans_seed": int(kmeans_seed),
        }
        if tokenizer == "phone":
            if engine != "espeak":
                raise ConfigError(
                    "data.tokenizer phone learns from espeak-ng phonemes; set data.engine: espeak"
                )
            self._given = phone_build_settings(
                self.settings, steps=phone_steps, merges=phone_merges, voices=phone_voices,
                given=phone_tokenizer, seed=kmeans_seed,
            )  # fmt: skip
        elif phone_tokenizer is not None:
            raise ConfigError("data.phone_tokenizer needs data.tokenizer: phone; set tokenizer: phone")
        elif tokenizer != "mfcc":
            raise ConfigError(f"data.tokenizer must be 'mfcc' or 'phone', got {tokenizer!r}")
        elif normalization not in NORMALIZATIONS:
            raise SlammingError(f"data.normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if tokenizer == "mfcc" and normalization != "utterance":  # older caches keep their key
            self.settings["normalization"] = normalization
        if int(tts_workers) < 1:
            raise ConfigError(f"data.tts_workers must be >= 1, got {tts_workers}")
        if int(tts_seed) < 0:
            raise ConfigError(f"data.tts_seed must be a non-negative integer, got {tts_seed}")
        for name, (low, high), floor in (("rate_range", rate_range, 1), ("pitch_range", pitch_range, 0)):
            if not floor <= low <= high:
                raise ConfigError(
                    f"data.{name} must be (low, high) with {floor} <= low <= high, got ({low}, {high})"
                )
        self.tts_workers = int(tts_workers)
        self.progress = progress
        key = settings_key(self.settings)
        self.build_dir = self.cache_dir / f"{'texts' if text_files else 'stories'}-{key}"
        super().__init__(
            train=str(self.build_dir / "train"),
            val=str(self.build_dir / "val") if num_val > 0 else None,
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
        """Build the corpora, or reuse them when built (by this or another process, even meanwhile).

        The look for ``done.json`` and the build hold :func:`~slamming.locks.build_lock` of
        :attr:`build_dir`, so of several processes building the same corpora at once (the ranks of
        several nodes, two runs sharing a cache) one builds and the others wait, then reuse it.
        """
        if self._reuse():  # no lock needed for a finished build (and no lock file in a read-only cache)
            return
        with build_lock(self.build_dir):
            if not self._reuse():
                self.build()

    def _reuse(self) -> bool:
        """Say so and return True when :attr:`build_dir` holds a finished build."""
        done = self.build_dir / "done.json"
        if not done.exists():
            return False
        info = json.loads(done.read_text())
        rank_zero_info(
            f"reusing the cached synthetic corpus {self.build_dir} "
            f"({info['train_documents']} train / {info['val_documents']} val documents, "
            f"{info['hours']:.1f} h of speech)"
        )
        return True

    def _texts(self) -> tuple[list[str], list[str]]:
        """The train and validation texts to speak: the user's corpus or generated stories."""
        if self.text_corpus is not None:
            return self._train_texts, self._val_texts
        s = self.settings
        generator = StoryGenerator(s["story_seed"])
        train = [st.text for st in generator.stories(s["num_train_stories"], "train")]
        val = (
            [st.text for st in generator.stories(s["num_val_stories"], "val")] if s["num_val_stories"] else []
        )
        return train, val

    def build(self) -> None:
        """Synthesise, tokenise and write the corpora into :attr:`build_dir`."""
        started = time.perf_counter()
        # Under the lock an existing build_dir without done.json is an unfinished build of ours (one
        # with done.json makes atomic_build refuse: call prepare_data to reuse it).
        with atomic_build(self.build_dir, replace_unfinished=True, done_newline=False) as (tmp, summary):
            self._build_into(tmp, summary, started)
        rank_zero_info(
            f"built {self.build_dir} in {summary['build_seconds']:.0f} s: {summary['hours']:.1f} h of speech, "
            f"{summary['tokens']['train']} train tokens"
        )

    def _build_into(self, tmp: Path, summary: dict[str, Any], started: float) -> None:
        """Write the tokeniser and the corpora into ``tmp`` and fill ``summary`` (``done.json``)."""
        s = self.settings
        train, val = self._texts()
        what = (
            "stories"
            if self.text_corpus is None
            else f"texts of {len(self.text_corpus.report.files)} file(s)"
        )
        rank_zero_info(
            f"building the synthetic corpus {self.build_dir}: {len(train)} + {len(val)} {what}, "
            f"{s.get('engine', 'espeak')} voices {', '.join(s['voices'])}, {s.get('tokenizer', 'mfcc')} units (K = {s['num_units']}), "
            f"{self.tts_workers} TTS workers"
        )
        if self.text_corpus is not None:
            rank_zero_info(f"text corpus: {self.text_corpus.report.summary()}")
        engine = self.make_engine()
        train_jobs = plan_jobs(train, engine, s["tts_seed"])
        fit_jobs = train_jobs[: s.get("fit_stories", 0)]  # none with a given phone tokeniser
        tokenizer: UnitTokenizer
        fit_wavs: list[tuple[torch.Tensor, list[WordTiming] | None]] = []
        if self._given is not None:
            tokenizer, summary["phone_tokenizer"] = self._given[0], str(self._given[1])
            rank_zero_info(f"phone tokeniser from {self._given[1]} (K = {tokenizer.k}; not trained here)")
        elif isinstance(engine, EspeakEngine) and s.get("tokenizer") == "phone":
            tokenizer, summary["phone_training"] = fit_phone_tokenizer(
                engine, [job.text for job in fit_jobs], voices=s["phone_voices"], k=s["num_units"],
                steps=s["phone_steps"], merges=s.get("phone_merges", 0), seed=s["phone_seed"],
                workers=self.tts_workers, progress=self.progress,
            )  # fmt: skip
        else:
            tokenizer, fit_wavs = fit_mfcc_tokenizer(
                engine, fit_jobs, s, workers=self.tts_workers, progress=self.progress
            )
        tokenizer.save(tmp / "tokenizer")
        stats: dict[str, Any] = {}
        stats["train"] = self._write_split(
            tmp / "train", "train", train_jobs, engine, tokenizer, reuse=fit_wavs
        )
        del fit_wavs
        if val:
            val_jobs = plan_jobs(val, engine, s["tts_seed"] + 1)
            stats["val"] = self._write_split(tmp / "val", "val", val_jobs, engine, tokenizer, reuse=[])
        hours = sum(v["seconds"] for v in stats.values()) / 3600
        summary.update(
            settings=s,
            train_documents=len(train) - stats["train"]["empty"],
            val_documents=len(val) - stats["val"]["empty"] if val else 0,
            hours=hours,
            tokens={k: v["tokens"] for k, v in stats.items()},
            skipped_empty={k: v["empty"] for k, v in stats.items()},
            build_seconds=round(time.perf_counter() - started, 1),
        )
        if self.text_corpus is not None:
            report = self.text_corpus.report
            summary["text_report"] = {
                "files": report.files,
                "lines": report.lines,
                "texts": report.texts,
                "split": report.split,
                "skipped": report.skipped,
                "examples": report.examples,
            }

    def make_engine(self) -> TTSEngine:
        """The TTS engine of :attr:`settings` (a Piper one gives word timings)."""
        s = self.settings
        ranges = _ranges(s["rate_range"], s["pitch_range"])
        if s.get("engine") == "piper":
            from slamming.speech.piper import PiperEngine

            return PiperEngine(voice=self.piper_voice, voices=s["voices"], timings=True, **ranges)
        return EspeakEngine(voices=s["voices"], **ranges)

    def _write_split(
        self,
        path: Path,
        split: str,
        jobs: list[SpeechJob],
        engine: TTSEngine,
        tokenizer: UnitTokenizer,
        reuse: list[tuple[torch.Tensor, list[WordTiming] | None]],
    ) -> dict[str, float]:
        """Speak, tokenise and write one split; the first ``len(reuse)`` utterances are given.

        A text whose speech gives no unit (a phone recogniser that has not learnt yet hears only
        blanks) is skipped and counted (``empty`` in the result and in ``done.json``); a split
        left with no text at all is an error naming the fix.
        """
        seconds = 0.0
        tokens = empty = 0
        stream = speak_groups(
            engine, jobs, desc=f"Speaking {split} texts", tokenizer=tokenizer, timings=True, spoken=reuse,
            workers=self.tts_workers, progress=self.progress,
        )  # fmt: skip
        try:
            with CorpusWriter(path, tokenizer=tokenizer.identity, num_units=tokenizer.k) as writer:
                for [spoken] in stream:
                    job = spoken.job
                    seconds += spoken.wav.numel() / engine.sample_rate
                    if len(spoken.units) == 0:
                        empty += 1
                        continue
                    writer.add(
                        spoken.units,
                        durations=spoken.durations,
                        text=job.text,
                        source=f"{text_id(job.text)}|{job.voice}|{job.rate}|{job.pitch}",
                        words=spoken.words,
                    )
                    tokens += len(spoken.units)
                if empty == len(jobs):
                    raise SlammingError(
                        f"the {tokenizer.kind} tokeniser gave no unit for any of the {len(jobs)} {split} "
                        "texts; with tokenizer: phone the recogniser has not learnt yet: raise "
                        "data.phone_steps (500 is the default)"
                    )
        finally:
            stream.close()  # stops the TTS threads early if writing failed
        if empty:
            rank_zero_warn(f"{empty} of {len(jobs)} {split} texts gave no unit and were skipped")
        return {"seconds": seconds, "tokens": tokens, "empty": empty}

    def setup(self, stage: str | None = None) -> None:
        if self._identity is None:
            self._read_identity()
        super().setup(stage)


def _ranges(rate_range: Any, pitch_range: Any) -> dict[str, tuple[int, int]]:
    """Engine keyword arguments for the rate and pitch ranges that are set (None: the engine's)."""
    given = {"rate_range": rate_range, "pitch_range": pitch_range}
    return {name: (int(r[0]), int(r[1])) for name, r in given.items() if r is not None}
