"""AudioFileDecoder: fairseq2's decoder for WAV/FLAC gives read_audio's samples and read_audio's errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from slamming.data.audio.decode import AudioFileDecoder
from slamming.errors import AudioError
from slamming.speech.audio import read_audio


def _signal(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([mono * (0.5 + 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("rate", "channels", "fmt", "subtype"),
    [
        (16000, 1, "FLAC", "PCM_16"),  # LibriSpeech / LibriLight
        (16000, 1, "FLAC", "PCM_24"),
        (24000, 1, "WAV", "PCM_16"),  # the authors' TTS output
        (44100, 2, "WAV", "PCM_16"),
        (22050, 2, "FLAC", "PCM_16"),
        (48000, 3, "WAV", "PCM_16"),  # more than two channels: read_audio's own layout
        (8000, 1, "WAV", "FLOAT"),
        (22050, 1, "OGG", "VORBIS"),  # not a native suffix: soundfile decodes it
    ],
)
def test_same_samples_as_read_audio(tmp_path: Path, rate: int, channels: int, fmt: str, subtype: str) -> None:
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, _signal(1.3, rate, channels, seed=rate + channels), rate, format=fmt, subtype=subtype)
    expected = read_audio(path, 16000)
    for native in (True, False):
        got = AudioFileDecoder(16000, native=native)(path)
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got, expected), (fmt, subtype, native)
    assert AudioFileDecoder(24000)(path).shape == read_audio(path, 24000).shape


def test_streamed_wav_header_decodes_like_read_audio(tmp_path: Path) -> None:
    # A WAV written to a pipe (espeak-ng --stdout) declares a placeholder length: libsndfile logs
    # "should be", the native path hands the file to read_audio, which accepts it.
    sf.write(tmp_path / "a.wav", _signal(0.25, 16000, 1, seed=1), 16000, subtype="PCM_16")
    data = bytearray((tmp_path / "a.wav").read_bytes())
    assert data[36:40] == b"data"
    data[40:44] = struct.pack("<I", 0x7FFFF000)
    data[4:8] = struct.pack("<I", 0x7FFFF024)
    path = tmp_path / "streamed.wav"
    path.write_bytes(bytes(data))
    assert torch.equal(AudioFileDecoder(16000)(path), read_audio(path)) and read_audio(path).shape == (4000,)


def _bad_files(root: Path) -> dict[str, Path]:
    sf.write(root / "full.wav", _signal(1.0, 16000, 1, seed=2), 16000, subtype="PCM_16")
    wav = (root / "full.wav").read_bytes()
    sf.write(root / "full.flac", _signal(1.0, 16000, 1, seed=3), 16000)
    flac = (root / "full.flac").read_bytes()
    nan = _signal(0.1, 16000, 1, seed=4)
    nan[10] = np.nan
    files = {
        "missing": root / "missing.wav",
        "directory": root / "dir.flac",
        "empty": root / "empty.wav",
        "not audio": root / "text.wav",
        "header cut short": root / "cut.wav",
        "wav truncated in its data": root / "half.wav",
        "flac truncated": root / "half.flac",
        "zero frames": root / "zero.wav",
        "nan": root / "nan.wav",
    }
    files["directory"].mkdir()
    files["empty"].write_bytes(b"")
    files["not audio"].write_text("hello, this is not audio " * 20)
    files["header cut short"].write_bytes(wav[:30])
    files["wav truncated in its data"].write_bytes(wav[: len(wav) // 2])
    files["flac truncated"].write_bytes(flac[: len(flac) // 2])
    sf.write(files["zero frames"], np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    sf.write(files["nan"], nan, 16000, subtype="FLOAT")
    return files


def test_bad_files_raise_read_audios_one_line_error(tmp_path: Path) -> None:
    decoder = AudioFileDecoder(16000)
    for what, path in _bad_files(tmp_path).items():
        with pytest.raises(AudioError) as expected:
            read_audio(path)
        with pytest.raises(AudioError) as got:
            decoder(path)
        assert str(got.value) == str(expected.value), what
        assert str(path) in str(got.value) and "\n" not in str(got.value)
    with pytest.raises(AudioError, match="truncated"):
        decoder(tmp_path / "half.wav")  # libsndfile would read half of it without an error
