"""``SpokenPreferenceDataModule``: text preference triples → TTS → the model's units, cached, served.

SpokenSwag, made offline: text triples (the embedded story triples, the SWAG CSV layout, or a jsonl of
``prompt``/``chosen``/``rejected``) pass the paper's auto-BLEU filter, are spoken by espeak-ng in
several voices (one voice per triple for all three sides) and tokenised with the unit tokeniser of
the model being aligned — by default the one recorded with the policy (``model.init_from``), so the
preference units are the pretraining units. The build lands in a cache folder named by a hash of
the texts, the speech settings and the tokeniser identity; a second run reuses it and says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_info

from slamming.contracts import TokenizerRecord, require
from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.data.preference.text import (
    TextTriple,
    filter_auto_bleu,
    read_swag_csv,
    read_triples_jsonl,
    split_triples,
    story_triples,
    triples_hash,
)
from slamming.data.preference.tts import BUILD_VERSION, build_spoken_preferences, spoken_preference_key
from slamming.errors import SlammingError
from slamming.speech.tokenizers import load_tokenizer
from slamming.speech.tts import DEFAULT_VOICES, EspeakEngine


class SpokenPreferenceDataModule(PreferenceDataModule):
    """Builds spoken preference corpora from text triples and serves them like :class:`PreferenceDataModule`.

    Args:
        source: ``stories`` (the embedded generator), ``swag`` (the SWAG CSV layout in
            ``text_file``) or ``jsonl`` (text triples in ``text_file``).
        text_file: The SWAG CSV or jsonl file (not used for ``stories``).
        num_train_triples: Story triples for training (``stories`` only).
        num_val_triples: Held-out story triples, from stories never used in training (``stories``).
        story_seed: Seed of the story generator (``stories``).
        first_train_story: The train stream's story the first training triple is made from
            (``stories``): set it to the pretraining's ``num_train_stories`` (same ``story_seed``) so
            that DPO learns on stories the model has not memorised. Validation triples are the
            first ``num_val_triples`` stories of the val split either way.
        contradictions: Share of story triples (train and validation) whose rejected ending is the
            story's own with its character, object or place swapped, as spoken cloze tests, instead
            of another story's ending (``stories``; see
            :func:`~slamming.data.preference.text.story_triples`).
        val_fraction: Share of a file's triples held out for validation, by a hash of the prompt.
        swag_seed: Seed choosing each SWAG row's wrong ending.
        max_auto_bleu: The paper's filter: drop triples whose prompt + chosen text has a bigram
            auto-BLEU above this (0.3); None keeps every triple.
        tokenizer: Folder of the unit tokeniser; None: the one recorded with the model being trained.
        voices: espeak-ng voices; each triple gets one.
        rate_range: Speaking rate range (words per minute).
        pitch_range: Pitch range (0–99).
        tts_seed: Seed of the voice/rate/pitch plan.
        tts_workers: Parallel syntheses.
        cache_dir: Where builds are kept (one folder per settings hash).
        progress: Show progress bars while building.
        **kwargs: :class:`PreferenceDataModule` arguments (context_length, max_prompt_length,
            batch_size, num_workers, seed, verify_checksums, pin_memory).
    """

    def __init__(
        self,
        source: Literal["stories", "swag", "jsonl"] = "stories",
        text_file: str | None = None,
        num_train_triples: int = 2000,
        num_val_triples: int = 200,
        story_seed: int = 0,
        first_train_story: int = 0,
        contradictions: float = 0.0,
        val_fraction: float = 0.1,
        swag_seed: int = 0,
        max_auto_bleu: float | None = 0.3,
        tokenizer: str | None = None,
        voices: list[str] | None = None,
        rate_range: tuple[int, int] = (150, 190),
        pitch_range: tuple[int, int] = (35, 65),
        tts_seed: int = 0,
        tts_workers: int = 2,
        cache_dir: str = "data/preference",
        progress: bool = True,
        context_length: int = 1024,
        max_prompt_length: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 0,
        verify_checksums: bool = True,
        pin_memory: bool = True,
    ) -> None:
        self.source = source
        self.train_triples, self.val_triples, origin = self._read(
            source,
            text_file,
            num_train_triples,
            num_val_triples,
            story_seed,
            val_fraction,
            swag_seed,
            contradictions,
            first_train_story,
        )
        dropped: list[TextTriple] = []
        if max_auto_bleu is not None:
            self.train_triples, dropped_train = filter_auto_bleu(self.train_triples, max_auto_bleu)
            self.val_triples, dropped_val = filter_auto_bleu(self.val_triples, max_auto_bleu)
            dropped = dropped_train + dropped_val
        self.dropped_by_auto_bleu = dropped
        rank_zero_info(
            f"preference triples from {origin}: {len(self.train_triples)} train + {len(self.val_triples)} val; "
            f"auto-BLEU filter (> {max_auto_bleu}) dropped {len(dropped)}"
        )
        if not self.train_triples:
            # Name what emptied the training split: the validation share, the filter, or both.
            fixes = ["add triples"]
            if self.val_triples and source != "stories":
                fixes.append(f"lower data.val_fraction (now {val_fraction})")
            if dropped:
                fixes.append("relax data.max_auto_bleu")
            raise SlammingError(
                f"no training triples are left from {origin} ({len(self.val_triples)} held out for validation, "
                f"{len(dropped)} dropped by the auto-BLEU filter); {' or '.join(fixes)}"
            )
        self.engine_settings = {
            "voices": list(voices) if voices else list(DEFAULT_VOICES),
            "rate_range": [int(rate_range[0]), int(rate_range[1])],
            "pitch_range": [int(pitch_range[0]), int(pitch_range[1])],
        }
        self.text_settings = {
            "build_version": BUILD_VERSION,
            "source": source,
            "train_sha256": triples_hash(self.train_triples),
            "val_sha256": triples_hash(self.val_triples),
            "tts_seed": int(tts_seed),
            **self.engine_settings,
        }
        self.tokenizer_path = tokenizer
        self.tts_workers, self.progress = int(tts_workers), progress
        self.cache_dir = Path(cache_dir)
        self.build_dir: Path | None = None
        super().__init__(
            train=f"<{source} triples, built in prepare_data>",
            val=None,
            context_length=context_length,
            max_prompt_length=max_prompt_length,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            verify_checksums=verify_checksums,
            pin_memory=pin_memory,
        )
        if tokenizer is not None:
            self._locate(Path(tokenizer))

    @staticmethod
    def _read(
        source: str,
        text_file: str | None,
        num_train: int,
        num_val: int,
        story_seed: int,
        val_fraction: float,
        swag_seed: int,
        contradictions: float,
        first_train_story: int,
    ) -> tuple[list[TextTriple], list[TextTriple], str]:
        if source == "stories":
            train = story_triples(num_train, "train", story_seed, contradictions, start=first_train_story)
            return train, story_triples(num_val, "val", story_seed, contradictions), "the embedded stories"
        if first_train_story:
            raise SlammingError(
                f"data.first_train_story is for data.source=stories; {source} triples come from "
                "data.text_file: leave it at 0"
            )
        if source not in ("swag", "jsonl"):
            raise SlammingError(f"data.source must be 'stories', 'swag' or 'jsonl', got {source!r}")
        if text_file is None:
            raise SlammingError(f"data.source={source} needs data.text_file (the triples file)")
        reader = (
            read_swag_csv(text_file, seed=swag_seed) if source == "swag" else read_triples_jsonl(text_file)
        )
        triples, report = reader
        rank_zero_info(report.summary())
        train, val = split_triples(triples, val_fraction, seed=story_seed)
        return train, val, str(text_file)

    # -- where the build lives -------------------------------------------------------------------------
    def _tokenizer_folder(self) -> Path:
        if self.tokenizer_path is not None:
            return Path(self.tokenizer_path)
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None:
            require(
                module, TokenizerRecord, "data.tokenizer=null", "give data.tokenizer the tokeniser folder"
            )
        found = module.tokenizer_dir if module is not None else None
        if not found:
            raise SlammingError(
                "data.tokenizer: the model records no tokeniser folder; give the folder of the tokeniser "
                "its units came from (e.g. data/synthetic/stories-<hash>/tokenizer)"
            )
        return Path(found)

    def _locate(self, tokenizer_dir: Path) -> None:
        """Name the build folder from the settings and the tokeniser's identity."""
        if self.build_dir is not None:
            return
        tokenizer = load_tokenizer(tokenizer_dir)
        self._tokenizer_dir = tokenizer_dir
        self.settings = {**self.text_settings, "tokenizer": tokenizer.identity}
        self.build_dir = self.cache_dir / f"{self.source}-{spoken_preference_key(self.settings)}"
        self.train_paths = [str(self.build_dir / "train")]
        self.val_paths = [str(self.build_dir / "val")] if self.val_triples else []
        self._num_units = int(tokenizer.k)

    def _ready_to_open(self) -> bool:
        return self.build_dir is not None and (self.build_dir / "done.json").exists()

    def prepare_data(self) -> None:
        self._locate(self._tokenizer_folder())
        assert self.build_dir is not None
        done = self.build_dir / "done.json"
        if done.exists():
            info = json.loads(done.read_text())
            splits = info.get("splits", {})  # build_spoken_preferences keeps the counts per split here
            rank_zero_info(
                f"reusing the cached preference corpus {self.build_dir} ({splits['train']['triples']} train / "
                f"{splits.get('val', {}).get('triples', 0)} val triples, {info['hours']:.2f} h of speech)"
            )
            return
        engine = EspeakEngine(
            voices=self.engine_settings["voices"],
            rate_range=tuple(self.engine_settings["rate_range"]),
            pitch_range=tuple(self.engine_settings["pitch_range"]),
        )
        rank_zero_info(
            f"building the spoken preference corpus {self.build_dir}: {len(self.train_triples)} + "
            f"{len(self.val_triples)} triples, espeak-ng voices {', '.join(engine.voices)}"
        )
        build_spoken_preferences(
            self.build_dir,
            self.train_triples,
            self.val_triples,
            self._tokenizer_dir,
            engine,
            tts_seed=self.text_settings["tts_seed"],
            tts_workers=self.tts_workers,
            progress=self.progress,
            info=self.settings,
        )

    def setup(self, stage: str | None = None) -> None:
        self._locate(self._tokenizer_folder())
        super().setup(stage)
