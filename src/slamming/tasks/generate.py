"""``UnitGeneration``: continue prompts with a trained unit LM and score them, for ``slamming predict``.

``slamming predict --config configs/tiny/generate.yaml`` loads a unit LM (a slamming ``.ckpt``, an
exported folder, the authors' format or a hub id; :func:`~slamming.models.loading.load_unit_lm`),
takes prompts from a :class:`~slamming.data.audio.prompts.PromptDataModule` (audio is tokenised here with
the model's own tokeniser, whose identity is checked), samples continuations with
:func:`~slamming.eval.generate.sample_continuations` (the paper's settings by default; each prompt's
seed comes from ``seed`` and the prompt's index) and writes, under ``output``:

- ``continuations.jsonl``: one line per prompt, in prompt order: ``index``, ``id``, ``prompt_units``,
  ``continuation_units`` (raw units), ``new_tokens``, ``eos``, ``seed``, ``sampling``,
  ``auto_bleu_units`` and, where computed, ``audio``, ``transcript``, ``auto_bleu_words``, ``nll``;
- ``metrics.json``: the means (auto-BLEU over units and words, GenPPL) and the settings;
- ``audio/<index>.wav`` (prompt + continuation) when a ``vocoder`` is given.

The unit LM runs in fp32 by default (``dtype: float32``, autocast off;
:func:`slamming.eval.precision.scoring_model`), so the log-probabilities continuations are sampled
from are the fp32 ones the authors sample from, also for a model stored in bf16.

Both files are written atomically at the end; an existing ``continuations.jsonl`` is never replaced
unless ``overwrite: true``. GenPPL needs a vocoder (none ships with slamming; see
:class:`~slamming.eval.genppl.UnitVocoder`), a Whisper folder (``asr``) and a text LM (``text_lm``).
With several devices each rank continues its share of the prompts and rank 0 writes everything.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from slamming.atomic import write_text_atomic
from slamming.data.text.repetition import auto_bleu
from slamming.errors import SlammingError
from slamming.eval.generate import SamplingSettings, prompt_seed, sample_continuations
from slamming.eval.genppl import TextPerplexity, UnitVocoder, WhisperTranscriber, genppl, unit_auto_bleu
from slamming.eval.precision import SCORING_DTYPE, check_dtype, scoring_model
from slamming.models.loading import load_unit_lm, resolve_newest
from slamming.models.sampling import PAPER_SAMPLING
from slamming.models.unit_lm import DTYPES
from slamming.speech.audio import read_audio, write_wav
from slamming.speech.tokenizers import check_identity, load_tokenizer

log = logging.getLogger(__name__)

CONTINUATIONS = "continuations.jsonl"
METRICS = "metrics.json"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    write_text_atomic(path, text)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


class UnitGeneration(pl.LightningModule):
    """Sample continuations of prompts from a unit LM; write units, audio and metrics.

    Args:
        model: the unit LM: a ``.ckpt``, an exported folder, an authors'-format folder or a hub id;
            a glob (``runs/tiny/version_*/hf_model``) picks its newest match.
        output: folder for ``continuations.jsonl``, ``metrics.json`` and ``audio/``.
        temperature: sampling temperature (paper: 0.8).
        top_k: top-k filter (paper: 25; 0 = off).
        max_new_tokens: most new ids per prompt (paper: 150).
        repetition_penalty: penalty on ids already in the sequence (paper: 1.1; 1.0 = off).
        seed: global seed; prompt ``i`` samples with ``prompt_seed(seed, i)``.
        overwrite: replace an existing ``continuations.jsonl`` (and audio files) in ``output``.
        tokenizer: folder of the tokeniser for audio prompts; default: the one the model records.
        vocoder: a unit-to-speech vocoder (``class_path``); writes ``audio/`` and enables ASR.
        asr: a Whisper folder (``WhisperForConditionalGeneration`` + ``WhisperProcessor``);
            transcribes prompt + continuation audio.
        asr_language: Whisper's language token (``en``); null lets Whisper decide.
        text_lm: a causal text LM folder (``AutoModelForCausalLM`` + ``AutoTokenizer``) scoring the
            transcripts for GenPPL (paper: Llama-3.2-1B).
        text_lm_gguf: a ``.gguf`` file inside ``text_lm`` to load instead of safetensors weights.
        dtype: run the unit LM in ``float32`` (the default, the authors'), ``bfloat16`` or
            ``float16``, with autocast off; null keeps the stored dtype and the trainer's precision.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``; null keeps the model's.

    Raises:
        SlammingError: ``continuations.jsonl`` exists and ``overwrite`` is false; ``asr`` without a
            vocoder or ``text_lm`` without ``asr``; a bad sampling setting; the model cannot load.
    """

    def __init__(
        self,
        model: str,
        output: str,
        temperature: float = PAPER_SAMPLING.temperature,
        top_k: int = PAPER_SAMPLING.top_k,
        max_new_tokens: int = PAPER_SAMPLING.max_new_tokens,
        repetition_penalty: float = PAPER_SAMPLING.repetition_penalty,
        seed: int = 0,
        overwrite: bool = False,
        tokenizer: str | None = None,
        vocoder: UnitVocoder | None = None,
        asr: str | None = None,
        asr_language: str | None = "en",
        text_lm: str | None = None,
        text_lm_gguf: str | None = None,
        dtype: str | None = SCORING_DTYPE,
        attn_implementation: str | None = None,
    ) -> None:
        super().__init__()
        check_dtype(dtype, "model.dtype")
        self.save_hyperparameters(ignore=["vocoder"])
        self.settings = SamplingSettings(temperature, top_k, max_new_tokens, repetition_penalty)
        if seed < 0:
            raise SlammingError(f"model.seed must be >= 0, got {seed}")
        if asr and vocoder is None:
            raise SlammingError(
                "model.asr is set but model.vocoder is not: ASR transcribes generated speech, so give a "
                "unit vocoder by class_path (slamming ships none; see slamming.eval.genppl.UnitVocoder)"
            )
        if text_lm and not asr:
            raise SlammingError("model.text_lm scores transcripts, so it needs model.asr (a Whisper folder)")
        self.output = Path(output)
        if (self.output / CONTINUATIONS).exists() and not overwrite:
            raise SlammingError(
                f"{self.output / CONTINUATIONS} already exists; set model.overwrite: true to replace it, "
                "or choose another model.output"
            )
        audio = self.output / "audio"
        if vocoder is not None and not overwrite and audio.is_dir() and any(audio.iterdir()):
            raise SlammingError(
                f"{audio} already holds files; set model.overwrite: true to replace them, "
                "or choose another model.output"
            )
        self.source = resolve_newest(model)
        loaded = load_unit_lm(self.source, dtype=dtype, attn_implementation=attn_implementation)
        self.model = loaded.model
        self.num_units = loaded.num_units
        self.tokenizer_identity = loaded.tokenizer
        self.tokenizer_dir = tokenizer or (str(loaded.tokenizer_dir) if loaded.tokenizer_dir else None)
        self.vocoder = vocoder
        self._speech_tokenizer: Any = None
        self._records: dict[int, dict[str, Any]] = {}

    # -- setup -------------------------------------------------------------------------------------------
    def on_predict_start(self) -> None:
        if self.hparams.dtype is not None:  # a "-true" trainer precision may have cast it since
            self.model.to(DTYPES[self.hparams.dtype])
        data = self.trainer.datamodule
        kind = getattr(data, "kind", None)
        if kind == "audio":
            if self.tokenizer_dir is None:
                raise SlammingError(
                    f"{self.source} records no tokeniser folder, so audio prompts cannot be tokenised; set "
                    "model.tokenizer to the folder of the tokeniser the model was trained with"
                )
            self._speech_tokenizer = load_tokenizer(self.tokenizer_dir, device=self.device)
            if self.tokenizer_identity is not None:
                check_identity(
                    self.tokenizer_identity,
                    self._speech_tokenizer.identity,
                    what=f"tokeniser {self.tokenizer_dir} (vs the model {self.source})",
                )
        elif kind == "units":
            identity = getattr(data, "tokenizer", None)
            if identity is not None and self.tokenizer_identity is not None:
                check_identity(
                    self.tokenizer_identity, identity, what=f"prompts {data.prompts} (vs the model)"
                )
        if data is not None and hasattr(data, "describe"):
            log.info("continuing %s with %s", data.describe(), self.source)
        self._records = {}

    # -- generation --------------------------------------------------------------------------------------
    def _prompt_units(self, item: dict[str, Any]) -> np.ndarray:
        if item.get("waveform") is not None:
            units, _durations = self._speech_tokenizer.encode(item["waveform"].to(self.device))
            units = np.asarray(units, dtype=np.int64)
        else:
            units = np.asarray(item["units"], dtype=np.int64)
        if units.size and int(units.max()) >= self.num_units:
            raise SlammingError(
                f"prompt {item['id']!r} holds unit {int(units.max())} but the model reads K={self.num_units} "
                "units; give prompts made with the model's tokeniser"
            )
        return units

    @torch.inference_mode()
    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> list[dict[str, Any]]:
        prompts = [self._prompt_units(item) for item in batch]
        seeds = [prompt_seed(self.hparams.seed, int(item["index"])) for item in batch]
        with scoring_model(self.model, self.hparams.dtype) as model:
            continuations = sample_continuations(model, prompts, seeds, self.settings)
        for item, units, cont in zip(batch, prompts, continuations, strict=True):
            index = int(item["index"])
            record: dict[str, Any] = {
                "index": index,
                "id": item["id"],
                "prompt_units": units.tolist(),
                "continuation_units": cont.units.tolist(),
                "new_tokens": len(cont.units),
                "eos": cont.eos,
                "seed": cont.seed,
                "sampling": self.settings.to_dict(),
                "auto_bleu_units": unit_auto_bleu(cont.units),
            }
            if self.vocoder is not None:
                wav, rate = self.vocoder(np.concatenate([units, cont.units]))
                path = self.output / "audio" / f"{index:06d}.wav"
                write_wav(path, wav, int(rate), overwrite=self.hparams.overwrite)
                record["audio"] = str(path.relative_to(self.output))
            self._records[index] = record
        return [self._records[int(item["index"])] for item in batch]

    # -- results -----------------------------------------------------------------------------------------
    def _gathered(self) -> list[dict[str, Any]]:
        """Every rank's records, merged by prompt index (every rank gets them; rank 0 writes)."""
        parts = [self._records]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
            torch.distributed.all_gather_object(parts, self._records)
        merged: dict[int, dict[str, Any]] = {}
        for part in parts:
            merged.update(part)
        return [merged[i] for i in sorted(merged)]

    def _score_speech(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Transcribe the audio (``asr``) and score the transcripts (``text_lm``); per-record fields too."""
        hp = self.hparams
        transcriber = WhisperTranscriber(hp.asr, language=hp.asr_language, device=self.device)
        waves = [read_audio(self.output / r["audio"], transcriber.sample_rate) for r in records]
        transcripts = transcriber.transcribe(waves, transcriber.sample_rate)
        del transcriber
        for record, text in zip(records, transcripts, strict=True):
            record["transcript"] = text
            record["auto_bleu_words"] = auto_bleu(text)
        metrics: dict[str, Any] = {
            "asr": hp.asr,
            "empty_transcripts": sum(1 for t in transcripts if not t.strip()),
            "auto_bleu_words": _mean([r["auto_bleu_words"] for r in records]),
        }
        if hp.text_lm:
            judge = TextPerplexity(hp.text_lm, gguf_file=hp.text_lm_gguf, device=self.device)
            nlls = judge.mean_nll(transcripts)
            for record, nll in zip(records, nlls, strict=True):
                record["nll"] = nll if math.isfinite(nll) else None
            value = genppl(nlls)
            metrics.update(
                text_lm=hp.text_lm,
                scored_transcripts=sum(1 for x in nlls if math.isfinite(x)),
                mean_nll=_mean(nlls),
                genppl=value if math.isfinite(value) else None,
            )
        return metrics

    def on_predict_end(self) -> None:
        records = self._gathered()
        if not self.trainer.is_global_zero:
            return
        metrics: dict[str, Any] = {
            "model": self.source,
            "prompts": len(records),
            "seed": self.hparams.seed,
            "sampling": self.settings.to_dict(),
            "mean_new_tokens": _mean([float(r["new_tokens"]) for r in records]),
            "eos_fraction": _mean([float(r["eos"]) for r in records]),
            "auto_bleu_units": _mean([r["auto_bleu_units"] for r in records]),
        }
        if self.hparams.asr and records:
            metrics.update(self._score_speech(records))
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        write_atomic(self.output / CONTINUATIONS, lines)
        write_atomic(self.output / METRICS, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        shown = {
            k: metrics[k]
            for k in ("auto_bleu_units", "auto_bleu_words", "genppl")
            if metrics.get(k) is not None
        }
        log.info(
            "wrote %d continuation(s) to %s (%s)",
            len(records),
            self.output / CONTINUATIONS,
            ", ".join(f"{k} {v:.4f}" for k, v in shown.items()),
        )
