"""Train a :class:`~slamming.speech.tokenizers.phone.PhoneTokenizer`: CTC on speech and phoneme strings.

The labels are espeak-ng's phonemes of each utterance's text (:func:`slamming.speech.phonemes.espeak_phonemes`),
with no timings: CTC finds the alignment. Only training reads text; the trained tokeniser maps audio
to units alone. Utterances are batched by length (so little of a batch is padding). The first pass
visits the batches shortest first (SortaGrad, Deep Speech 2: short utterances are easy to align, and
here they got the recogniser off CTC's all-blank plateau after about 250 steps instead of 325), then
in a seeded random order. AdamW with a short warmup, a constant learning rate, and a cosine decay
to a tenth of it over the last 30 % of the steps; gradients clipped. The run is sized in steps, not
seconds, so the same settings give the same recogniser on any CPU.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from slamming.errors import ConfigError, SlammingError
from slamming.speech.features import MFCCFeatures
from slamming.speech.tokenizers.phone import PhoneRecognizer, PhoneTokenizer

__all__ = [
    "PhoneTraining",
    "edit_distance",
    "phoneme_error_rate",
    "train_phone_tokenizer",
    "unit_disagreement",
]


@dataclass(frozen=True)
class PhoneTraining:
    """What a training run did: steps, seconds, the loss at the start and the end (mean of the last
    10 steps), and the utterances and hours of speech it learnt from."""

    steps: int
    seconds: float
    first_loss: float
    final_loss: float
    utterances: int
    hours: float


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance between two sequences (insertions, deletions and substitutions cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, item in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other)))
        previous = current
    return previous[-1]


def unit_disagreement(a: Sequence[Sequence[object]], b: Sequence[Sequence[object]]) -> float:
    """How much two tokenisations of the same utterances differ: the mean over utterances of the
    edit distance between their unit strings, over the longer one (0 = the same units, 1 = nothing
    shared). Given the same texts in two voices, it measures how much the units change with the voice.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same non-zero number of utterances, got {len(a)} and {len(b)}")
    return float(
        np.mean([edit_distance(list(x), list(y)) / max(len(x), len(y), 1) for x, y in zip(a, b, strict=True)])
    )


def phoneme_error_rate(
    tokenizer: PhoneTokenizer, wavs: Sequence[torch.Tensor], labels: Sequence[Sequence[str]]
) -> float:
    """Edit distance between the recognised and the reference phonemes, over all reference phonemes."""
    errors = total = 0
    for (units, _), reference in zip(tokenizer.encode_batch(wavs), labels, strict=True):
        errors += edit_distance(tokenizer.spell(units), list(reference))
        total += len(reference)
    return errors / max(total, 1)


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first within the sort)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def train_phone_tokenizer(
    wavs: Sequence[torch.Tensor],
    labels: Sequence[Sequence[str]],
    steps: int = 500,
    batch_size: int = 16,
    lr: float = 5e-3,
    warmup_steps: int = 20,
    seed: int = 0,
    channels: int = 128,
    hidden: int = 128,
    layers: int = 2,
    progress: bool = True,
    k: int | None = None,
) -> tuple[PhoneTokenizer, PhoneTraining]:
    """Train a phone recogniser on ``wavs`` with CTC against ``labels`` and wrap it as a tokeniser.

    Args:
        wavs: ``(N,)`` 16 kHz mono waveforms.
        labels: each waveform's phoneme symbols (e.g. from :func:`~slamming.speech.phonemes.espeak_phonemes`).
        steps: optimiser steps.
        batch_size: utterances per step.
        lr: peak AdamW learning rate.
        warmup_steps: linear warmup before the cosine decay.
        seed: seeds the initial weights and the batch order.
        channels, hidden, layers: the recogniser's size (see :class:`PhoneTokenizer`).
        progress: show a progress bar.
        k: the tokeniser's number of units (see :class:`PhoneTokenizer`); the phonemes found when None.

    Returns:
        The trained tokeniser (in eval mode, on the CPU) and a :class:`PhoneTraining` summary.

    Raises:
        ConfigError: ``steps``, ``batch_size`` or ``lr`` out of range.
        SlammingError: no utterances, lengths that differ, an empty label, or a label too long for
            its audio (CTC needs at least one output frame per phoneme).
    """
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ConfigError(f"steps and batch_size must be >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    if len(wavs) == 0 or len(wavs) != len(labels):
        raise SlammingError(
            f"got {len(wavs)} waveforms and {len(labels)} labels; give one label per waveform"
        )
    if any(len(label) == 0 for label in labels):
        raise SlammingError("an utterance has no phonemes; drop texts that espeak-ng reads as nothing")
    started = time.perf_counter()
    phonemes = sorted({symbol for label in labels for symbol in label})
    index = {symbol: i + 1 for i, symbol in enumerate(phonemes)}  # 0 is the CTC blank
    features = MFCCFeatures(n_mfcc=13, deltas=True, normalize=False)  # PhoneTokenizer's input
    raw = [features.frames(wav) for wav in wavs]
    stacked = torch.cat(raw).double()
    mean, std = stacked.mean(dim=0).float(), stacked.std(dim=0, unbiased=False).float().clamp_min(1e-5)
    frames = [(f - mean) / std for f in raw]
    del raw, stacked
    targets = [torch.tensor([index[s] for s in label], dtype=torch.int64) for label in labels]
    for i, (f, t) in enumerate(zip(frames, targets, strict=True)):
        if int(PhoneRecognizer.output_lengths(torch.tensor(len(f)))) < len(t):
            raise SlammingError(
                f"utterance {i} has {len(t)} phonemes but only {len(f) / 100:.2f} s of audio; "
                "check that each label belongs to its waveform"
            )
    torch.manual_seed(seed)
    tokenizer = PhoneTokenizer(phonemes, mean.tolist(), std.tolist(), k, channels, hidden, layers)
    model = tokenizer.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    decay_from = int(0.7 * steps)  # CTC leaves its all-blank plateau at a varying step: hold lr till then

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_ = (step - decay_from) / max(steps - decay_from, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(max(progress_, 0.0), 1.0)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    batches = _batches([len(f) for f in frames], batch_size)
    rng = random.Random(seed)
    queue = list(batches)  # popped from the end: shortest first
    losses: list[float] = []
    bar = tqdm(total=steps, desc="Training the phone recogniser", unit="step", disable=not progress)
    for _ in range(steps):
        if not queue:
            queue = rng.sample(batches, len(batches))
        batch = queue.pop()
        lengths = torch.tensor([len(frames[i]) for i in batch])
        padded = nn.utils.rnn.pad_sequence([frames[i] for i in batch], batch_first=True)
        logits, out_lengths = model(padded, lengths, pack=False)
        log_probs = logits.log_softmax(dim=-1).transpose(0, 1)
        target_lengths = torch.tensor([len(targets[i]) for i in batch])
        loss = ctc(log_probs, torch.cat([targets[i] for i in batch]), out_lengths, target_lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    seconds = sum(len(f) for f in frames) / 100
    summary = PhoneTraining(
        steps=steps,
        seconds=round(time.perf_counter() - started, 1),
        first_loss=losses[0],
        final_loss=float(np.mean(losses[-10:])),
        utterances=len(frames),
        hours=seconds / 3600,
    )
    return tokenizer, summary
