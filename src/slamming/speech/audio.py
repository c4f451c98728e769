"""Audio input and output: the one place that reads, mixes and resamples waveforms.

Every waveform in slamming enters through :func:`read_audio` or :func:`decode_audio_bytes` and comes
out as a 1-D ``float32`` tensor, mono, at the requested sample rate (16 kHz for the tokenisers).

File I/O uses ``soundfile`` (its wheel bundles libsndfile, so WAV, FLAC and OGG work with nothing
from apt). ``torchaudio.load`` is deliberately not used: in torchaudio 2.9 it needs torchcodec and
ffmpeg. torchaudio is only used for resampling.

Bad input raises :class:`~slamming.errors.AudioError` with one line that names the file and the fix:
a missing path, an empty (0-byte) file, a file that is not audio, a corrupt or truncated file, a file
whose header is valid but holds 0 frames, and audio with NaN or infinite samples.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from slamming.errors import AudioError

__all__ = [
    "audio_key",
    "decode_audio_bytes",
    "read_audio",
    "read_audio_file",
    "resample",
    "to_mono",
    "write_wav",
]

# libsndfile logs "data : <declared> (should be <available>)" when a WAV's data chunk claims more
# bytes than the file holds, i.e. the file was cut short. It then silently reads what is there, so
# the log is the only place the truncation shows up.
_TRUNCATED_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be\s*(\d+)\)", re.MULTILINE)
# Programs that write WAV to a pipe (espeak-ng --stdout, sox -) cannot seek back to fill in the
# length, so they declare a huge placeholder (0x7ffff000, 0xffffffff). That means "unknown length",
# not truncation.
_STREAMING_PLACEHOLDER = 0x7FFF0000

_FIX_DECODE = "re-export it as 16-bit WAV or FLAC, or remove it from the data"


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """Mix a waveform down to one channel by averaging the channels.

    Args:
        wav: ``(T,)`` (already mono) or ``(C, T)`` channels-first, as torchaudio lays out audio.

    Returns:
        ``(T,)`` tensor of the same dtype.

    Raises:
        ValueError: if ``wav`` is not 1-D or 2-D.
    """
    if wav.dim() == 1:
        return wav
    if wav.dim() == 2:
        # One channel is its own mean. Taken as a view: torch's mean over a dimension of size 1
        # costs ~1.5 ms per 15 s of audio on one thread and ~40 ms with two busy ones (2026-12-03).
        return wav[0] if wav.shape[0] == 1 else wav.mean(dim=0)
    raise ValueError(f"expected a (T,) or (C, T) waveform, got shape {tuple(wav.shape)}")


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample along the last dimension with torchaudio's band-limited sinc interpolation.

    Args:
        wav: waveform, time on the last dimension.
        orig_sr: its sample rate in Hz.
        new_sr: the wanted sample rate in Hz.

    Returns:
        The resampled waveform (the input itself when the rates are equal).
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return wav
    import torchaudio  # here, not at import: training paths that never resample need no torchaudio

    return torchaudio.functional.resample(wav, int(orig_sr), int(new_sr))


def _truncation(info: str) -> tuple[int, int] | None:
    """Declared and available data bytes if libsndfile's log shows a cut-short WAV, else None."""
    match = _TRUNCATED_DATA.search(info)
    if match is None:
        return None
    declared, available = int(match.group(1)), int(match.group(2))
    if declared >= _STREAMING_PLACEHOLDER:
        return None
    return declared, available


def _decode(source: str | io.BytesIO, name: str, sample_rate: int) -> torch.Tensor:
    """Decode ``source`` with soundfile and apply the checks and conversions shared by both readers."""
    try:
        with sf.SoundFile(source) as handle:
            orig_sr = handle.samplerate
            truncated = _truncation(handle.extra_info)
            data = handle.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        # libsndfile's text ("Format not recognised", "flac decoder lost sync") says what is wrong;
        # collapse it to one line so the CLI prints a single line.
        reason = " ".join(str(err).split())
        raise AudioError(
            f"cannot decode audio {name}: {reason}; it is not audio or it is corrupt — {_FIX_DECODE}"
        ) from err
    if truncated is not None:
        declared, available = truncated
        raise AudioError(
            f"audio {name} is truncated: its header declares {declared} data bytes but only {available} "
            f"are present; {_FIX_DECODE}"
        )
    if data.shape[0] == 0:
        raise AudioError(f"audio {name} holds no samples (0 frames); re-export it or remove it from the data")
    if not np.isfinite(data).all():
        raise AudioError(f"audio {name} contains NaN or infinite samples; {_FIX_DECODE}")
    # soundfile gives (frames, channels); torchaudio's convention is channels first.
    wav = to_mono(torch.from_numpy(data.T.copy()))
    return resample(wav, orig_sr, sample_rate).contiguous()


def read_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> torch.Tensor:
    """Read an audio file as a mono ``float32`` waveform at ``sample_rate``.

    Channels are averaged; any other sample rate is resampled. Formats are those of libsndfile
    (WAV, FLAC, OGG/Vorbis, MP3 with libsndfile >= 1.1, ...).

    Args:
        path: the audio file.
        sample_rate: the wanted sample rate in Hz.

    Returns:
        ``(T,)`` float32 tensor.

    Raises:
        AudioError: the file is missing, empty, not audio, corrupt or truncated, or holds no samples.
    """
    path = _checked_file(path)
    return _decode(str(path), str(path), sample_rate)


def _checked_file(path: str | os.PathLike[str]) -> Path:
    """``path`` when it is a non-empty file, else one-line :class:`AudioError`."""
    path = Path(path)
    if not path.exists():
        raise AudioError(
            f"audio file {path} does not exist; check the path (or the manifest line that names it)"
        )
    if not path.is_file():
        raise AudioError(f"audio path {path} is not a file; give the path of an audio file, not a directory")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); re-export it or remove it from the data")
    return path


def read_audio_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an audio file, undecoded, after :func:`read_audio`'s checks of the path.

    With :func:`audio_key` and :func:`decode_audio_bytes` a caller names the audio by its content
    and decodes it only when it needs the samples (a benchmark whose units are cached does not).

    Raises:
        AudioError: the file is missing, not a file, or empty.
    """
    return _checked_file(path).read_bytes()


def audio_key(data: bytes, sample_rate: int) -> str:
    """32 hex digits naming what an audio file's bytes decode to at ``sample_rate``: a digest of
    the bytes and the rate. Equal bytes give equal waveforms, so equal keys give equal units."""
    digest = hashlib.blake2b(data, digest_size=16)
    digest.update(f"@{int(sample_rate)}Hz".encode())
    return digest.hexdigest()


def decode_audio_bytes(data: bytes, sample_rate: int = 16000, name: str = "<bytes>") -> torch.Tensor:
    """Decode an in-memory audio file (WAV/FLAC/... bytes) like :func:`read_audio`.

    Args:
        data: the encoded file contents.
        sample_rate: the wanted sample rate in Hz.
        name: what to call the data in error messages (an archive member, a URL, a TTS request).

    Returns:
        ``(T,)`` float32 tensor.

    Raises:
        AudioError: the bytes are empty, not audio, corrupt or truncated, or hold no samples.
    """
    if len(data) == 0:
        raise AudioError(f"audio {name} is empty (0 bytes); re-create it or remove it from the data")
    return _decode(io.BytesIO(data), name, sample_rate)


def write_wav(
    path: str | os.PathLike[str], wav: torch.Tensor, sample_rate: int, overwrite: bool = False
) -> Path:
    """Write a waveform as a 16-bit PCM WAV file.

    Samples are clipped to [-1, 1] first: libsndfile's float-to-int conversion does not clip by
    default, so an overshooting sample would wrap around to the opposite sign and click.

    Args:
        path: destination file; its parent directories are created.
        wav: ``(T,)`` mono or ``(C, T)`` channels-first waveform with samples in [-1, 1].
        sample_rate: sample rate in Hz written to the header.
        overwrite: replace an existing file. Off by default so nothing a user made is lost.

    Returns:
        The path written.

    Raises:
        AudioError: the file exists and ``overwrite`` is False.
        ValueError: ``wav`` is not 1-D or 2-D.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise AudioError(f"audio file {path} already exists; pass overwrite=True or choose another path")
    if wav.dim() not in (1, 2):
        raise ValueError(f"expected a (T,) or (C, T) waveform, got shape {tuple(wav.shape)}")
    samples = wav.detach().to("cpu", torch.float32).clamp(-1.0, 1.0).numpy()
    if samples.ndim == 2:
        samples = samples.T  # soundfile wants (frames, channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, int(sample_rate), subtype="PCM_16", format="WAV")
    return path
