"""Speak → tokenise: the one pipeline behind every builder that turns texts into speech or units.

The synthetic pretraining corpora, the spoken preference triples and the embedded pair benchmarks
all speak a planned list of :class:`~slamming.speech.tts.SpeechJob` in order on a thread pool, look
at the results a few at a time (one story, a prompt/chosen/rejected triple, a positive/negative
pair), optionally tokenise each waveform, and then write their own format. :func:`speak_groups`
is that shared part: it yields the utterances ``group`` at a time under one progress bar that
counts groups, and closing it early stops the synthesis threads (queued jobs are dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from slamming.speech.tokenizers.base import UnitTokenizer
from slamming.speech.tts import (
    SpeechJob,
    TTSEngine,
    WordTiming,
    synthesize_many,
    synthesize_many_with_timings,
)

__all__ = ["Spoken", "speak_groups"]


@dataclass(frozen=True)
class Spoken:
    """One spoken job: its waveform, word timings (None when the engine gives none) and units.

    ``units``/``durations`` are None when :func:`speak_groups` ran without a tokeniser.
    """

    job: SpeechJob
    wav: torch.Tensor
    words: list[WordTiming] | None
    units: np.ndarray | None = None
    durations: np.ndarray | None = None


def speak_groups(
    engine: TTSEngine,
    jobs: Sequence[SpeechJob],
    *,
    desc: str,
    group: int = 1,
    unit: str = "utt",
    tokenizer: UnitTokenizer | None = None,
    timings: bool = False,
    spoken: Sequence[tuple[torch.Tensor, list[WordTiming] | None]] = (),
    workers: int = 2,
    progress: bool = True,
    encode_batch: int = 32,
) -> Iterator[list[Spoken]]:
    """Speak ``jobs`` in order and yield them ``group`` at a time, tokenised when asked.

    Args:
        engine: the TTS engine.
        jobs: the planned utterances, ``group`` consecutive jobs per yielded group.
        desc: the progress bar's label (it says which part of a build is being spoken).
        group: how many consecutive jobs make one yielded group (1 story, 3 for a triple, 2 for a pair).
        unit: the progress bar's unit (what a group is).
        tokenizer: when given, each waveform is encoded into units and run lengths.
        timings: ask the engine for word timings (only used when the engine supports them).
        spoken: ``(waveform, words)`` already made for the first jobs (e.g. while fitting the
            tokeniser); they are not synthesised again.
        workers: TTS threads.
        progress: show the bar.
        encode_batch: utterances tokenised together (whole groups, at least one group): a neural
            tokeniser's :meth:`~slamming.speech.tokenizers.base.UnitTokenizer.encode_batch` runs them
            as one batch, which is several times faster than one at a time on a CPU. Without a
            tokeniser every group is yielded as soon as it is spoken.

    Yields:
        Lists of ``group`` :class:`Spoken`, in job order.

    Raises:
        ValueError: ``len(jobs)`` is not a multiple of ``group``, or more ``spoken`` than jobs.
    """
    if group < 1 or len(jobs) % group:
        raise ValueError(f"{len(jobs)} jobs do not split into groups of {group}")
    if len(spoken) > len(jobs):
        raise ValueError(f"{len(spoken)} spoken utterances given for {len(jobs)} jobs")
    rest = jobs[len(spoken) :]
    stream: Iterator[tuple[torch.Tensor, list[WordTiming] | None]]
    if timings and engine.supports_timings:
        stream = synthesize_many_with_timings(engine, rest, workers=workers, progress=False)
    else:
        stream = _without_words(synthesize_many(engine, rest, workers=workers, progress=False))
    per_call = group if tokenizer is None else max(1, encode_batch // group) * group
    with tqdm(total=len(jobs) // group, desc=desc, unit=unit, disable=not progress) as bar:
        try:
            pending: list[Spoken] = []
            for i, job in enumerate(jobs):
                wav, words = spoken[i] if i < len(spoken) else next(stream)
                pending.append(Spoken(job, wav, words))
                if len(pending) == per_call or i == len(jobs) - 1:
                    if tokenizer is not None:
                        encoded = tokenizer.encode_batch([s.wav for s in pending])
                        pending = [
                            Spoken(s.job, s.wav, s.words, units, durations)
                            for s, (units, durations) in zip(pending, encoded, strict=True)
                        ]
                    for start in range(0, len(pending), group):
                        yield pending[start : start + group]
                        bar.update(1)
                    pending = []
        finally:
            stream.close()  # stops the TTS threads when the consumer stops early or fails


def _without_words(
    waves: Iterator[torch.Tensor],
) -> Iterator[tuple[torch.Tensor, list[WordTiming] | None]]:
    """``(waveform, None)`` for each waveform; closing it closes ``waves`` (and its threads)."""
    try:
        for wav in waves:
            yield wav, None
    finally:
        waves.close()
