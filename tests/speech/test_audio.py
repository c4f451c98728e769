"""Audio I/O: reading, mixing, resampling and every kind of bad file."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from slamming.errors import AudioError, SlammingError
from slamming.speech.audio import (
    audio_key,
    decode_audio_bytes,
    read_audio,
    read_audio_file,
    resample,
    to_mono,
    write_wav,
)

PCM16_STEP = 1.0 / 32768


def sine(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(wav: torch.Tensor, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav.numpy() * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1 / sample_rate)[np.argmax(spectrum)])


def assert_one_line_naming(err: pytest.ExceptionInfo[AudioError], path: Path, *phrases: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    for phrase in phrases:
        assert phrase in message


def test_read_mono_16k_round_trips_within_pcm16_precision(tmp_path: Path) -> None:
    samples = sine(300, 0.5, 16000)
    sf.write(tmp_path / "a.wav", samples, 16000, subtype="PCM_16")
    wav = read_audio(tmp_path / "a.wav")
    assert wav.dtype == torch.float32 and wav.shape == (8000,)
    assert torch.allclose(wav, torch.from_numpy(samples), atol=PCM16_STEP)


def test_stereo_44k1_is_mixed_and_resampled(tmp_path: Path) -> None:
    left = sine(440, 1.0, 44100, amplitude=0.6)
    stereo = np.stack([left, 0.5 * left], axis=1)  # the mix is 0.75 x left
    sf.write(tmp_path / "stereo.wav", stereo, 44100, subtype="PCM_16")
    wav = read_audio(tmp_path / "stereo.wav", sample_rate=16000)
    assert abs(wav.shape[0] - 16000) <= 1
    assert dominant_frequency(wav, 16000) == pytest.approx(440, abs=1.0)
    # Away from the filter's edge effects the mixed sine keeps its amplitude: 0.75 * 0.6.
    middle = wav[2000:14000]
    assert float(middle.abs().max()) == pytest.approx(0.45, abs=0.01)
    assert float(middle.pow(2).mean().sqrt()) == pytest.approx(0.45 / np.sqrt(2), abs=0.01)


def test_stereo_mix_is_the_channel_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(1000, 2)).astype(np.float32)
    sf.write(tmp_path / "float.wav", stereo, 16000, subtype="FLOAT")
    wav = read_audio(tmp_path / "float.wav")
    assert torch.equal(wav, torch.from_numpy(stereo.mean(axis=1)))


def test_flac_and_upsampling(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.flac", sine(200, 0.5, 8000), 8000)
    wav = read_audio(tmp_path / "a.flac", sample_rate=16000)
    assert wav.shape == (8000,)
    assert dominant_frequency(wav, 16000) == pytest.approx(200, abs=2.0)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.wav"
    with pytest.raises(AudioError) as err:
        read_audio(path)
    assert_one_line_naming(err, path, "does not exist")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as err:
        read_audio(tmp_path)
    assert_one_line_naming(err, tmp_path, "not a file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as err:
        read_audio(path)
    assert_one_line_naming(err, path, "empty (0 bytes)", "re-export")


def test_text_file_renamed_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not audio\n" * 20)
    with pytest.raises(AudioError) as err:
        read_audio(path)
    assert_one_line_naming(
        err, path, "cannot decode", "Format not recognised", "re-export it as 16-bit WAV or FLAC"
    )


def test_header_cut_short(tmp_path: Path) -> None:
    sf.write(tmp_path / "full.wav", sine(300, 0.2, 16000), 16000, subtype="PCM_16")
    path = tmp_path / "cut.wav"
    path.write_bytes((tmp_path / "full.wav").read_bytes()[:30])
    with pytest.raises(AudioError) as err:
        read_audio(path)
    assert_one_line_naming(err, path, "cannot decode")


def test_wav_truncated_in_its_data(tmp_path: Path) -> None:
    sf.write(tmp_path / "full.wav", sine(300, 1.0, 16000), 16000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    path = tmp_path / "half.wav"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as err:
        read_audio(path)
    assert_one_line_naming(err, path, "truncated", "32000 data bytes")


def test_flac_truncated(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "full.flac", rng.uniform(-0.5, 0.5, 16000).astype(np.float32), 16000)
    data = (tmp_path / "full.flac").read_bytes()
    path = tmp_path / "half.flac"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as err:
        read_audio(path)
    assert_one_line_naming(err, path, "cannot decode")


def test_valid_header_with_zero_frames(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as err:
        read_audio(path)
    assert_one_line_naming(err, path, "0 frames")


def test_non_finite_samples(tmp_path: Path) -> None:
    samples = sine(300, 0.1, 16000)
    samples[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        read_audio(path)
    assert_one_line_naming(err, path, "NaN")


def test_audio_error_is_a_slamming_error() -> None:
    assert issubclass(AudioError, SlammingError)


def test_decode_bytes_matches_file(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", sine(300, 0.5, 22050), 22050, subtype="PCM_16")
    from_bytes = decode_audio_bytes((tmp_path / "a.wav").read_bytes(), sample_rate=16000)
    assert torch.equal(from_bytes, read_audio(tmp_path / "a.wav", sample_rate=16000))
    assert from_bytes.shape == (8000,)


def test_a_file_read_undecoded_is_named_by_its_bytes_and_rate(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", sine(300, 0.5, 16000), 16000, subtype="PCM_16")
    data = read_audio_file(tmp_path / "a.wav")
    assert data == (tmp_path / "a.wav").read_bytes()
    assert torch.equal(
        decode_audio_bytes(data, 16000, str(tmp_path / "a.wav")), read_audio(tmp_path / "a.wav")
    )
    key = audio_key(data, 16000)
    assert len(key) == 32 and key == audio_key(bytes(data), 16000)
    assert key != audio_key(data, 8000)  # another rate decodes to other samples
    assert key != audio_key(data[:-2] + b"\x01\x00", 16000)  # one sample differs
    for bad, phrase in ((tmp_path / "gone.wav", "does not exist"), (tmp_path, "not a file")):
        with pytest.raises(AudioError) as err:
            read_audio_file(bad)
        assert_one_line_naming(err, bad, phrase)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError) as err:
        read_audio_file(tmp_path / "empty.wav")
    assert_one_line_naming(err, tmp_path / "empty.wav", "empty (0 bytes)")


def test_decode_bytes_accepts_a_streamed_wav_header(tmp_path: Path) -> None:
    # A WAV written to a pipe declares a placeholder length (espeak-ng writes 0x7ffff000); that
    # means "unknown length", not truncation.
    sf.write(tmp_path / "a.wav", sine(300, 0.25, 16000), 16000, subtype="PCM_16")
    data = bytearray((tmp_path / "a.wav").read_bytes())
    assert data[36:40] == b"data"
    data[40:44] = struct.pack("<I", 0x7FFFF000)
    data[4:8] = struct.pack("<I", 0x7FFFF024)
    wav = decode_audio_bytes(bytes(data))
    assert wav.shape == (4000,)


def test_decode_bad_bytes_names_the_source() -> None:
    with pytest.raises(AudioError, match=r"audio clip-7 is empty \(0 bytes\)"):
        decode_audio_bytes(b"", name="clip-7")
    with pytest.raises(AudioError, match=r"cannot decode audio clip-8: .*Format not recognised"):
        decode_audio_bytes(b"not audio at all" * 10, name="clip-8")


def test_write_wav_is_16_bit_clips_and_round_trips(tmp_path: Path) -> None:
    wav = torch.tensor([0.0, 0.5, -0.25, 1.5, -1.5])
    path = write_wav(tmp_path / "sub" / "out.wav", wav, 16000)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    back = read_audio(path)
    # 1.5 is clipped to full scale instead of wrapping round to a negative sample.
    assert torch.allclose(back, torch.tensor([0.0, 0.5, -0.25, 1.0, -1.0]), atol=PCM16_STEP)


def test_write_wav_stereo_is_channels_first(tmp_path: Path) -> None:
    stereo = torch.tensor([[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5]])
    path = write_wav(tmp_path / "st.wav", stereo, 8000)
    data, _ = sf.read(str(path), dtype="float32")
    assert data.shape == (3, 2)
    assert np.allclose(data[:, 0], 0.5, atol=PCM16_STEP) and np.allclose(data[:, 1], -0.5, atol=PCM16_STEP)


def test_write_wav_never_overwrites_unless_asked(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "keep.wav", torch.full((100,), 0.25), 16000)
    with pytest.raises(AudioError) as err:
        write_wav(path, torch.zeros(50), 16000)
    assert_one_line_naming(err, path, "already exists", "overwrite=True")
    assert read_audio(path).shape == (100,)
    write_wav(path, torch.zeros(50), 16000, overwrite=True)
    assert read_audio(path).shape == (50,)


def test_to_mono_and_resample_shapes() -> None:
    stereo = torch.stack([torch.ones(10), torch.zeros(10)])
    assert torch.equal(to_mono(stereo), torch.full((10,), 0.5))
    mono = torch.arange(5.0)
    assert to_mono(mono) is mono
    one = torch.randn(1, 1000)
    assert torch.equal(to_mono(one), one.mean(dim=0)) and to_mono(one).shape == (1000,)
    with pytest.raises(ValueError):
        to_mono(torch.zeros(1, 2, 3))
    assert resample(mono, 16000, 16000) is mono
    assert resample(torch.zeros(22050), 22050, 16000).shape == (16000,)
    with pytest.raises(ValueError):
        resample(mono, 0, 16000)
