"""The phone tokeniser: units from a small CTC phone recogniser, the same whoever speaks.

MFCC units (:mod:`.mfcc`) change with the voice: the same sentence in two espeak-ng voices shares
almost none of its unit bigrams (docs/perf-log.md), so four voices split a tiny corpus into four
near-separate languages. :class:`PhoneTokenizer` instead runs a 0.6M-parameter recogniser trained
with CTC on synthetic speech and espeak-ng's phoneme strings of its text
(:func:`~slamming.speech.tokenizers.phone_train.train_phone_tokenizer`; no timings needed) and takes
its greedy labels: blanks dropped, repeats merged. A unit is a phoneme symbol, so the same words get
the same units in any voice, including voices the recogniser never heard. Tokenising needs no text.

The recogniser: 39-d MFCC (13 + deltas + delta-deltas, 100 Hz, standardised by the training
statistics) → Conv1d (stride 2, to 50 Hz) → Conv1d, each with LayerNorm and ReLU → 2-layer
bidirectional GRU → linear over the
phonemes and the CTC blank (index 0). Unit ``u`` is phoneme ``phonemes[u]``. Durations count 50 Hz
frames: a unit lasts from its first frame to the next unit's first frame (leading blanks go to the
first unit), so they sum to the utterance's frames.

With ``merges`` (:mod:`.merges`), frequent pairs of phoneme units become one unit after the
greedy labels are read: unit ``len(phonemes) + i`` is merge ``i``. A story then takes about half as
many tokens, and a tiny LM learns more of its meaning in the same steps.

A saved tokeniser is a folder with ``tokenizer.json`` (kind ``"phone"``, settings, identity) and
``recognizer.safetensors`` (the weights); :func:`~slamming.speech.tokenizers.base.load_tokenizer`
opens it like the others.

One ships with slamming (:data:`BUNDLED_PHONE_TOKENIZER`, ``data.phone_tokenizer: bundled``): the
embedded demo's recogniser and its 300 merges (K = 400), trained once by ``slamming tokenizer
train-phone`` with the demo's settings; its ``training.json`` holds the command, the training
summary and the versions it ran with.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from slamming.errors import ConfigError, SlammingError
from slamming.speech.features import BASE_FRAME_RATE, MFCCFeatures
from slamming.speech.tokenizers.base import CONFIG_FILE, check_identity, read_config, write_config
from slamming.speech.tokenizers.merges import apply_merges, check_merges

__all__ = [
    "BUNDLED_PHONE_TOKENIZER",
    "PhoneRecognizer",
    "PhoneTokenizer",
    "WEIGHTS_FILE",
    "ctc_units",
    "phone_tokenizer_dir",
]

#: The phone tokeniser that ships with slamming (``data.phone_tokenizer: bundled``).
BUNDLED_PHONE_TOKENIZER = Path(__file__).resolve().parents[2] / "assets" / "phone_tokenizer"

WEIGHTS_FILE = "recognizer.safetensors"
#: Rate of the recogniser's output frames (the first convolution halves the 100 Hz MFCC rate).
OUTPUT_FRAME_RATE = BASE_FRAME_RATE // 2
#: Utterances tokenised in one forward pass by :meth:`PhoneTokenizer.encode_batch`.
ENCODE_BATCH = 32


class PhoneRecognizer(nn.Module):
    """MFCC frames → per-frame logits over ``num_phonemes`` + 1 (blank first), at 50 Hz.

    Padding never changes a result: features past an utterance's length are zero (as a convolution's
    own padding), the first convolution's outputs past its length are zeroed, and the GRU runs on
    packed sequences. So an utterance gives the same logits alone or in a batch (up to float rounding).
    """

    def __init__(
        self, num_phonemes: int, n_in: int = 39, channels: int = 128, hidden: int = 128, layers: int = 2
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_in, channels, kernel_size=5, stride=2, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=5, padding=2)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.gru = nn.GRU(channels, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, num_phonemes + 1)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Output frames of inputs of ``lengths`` 100 Hz frames: ``ceil(T / 2)``."""
        return (lengths + 1) // 2

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor, pack: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats`` ``(B, T, n_in)`` zero-padded, ``lengths`` ``(B,)`` → logits ``(B, T', P + 1)`` and
        output lengths ``(B,)``.

        ``pack=False`` runs the GRU over the padding too (the backward direction then starts in it):
        training does, because on a CPU the backward pass of a packed GRU over long utterances is
        ~30x slower (76 s against 2.7 s for 32 x 20 s, measured), and length-sorted batches are
        hardly padded. Tokenising packs, so a result never depends on its batch.
        """
        out_lengths = self.output_lengths(lengths)
        steps = int(out_lengths.max())
        x = self.conv1(feats.transpose(1, 2))[:, :, :steps].transpose(1, 2)
        valid = torch.arange(steps, device=x.device)[None, :] < out_lengths[:, None].to(x.device)
        x = torch.relu(self.norm1(x)) * valid[:, :, None]
        x = torch.relu(self.norm2(self.conv2(x.transpose(1, 2)).transpose(1, 2)))
        if not pack:
            return self.out(self.gru(x)[0]), out_lengths
        packed = pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=steps)
        return self.out(hidden), out_lengths


def ctc_units(best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy CTC labels of one utterance → (units, durations in output frames).

    ``best`` holds each frame's best label (0 = blank, phoneme ``u`` = ``u + 1``). A unit starts
    where a non-blank label differs from the previous frame's label; it lasts until the next unit
    starts, and leading blank frames belong to the first unit. No label at all gives empty arrays.

    Example:
        ``ctc_units([0, 3, 3, 0, 3, 5, 0])`` gives units ``[2, 2, 4]`` and durations ``[4, 1, 2]``.
    """
    best = np.asarray(best, dtype=np.int64)
    previous = np.concatenate([[0], best[:-1]])
    starts = np.flatnonzero((best != 0) & (best != previous))
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint16), np.zeros(0, dtype=np.int32)
    edges = np.concatenate([[0], starts[1:], [len(best)]])
    return (best[starts] - 1).astype(np.uint16), np.diff(edges).astype(np.int32)


class PhoneTokenizer:
    """Speech → phoneme units by a CTC phone recogniser (see the module doc).

    Args:
        phonemes: the recogniser's phoneme symbols; unit ``u`` is ``phonemes[u]``.
        k: the number of units (the model's vocabulary is ``k + 2``); at least ``len(phonemes)`` plus
            the merges, which it is when None. A larger ``k`` leaves ids unused: it lets a config fix
            the vocabulary before the recogniser, and so its phoneme list, exists.
        feature_mean: ``(39,)`` mean of the training MFCC frames.
        feature_std: ``(39,)`` their standard deviation.
        channels: convolution channels.
        hidden: GRU units per direction.
        layers: GRU layers.
        state_dict: the recogniser's weights (a fresh, untrained one when None).
        merges: unit pairs merged after recognition, in order (:func:`.merges.learn_merges`);
            merge ``i`` makes unit ``len(phonemes) + i``. None or empty: one unit per phoneme.
        device: where the recogniser runs; not part of the identity.

    Raises:
        ConfigError: no phonemes, statistics of the wrong shape, malformed merges, or a ``k`` below
            the phonemes and merges.
    """

    kind = "phone"

    def __init__(
        self,
        phonemes: Sequence[str],
        feature_mean: Sequence[float],
        feature_std: Sequence[float],
        k: int | None = None,
        channels: int = 128,
        hidden: int = 128,
        layers: int = 2,
        state_dict: dict[str, torch.Tensor] | None = None,
        merges: Sequence[Sequence[int]] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not phonemes or len(set(phonemes)) != len(phonemes):
            raise ConfigError("a phone tokeniser needs a non-empty list of distinct phoneme symbols")
        self.phonemes = list(phonemes)
        self.merges = check_merges(merges or [], len(self.phonemes))
        needed = len(self.phonemes) + len(self.merges)
        self._k = needed if k is None else int(k)
        if not needed <= self._k <= np.iinfo(np.uint16).max + 1:
            made = f"the {len(self.phonemes)} phonemes" + (
                f" and {len(self.merges)} merges ({needed})" if self.merges else ""
            )
            raise ConfigError(
                f"k={self._k} must be at least {made} (and at most 65536); raise data.num_units"
                + (" or lower data.phone_merges" if self.merges else "")
            )
        self.features = MFCCFeatures(n_mfcc=13, deltas=True, normalize=False)
        self.feature_mean = torch.as_tensor(feature_mean, dtype=torch.float32)
        self.feature_std = torch.as_tensor(feature_std, dtype=torch.float32)
        if self.feature_mean.shape != (self.features.dim,) or self.feature_std.shape != (self.features.dim,):
            raise ConfigError(f"feature_mean and feature_std need {self.features.dim} values each")
        if not bool((self.feature_std > 0).all()):
            raise ConfigError("feature_std must be positive in every dimension")
        self.channels, self.hidden, self.layers = int(channels), int(hidden), int(layers)
        self.device = torch.device(device)
        self.model = PhoneRecognizer(len(self.phonemes), self.features.dim, channels, hidden, layers)
        if state_dict is not None:
            self.model.load_state_dict(state_dict)
        self.model.to(self.device).eval()

    @property
    def k(self) -> int:
        """Number of units: at least the number of phoneme symbols and merges."""
        return self._k

    def with_merges(self, merges: Sequence[Sequence[int]], k: int | None = None) -> PhoneTokenizer:
        """The same recogniser with ``merges`` applied to its units; ``k`` None: just enough units."""
        return PhoneTokenizer(
            self.phonemes,
            self.feature_mean.tolist(),
            self.feature_std.tolist(),
            k=k,
            channels=self.channels,
            hidden=self.hidden,
            layers=self.layers,
            state_dict=self._weights(),
            merges=merges,
            device=self.device,
        )

    def spell(self, units: Sequence[int] | np.ndarray) -> list[str]:
        """The phoneme symbols that ``units`` stand for (a merged unit gives those of its parts).

        Raises:
            ValueError: a unit above the phonemes and merges (an id this tokeniser never gives).
        """
        spellings = [[symbol] for symbol in self.phonemes]
        for a, b in self.merges:
            spellings.append(spellings[a] + spellings[b])
        symbols: list[str] = []
        for unit in units:
            if not 0 <= int(unit) < len(spellings):
                raise ValueError(f"unit {int(unit)} is not one of this tokeniser's {len(spellings)} units")
            symbols += spellings[int(unit)]
        return symbols

    def unit_spans(self) -> np.ndarray | None:
        """``(k,)`` phonemes per unit (1 for a phoneme or an unused id); None without merges."""
        if not self.merges:
            return None
        spans = np.ones(self.k, dtype=np.int64)
        for index, (a, b) in enumerate(self.merges):
            spans[len(self.phonemes) + index] = spans[a] + spans[b]
        return spans

    def settings(self) -> dict[str, Any]:
        """Everything but the weights that decides the units (saved in ``tokenizer.json``).

        ``merges`` appears only when there are some, so a tokeniser without merges keeps the
        settings, and so the identity, it had before merges existed.
        """
        merges = {"merges": [list(pair) for pair in self.merges]} if self.merges else {}
        return {
            **merges,
            "phonemes": self.phonemes,
            "k": self.k,
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "channels": self.channels,
            "hidden": self.hidden,
            "layers": self.layers,
        }

    def _weights(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().cpu().contiguous() for name, value in self.model.state_dict().items()}

    @property
    def identity(self) -> dict[str, Any]:
        """Kind, k, the 50 Hz duration rate, dedup, and a hash of the settings and every weight."""
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode("utf-8"))
        for name, value in sorted(self._weights().items()):
            digest.update(name.encode("utf-8"))
            digest.update(value.float().numpy().astype("<f4").tobytes())
        return {
            "kind": self.kind,
            "k": self.k,
            "frame_rate": OUTPUT_FRAME_RATE,
            "dedup": True,
            "settings_hash": digest.hexdigest()[:16],
        }

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """Standardised ``(T, 39)`` MFCC frames of one waveform (the recogniser's input)."""
        return (self.features.frames(wav) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def logits(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The recogniser's ``(T', P + 1)`` logits of each utterance's standardised frames, batched."""
        lengths = torch.tensor([len(f) for f in frames], dtype=torch.int64)
        padded = nn.utils.rnn.pad_sequence(list(frames), batch_first=True).to(self.device)
        logits, out_lengths = self.model(padded, lengths)
        return [logits[i, : int(n)].cpu() for i, n in enumerate(out_lengths)]

    def encode(self, wav: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise one utterance: ``units`` (uint16, each < k) and ``durations`` (int32, 50 Hz frames).

        Silence may give no unit at all (empty arrays).
        """
        return self.encode_batch([wav])[0]

    def encode_batch(self, wavs: Sequence[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Tokenise several utterances, :data:`ENCODE_BATCH` per forward pass, longest with longest.

        Batching makes the GRU multiply matrices instead of vectors; sorting by length keeps padding
        small. Each result is :meth:`encode` of that waveform alone (up to float rounding of ties).
        The merges, if any, are applied last, to all the utterances in one pass.
        """
        frames = [self.frames(wav) for wav in wavs]
        order = sorted(range(len(frames)), key=lambda i: -len(frames[i]))
        results: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0))] * len(frames)
        for start in range(0, len(order), ENCODE_BATCH):
            chunk = order[start : start + ENCODE_BATCH]
            for index, logits in zip(chunk, self.logits([frames[i] for i in chunk]), strict=True):
                results[index] = ctc_units(logits.argmax(dim=-1).numpy())
        return apply_merges(results, self.merges, len(self.phonemes)) if self.merges else results

    def save(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``tokenizer.json`` and ``recognizer.safetensors`` into ``directory``.

        Raises:
            SlammingError: the directory already holds a tokeniser and ``overwrite`` is False.
        """
        directory = Path(directory)
        write_config(
            directory, self.kind, self.settings(), self.identity, overwrite, before=self._save_weights
        )
        return directory

    def _save_weights(self, directory: Path) -> None:
        save_file(self._weights(), str(directory / WEIGHTS_FILE), metadata={"kind": self.kind})

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: torch.device | str = "cpu") -> PhoneTokenizer:
        """Load a tokeniser written by :meth:`save` and check its weights match its recorded identity.

        Raises:
            SlammingError: files missing or malformed, another kind, or weights that do not match.
        """
        directory = Path(directory)
        config = directory / CONFIG_FILE
        payload = read_config(directory)
        if payload["kind"] != cls.kind:
            raise SlammingError(f"{config} describes a {payload['kind']!r} tokeniser, not {cls.kind!r}")
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise SlammingError(f"{weights} is missing; save the phone tokeniser again")
        try:
            tokenizer = cls(**dict(payload["settings"]), state_dict=load_file(str(weights)), device=device)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise SlammingError(
                f"{directory} does not hold a phone tokeniser this version can read ({err}); save it again"
            ) from err
        check_identity(
            payload["identity"], tokenizer.identity, f"{directory}: recorded identity vs {WEIGHTS_FILE}"
        )
        return tokenizer


def phone_tokenizer_dir(name: str | os.PathLike[str]) -> Path:
    """The folder of a saved phone tokeniser: ``"bundled"`` is :data:`BUNDLED_PHONE_TOKENIZER`, anything
    else a path.

    Raises:
        ConfigError: no such folder, or one that holds no ``tokenizer.json``.
    """
    path = BUNDLED_PHONE_TOKENIZER if str(name) == "bundled" else Path(name)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(
            f"data.phone_tokenizer {str(name)!r}: {path} holds no {CONFIG_FILE}; give the folder of a "
            "tokeniser saved by `slamming tokenizer train-phone`, 'bundled' for the one that ships with "
            "slamming, or null to train one in the build"
        )
    return path
