"""MFCC features and phone-like change-point segments: the download-free acoustic front end.

HuBERT's first training iteration used k-means over MFCCs as its targets, so MFCC units are a real
(if weak) speech tokeniser that needs no pretrained weights. :class:`MFCCFeatures` computes them at
100 Hz and pools them to the unit frame rate; :func:`segment_features` cuts the 100 Hz frames into
phone-like segments instead. In the project's prototype measurements, segment-mean units were what
let a 3M-parameter model learn story coherence from espeak-ng speech, where 25 Hz frame units did not:
the same word maps to a far more consistent unit string.

Frame convention: frame ``t`` describes the 25 ms window centred on ``t x 10 ms``, and ``N`` samples
give ``N // 160`` frames at 16 kHz (1.0 s -> 100 frames), so frame counts are durations in 10 ms.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

from slamming.errors import AudioError, ConfigError

__all__ = ["BASE_FRAME_RATE", "MFCCFeatures", "frame_distances", "segment_features"]

#: Rate of the raw MFCC frames in Hz (10 ms hop).
BASE_FRAME_RATE = 100


class MFCCFeatures:
    """Per-utterance normalised MFCCs at 100 Hz, optionally pooled to a lower frame rate.

    Args:
        sample_rate: sample rate of the input waveforms in Hz.
        n_mfcc: cepstral coefficients per frame.
        frame_rate: rate of :meth:`__call__`'s pooled frames in Hz; must divide 100.
        deltas: append first and second time derivatives (3 x ``n_mfcc`` dims, as in HuBERT's first
            iteration targets).
        normalize: subtract each utterance's mean and divide by its standard deviation per
            dimension, which removes most of the speaker and channel offset so voices share units.
        n_mels: mel filterbank channels behind the cepstrum.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mfcc: int = 13,
        frame_rate: int = 25,
        deltas: bool = False,
        normalize: bool = True,
        n_mels: int = 40,
    ) -> None:
        if frame_rate < 1 or frame_rate > BASE_FRAME_RATE or BASE_FRAME_RATE % frame_rate != 0:
            raise ConfigError(
                f"frame_rate must divide {BASE_FRAME_RATE} Hz (e.g. 25 or 50), got {frame_rate}"
            )
        if sample_rate % BASE_FRAME_RATE != 0:
            raise ConfigError(f"sample_rate must be a multiple of {BASE_FRAME_RATE} Hz, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self.n_mfcc = int(n_mfcc)
        self.frame_rate = int(frame_rate)
        self.deltas = bool(deltas)
        self.normalize = bool(normalize)
        self.hop = self.sample_rate // BASE_FRAME_RATE
        window = self.sample_rate * 25 // 1000
        self._mfcc = torchaudio.transforms.MFCC(
            sample_rate=self.sample_rate,
            n_mfcc=self.n_mfcc,
            melkwargs={
                "n_fft": window,
                "win_length": window,
                "hop_length": self.hop,
                "n_mels": n_mels,
                "center": True,
            },
        )
        self._window = window

    @property
    def dim(self) -> int:
        """Feature dimension of every frame."""
        return self.n_mfcc * (3 if self.deltas else 1)

    @property
    def pool_size(self) -> int:
        """Number of 100 Hz frames averaged into one pooled frame."""
        return BASE_FRAME_RATE // self.frame_rate

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """Normalised 100 Hz MFCC frames.

        Args:
            wav: ``(N,)`` mono waveform at :attr:`sample_rate`.

        Returns:
            ``(N // hop, dim)`` float32 tensor on the CPU.

        Raises:
            AudioError: the waveform is shorter than one 10 ms frame.
            ValueError: ``wav`` is not 1-D.
        """
        if wav.dim() != 1:
            raise ValueError(
                f"expected a (N,) mono waveform, got shape {tuple(wav.shape)}; mix it with slamming.speech.audio.to_mono"
            )
        num_frames = wav.shape[0] // self.hop
        if num_frames == 0:
            raise AudioError(
                f"audio of {wav.shape[0]} samples is shorter than one 10 ms frame at {self.sample_rate} Hz; "
                "drop clips this short from the data"
            )
        wav = wav.detach().to("cpu", torch.float32)
        # Centred frames reflect-pad by half a window; a clip shorter than that cannot be reflected,
        # so zero-pad it (the frames we keep still end at the clip's last full 10 ms).
        if wav.shape[0] <= self._window // 2:
            wav = torch.nn.functional.pad(wav, (0, self._window // 2 + 1 - wav.shape[0]))
        with torch.no_grad():
            cep = self._mfcc(wav)[:, :num_frames]  # (n_mfcc, T); centred STFT gives N // hop + 1 frames
            if self.deltas:
                first = torchaudio.functional.compute_deltas(cep)
                cep = torch.cat([cep, first, torchaudio.functional.compute_deltas(first)], dim=0)
            feats = cep.T.contiguous()
            if self.normalize:
                feats = (feats - feats.mean(dim=0)) / (feats.std(dim=0, unbiased=False) + 1e-5)
        return feats

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Average consecutive groups of :attr:`pool_size` frames.

        The last group may be shorter and is averaged over the frames it has, so no audio is dropped:
        ``T`` frames give ``ceil(T / pool_size)`` pooled frames (100 -> 25 at 25 Hz).

        Args:
            frames: ``(T, D)`` 100 Hz frames.

        Returns:
            ``(ceil(T / pool_size), D)`` tensor.
        """
        size = self.pool_size
        if size == 1 or frames.shape[0] == 0:
            return frames
        total = frames.shape[0]
        groups = -(-total // size)
        padded = torch.nn.functional.pad(frames, (0, 0, 0, groups * size - total))
        sums = padded.reshape(groups, size, frames.shape[1]).sum(dim=1)
        counts = torch.full((groups, 1), float(size), dtype=frames.dtype)
        counts[-1, 0] = total - (groups - 1) * size
        return sums / counts

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        """Pooled features at :attr:`frame_rate`: ``(ceil((N // hop) / pool_size), dim)`` float32."""
        return self.pool(self.frames(wav))


def _boundaries(
    distance: np.ndarray, percentile: float, min_gap: int, threshold: float | None = None
) -> np.ndarray:
    """Segment start indices (excluding 0) chosen from the frame-to-frame distances.

    ``distance[t]`` is the change between frames ``t`` and ``t + 1``, so a boundary there starts a
    segment at ``t + 1``. Candidates are local maxima strictly above ``threshold``, or above the
    ``percentile``-th percentile of ``distance`` when ``threshold`` is None; the strongest are
    kept first and any candidate within ``min_gap`` frames of a kept boundary or of either end is
    dropped, so every segment is at least ``min_gap`` frames long.
    """
    num_frames = distance.shape[0] + 1
    if threshold is None:
        threshold = float(np.percentile(distance, percentile))
    left = np.concatenate([[-np.inf], distance[:-1]])
    right = np.concatenate([distance[1:], [-np.inf]])
    # Strict on the left, non-strict on the right: a plateau of equal peaks yields its first frame.
    candidates = np.flatnonzero((distance > threshold) & (distance > left) & (distance >= right)) + 1
    # Strongest first; the stable sort breaks ties by position so the result is reproducible.
    order = candidates[np.argsort(-distance[candidates - 1], kind="stable")]
    kept: list[int] = []
    blocked = np.zeros(num_frames + 1, dtype=bool)
    blocked[:min_gap] = True
    blocked[max(num_frames - min_gap + 1, 0) :] = True
    for start in order:
        if blocked[start]:
            continue
        kept.append(int(start))
        blocked[max(start - min_gap + 1, 0) : start + min_gap] = True
    return np.sort(np.asarray(kept, dtype=np.int64))


def frame_distances(frames: torch.Tensor) -> np.ndarray:
    """``(T - 1,)`` Euclidean distances between consecutive frames (float64), the change signal
    :func:`segment_features` cuts at."""
    return (frames[1:] - frames[:-1]).double().norm(dim=1).numpy()


def segment_features(
    frames: torch.Tensor, percentile: float = 70.0, min_gap: int = 3, threshold: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut 100 Hz frames into phone-like segments at points of fast spectral change.

    Boundaries sit at local maxima of the Euclidean distance between consecutive frames that lie
    above a threshold, at least ``min_gap`` frames apart (and from either end of the utterance).
    Each segment is represented by its mean frame.

    The threshold is ``threshold`` when given (a fixed value, e.g. fitted on a corpus, so a word
    spoken alone is cut as it is inside a long story), else the ``percentile``-th percentile of the
    utterance's own distances.

    Args:
        frames: ``(T, D)`` frames, normally :meth:`MFCCFeatures.frames`.
        percentile: distances must exceed this percentile (0-100) of the utterance's distances.
        min_gap: minimum segment length in frames (>= 1).
        threshold: a fixed distance threshold instead of the utterance's percentile.

    Returns:
        ``segments`` ``(S, D)`` float32 segment means, and ``lengths`` ``(S,)`` int64 frame counts that
        sum to ``T``. An utterance shorter than ``2 * min_gap`` frames is one segment.
    """
    if frames.dim() != 2:
        raise ValueError(f"expected (T, D) frames, got shape {tuple(frames.shape)}")
    if not 0.0 <= percentile < 100.0:
        raise ConfigError(f"percentile must be in [0, 100), got {percentile}")
    if min_gap < 1:
        raise ConfigError(f"min_gap must be >= 1, got {min_gap}")
    num_frames = frames.shape[0]
    frames = frames.detach().to("cpu", torch.float32)
    if num_frames == 0:
        return frames.new_zeros((0, frames.shape[1])), torch.zeros(0, dtype=torch.int64)
    if num_frames > 1:
        starts = _boundaries(frame_distances(frames), percentile, min_gap, threshold)
    else:
        starts = np.zeros(0, dtype=np.int64)
    edges = np.concatenate([[0], starts, [num_frames]])
    lengths = torch.from_numpy(np.diff(edges))
    segment_of_frame = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    sums = torch.zeros(len(lengths), frames.shape[1], dtype=torch.float64)
    sums.index_add_(0, segment_of_frame, frames.double())
    segments = (sums / lengths.unsqueeze(1).double()).float()
    return segments, lengths
