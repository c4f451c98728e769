"""MFCC frames, pooling, and change-point segmentation on frames whose change points are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slamming.errors import AudioError
from slamming.speech.features import MFCCFeatures, segment_features


def steps(levels: list[float], lengths: list[int], dim: int = 3) -> torch.Tensor:
    """Piecewise-constant (T, dim) frames: ``levels[i]`` repeated ``lengths[i]`` times."""
    rows = [torch.full((n, dim), float(v)) for v, n in zip(levels, lengths, strict=True)]
    return torch.cat(rows)


def line(increments: list[float]) -> torch.Tensor:
    """(T, 1) frames whose frame-to-frame distances are exactly ``increments``."""
    return torch.tensor(np.concatenate([[0.0], np.cumsum(increments)]), dtype=torch.float32).unsqueeze(1)


def starts(lengths: torch.Tensor) -> list[int]:
    return np.cumsum(lengths.numpy())[:-1].tolist()


def test_one_second_gives_100_frames_and_25_pooled() -> None:
    wav = torch.randn(16000, generator=torch.Generator().manual_seed(0)) * 0.1
    features = MFCCFeatures()
    assert features.frames(wav).shape == (100, 13)
    assert features(wav).shape == (25, 13)
    assert MFCCFeatures(frame_rate=50)(wav).shape == (50, 13)
    with_deltas = MFCCFeatures(deltas=True)
    assert with_deltas.dim == 39 and with_deltas(wav).shape == (25, 39)


def test_frames_are_normalised_per_utterance() -> None:
    wav = torch.randn(24000, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.01
    frames = MFCCFeatures().frames(wav)
    assert frames.dtype == torch.float32
    assert torch.allclose(frames.mean(dim=0), torch.zeros(13), atol=1e-4)
    assert torch.allclose(frames.std(dim=0, unbiased=False), torch.ones(13), atol=1e-3)
    raw = MFCCFeatures(normalize=False).frames(wav)
    assert not torch.allclose(raw.mean(dim=0), torch.zeros(13), atol=1e-2)


def test_pool_keeps_the_partial_last_group() -> None:
    features = MFCCFeatures(frame_rate=25)
    frames = torch.arange(10, dtype=torch.float32).unsqueeze(1)  # 10 frames -> groups of 4, 4, 2
    assert features.pool(frames).flatten().tolist() == [1.5, 5.5, 8.5]
    wav = torch.zeros(16160)  # 1.01 s -> 101 frames -> 26 pooled
    wav[::7] = 0.5
    assert features(wav).shape == (26, 13)


def test_spectral_change_in_real_audio_becomes_a_boundary() -> None:
    t = torch.arange(8000) / 16000
    tone = 0.5 * torch.sin(2 * torch.pi * 300 * t)
    hiss = 0.3 * torch.randn(8000, generator=torch.Generator().manual_seed(2))
    frames = MFCCFeatures().frames(torch.cat([tone, hiss]))  # the change is at frame 50
    _, lengths = segment_features(frames)
    assert any(abs(s - 50) <= 2 for s in starts(lengths))
    assert all(abs(s - 50) > 2 for s in starts(lengths) if s < 45)  # the steady tone is not cut


def test_too_short_or_wrong_shape_audio() -> None:
    features = MFCCFeatures()
    with pytest.raises(AudioError, match=r"159 samples is shorter than one 10 ms frame"):
        features.frames(torch.zeros(159))
    assert features.frames(torch.randn(170)).shape == (1, 13)  # shorter than half a window: padded
    with pytest.raises(ValueError, match="to_mono"):
        features.frames(torch.zeros(2, 16000))
    with pytest.raises(ValueError, match="frame_rate"):
        MFCCFeatures(frame_rate=30)


def test_piecewise_constant_frames_split_exactly_at_the_steps() -> None:
    frames = steps([0, 4, -2, 7], [10, 15, 15, 10])
    segments, lengths = segment_features(frames)
    assert lengths.tolist() == [10, 15, 15, 10]
    assert lengths.dtype == torch.int64
    assert torch.equal(segments, torch.tensor([[0.0] * 3, [4.0] * 3, [-2.0] * 3, [7.0] * 3]))


def test_min_gap_keeps_the_stronger_of_two_close_changes() -> None:
    frames = steps([0, 1, 5, 6], [10, 2, 18, 10])  # changes of size 1 at 10, 4 at 12, 1 at 30
    assert segment_features(frames, min_gap=3)[1].tolist() == [12, 18, 10]
    assert segment_features(frames, min_gap=1)[1].tolist() == [10, 2, 18, 10]
    # Adjacent distances 1 then 4: only the 4 is a local maximum, whatever min_gap is.
    assert segment_features(steps([0, 1, 5], [10, 1, 10]), min_gap=1)[1].tolist() == [11, 10]


def test_no_segment_is_shorter_than_min_gap_at_the_edges() -> None:
    frames = steps([0, 3, 8], [1, 19, 2])  # changes after frame 1 and 2 frames before the end
    assert segment_features(frames, min_gap=3)[1].tolist() == [22]
    assert segment_features(frames, min_gap=1)[1].tolist() == [1, 19, 2]


def test_percentile_sets_the_threshold() -> None:
    increments = [0.0] * 29
    increments[5], increments[12], increments[20] = 5.0, 1.0, 9.0
    frames = line(increments)
    # 26 zero distances: at the 70th percentile the threshold is 0 and all three peaks count; at the
    # 95th it is 1 + 0.6 x (5 - 1) = 3.4, so the peak of 1 is ignored.
    assert starts(segment_features(frames, percentile=70)[1]) == [6, 13, 21]
    assert starts(segment_features(frames, percentile=95)[1]) == [6, 21]


def test_a_broad_change_gives_one_boundary_at_its_peak() -> None:
    frames = line([0.0] * 10 + [1.0, 2.0, 3.0, 2.0, 1.0] + [0.0] * 10)
    assert starts(segment_features(frames, percentile=0, min_gap=1)[1]) == [13]


def test_random_frames_partition_exactly() -> None:
    frames = torch.randn(257, 13, generator=torch.Generator().manual_seed(3))
    segments, lengths = segment_features(frames, percentile=70, min_gap=3)
    assert int(lengths.sum()) == 257 and int(lengths.min()) >= 3
    assert 10 < len(lengths) < 257 // 3 + 1
    edges = np.concatenate([[0], np.cumsum(lengths.numpy())])
    expected = torch.stack([frames[a:b].mean(dim=0) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    assert torch.allclose(segments, expected, atol=1e-5)


def test_degenerate_inputs() -> None:
    segments, lengths = segment_features(torch.zeros(0, 4))
    assert segments.shape == (0, 4) and lengths.shape == (0,)
    segments, lengths = segment_features(torch.ones(1, 4))
    assert lengths.tolist() == [1] and torch.equal(segments, torch.ones(1, 4))
    assert segment_features(steps([0, 1], [2, 2]), min_gap=3)[1].tolist() == [4]
    with pytest.raises(ValueError, match="percentile"):
        segment_features(torch.zeros(5, 2), percentile=100)
    with pytest.raises(ValueError, match="min_gap"):
        segment_features(torch.zeros(5, 2), min_gap=0)


def test_speech_segments_are_phone_sized(speech: list[torch.Tensor]) -> None:
    frames = MFCCFeatures().frames(speech[0])
    _, lengths = segment_features(frames)
    assert int(lengths.sum()) == frames.shape[0] == speech[0].shape[0] // 160
    per_second = len(lengths) / (frames.shape[0] / 100)
    # Phones come at roughly 10-15 per second; the prototype measured ~12.5 segments per second.
    assert 7 < per_second < 20
