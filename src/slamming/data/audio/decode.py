"""Decode the files of an audio manifest: fairseq2's native decoder for WAV/FLAC, soundfile behind it.

:class:`AudioFileDecoder` returns exactly what :func:`slamming.speech.audio.read_audio` returns — a
mono float32 waveform at the wanted rate, the same samples (``bench/audio_bench.py`` checks every
file) — and raises the same :class:`~slamming.errors.AudioError` for bad input, but decodes WAV and
FLAC with fairseq2's ``AudioDecoder`` (libsndfile called from C++ on a memory-mapped file).
``read_audio`` stays the one source of truth: every file the fast path cannot vouch for goes to it,
which either decodes it or raises its one-line error. That covers

- other formats (OGG/Vorbis, MP3, ...): decoder versions may differ between fairseq2's libsndfile and
  soundfile's bundled one, so only PCM WAV and FLAC, whose float conversion is exact, use the fast path;
- a missing, empty or unreadable file, or one the native decoder refuses;
- a WAV whose header declares more data than the file holds: libsndfile then reads what is there
  without an error and only says so in its log, which soundfile exposes (``soundfile.info``'s
  ``extra_info``); any "should be" in that log sends the file to ``read_audio``, whose check tells a
  real truncation from the placeholder length of a streamed WAV;
- 0 frames or non-finite samples (``read_audio`` names them).

Mixing (channel mean) and resampling are :func:`slamming.speech.audio.to_mono` and
:func:`slamming.speech.audio.resample`, so both paths share them too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from slamming.speech.audio import read_audio, resample, to_mono

__all__ = ["NATIVE_SUFFIXES", "AudioFileDecoder"]

#: File suffixes (lower case) decoded by fairseq2's ``AudioDecoder``; everything else by soundfile.
NATIVE_SUFFIXES = (".wav", ".flac")

_WAV_LOG_MARKER = "should be"  # libsndfile's "data : <declared> (should be <available>)"


class AudioFileDecoder:
    """``decoder(path)`` → ``(T,)`` float32 mono waveform at ``sample_rate``, as ``read_audio(path)``.

    Args:
        sample_rate: the rate of the returned waveforms.
        native: decode WAV and FLAC with fairseq2's ``AudioDecoder``; False uses soundfile
            (:func:`~slamming.speech.audio.read_audio`) for every file.

    Raises (when called):
        AudioError: the file is missing, empty, not audio, corrupt, truncated, holds no samples or
            non-finite ones (``read_audio``'s message).
    """

    def __init__(self, sample_rate: int = 16000, native: bool = True) -> None:
        self.sample_rate = int(sample_rate)
        self.native = bool(native)
        self._mapper: Any = None
        self._decoder: Any = None
        if self.native:
            from fairseq2.data.audio import AudioDecoder
            from fairseq2.data.data_pipeline import FileMapper

            self._mapper = FileMapper()
            self._decoder = AudioDecoder(keepdim=True, dtype=torch.float32)

    def _fallback(self, path: Path) -> torch.Tensor:
        return read_audio(path, self.sample_rate)

    def __call__(self, path: str | os.PathLike[str]) -> torch.Tensor:
        path = Path(path)
        if not self.native or path.suffix.lower() not in NATIVE_SUFFIXES:
            return self._fallback(path)
        try:
            if path.stat().st_size == 0:
                return self._fallback(path)
            if path.suffix.lower() == ".wav" and _WAV_LOG_MARKER in sf.info(str(path)).extra_info:
                return self._fallback(path)
            decoded = self._decoder(self._mapper(str(path))["data"])
        except Exception:  # noqa: BLE001 - read_audio decodes it or raises the one-line AudioError
            return self._fallback(path)
        wav = decoded["waveform"]  # (frames, channels): keepdim=True
        # One NaN or inf makes the sum non-finite; so can an overflow of huge float samples, which
        # only costs a second decode by read_audio. Cheaper than an elementwise isfinite.
        if wav.shape[0] == 0 or not bool(torch.isfinite(wav.sum())):
            return self._fallback(path)
        return resample(_channel_mean(wav), int(decoded["sample_rate"]), self.sample_rate).contiguous()


def _channel_mean(wav: torch.Tensor) -> torch.Tensor:
    """``to_mono`` of the ``(channels, frames)`` copy read_audio makes, bit for bit, from ``(frames, channels)``.

    One channel is its own mean; two give ``(a + b) / 2`` (one rounded addition, an exact halving:
    what the mean computes), without the transposing copy that costs more than the decode itself
    (perf-log 2026-12-02). More channels take read_audio's own layout.
    """
    channels = wav.shape[1]
    if channels == 1:
        return wav[:, 0]
    if channels == 2:
        return (wav[:, 0] + wav[:, 1]) / 2
    return to_mono(torch.from_numpy(wav.numpy().T.copy()))
