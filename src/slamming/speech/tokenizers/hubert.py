"""The HuBERT unit tokeniser: the Slam recipe's units.

:class:`HubertTokenizer` quantises one HuBERT layer's hidden states with k-means on the model's
device and collapses consecutive duplicates, like slamkit: mHuBERT-base-25Hz, layer 11, 500 units.
Its API mirrors :class:`~slamming.speech.tokenizers.mfcc.MFCCTokenizer`.
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

from slamming.errors import SlammingError
from slamming.speech.hubert import EDGE_PADDING, HubertFeatures
from slamming.speech.kmeans import KMeans
from slamming.speech.kmeans_import import load_kmeans
from slamming.speech.tokenizers.base import (
    CONFIG_FILE,
    KMEANS_FILE,
    check_identity,
    dedup,
    read_config,
    save_tokenizer_files,
)

__all__ = ["HubertTokenizer"]


class HubertTokenizer:
    """HuBERT layer ``layer`` → k-means → optional dedup.

    Durations are run lengths in HuBERT frames, so :attr:`identity`'s ``frame_rate`` (16000 /
    prod(conv_stride), 25 for mHuBERT-base-25Hz) turns their sum into seconds.

    Args:
        model: local folder or hub id of a ``transformers`` HuBERT checkpoint.
        layer: hidden-states index to quantise (11 in Slam).
        kmeans: the centroids: a :class:`KMeans`, a ``.safetensors`` file, or a scikit-learn pickle
            (``..._km500.bin``, needs ``trust_pickle=True`` the first time; see
            :func:`~slamming.speech.kmeans_import.load_kmeans`).
        trust_pickle: allow unpickling a scikit-learn k-means file.
        dedup: collapse consecutive duplicate units.
        device: where HuBERT and the k-means assignment run; not part of the identity.
        dtype: ``"float32"`` or ``"bfloat16"`` for HuBERT; part of the identity (units can differ).
        batch_size: most files per HuBERT forward pass in :meth:`encode_batch`.
        compile: ``torch.compile`` HuBERT.

    Raises:
        SlammingError: the model or k-means cannot be loaded, or the centroids' dimension is not the
            model's hidden size.
    """

    kind = "hubert"

    def __init__(
        self,
        model: str | os.PathLike[str],
        layer: int = 11,
        kmeans: KMeans | str | os.PathLike[str] | None = None,
        trust_pickle: bool = False,
        dedup: bool = True,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
        batch_size: int = 16,
        compile: bool = False,
    ) -> None:
        if kmeans is None:
            raise SlammingError(
                "HubertTokenizer needs kmeans= (a .safetensors centroid file or the sklearn ..._km500.bin "
                "that belongs to the model and layer)"
            )
        name = os.fspath(model)
        local = Path(name).expanduser()
        self.model = str(local.resolve()) if local.exists() else name
        self.dedup = bool(dedup)
        self.device = torch.device(device)
        self.features = HubertFeatures(
            self.model, layer=layer, device=self.device, dtype=dtype, compile=compile, batch_size=batch_size
        )
        source = "the given k-means" if isinstance(kmeans, KMeans) else str(kmeans)
        if not isinstance(kmeans, KMeans):
            kmeans = load_kmeans(kmeans, trust_pickle=trust_pickle)
        if kmeans.dim != self.features.dim:
            raise SlammingError(
                f"k-means from {source} has dim={kmeans.dim} but HuBERT {self.model} has hidden size "
                f"{self.features.dim}; use the k-means fitted on this model's layer {layer}"
            )
        if kmeans.k > np.iinfo(np.uint16).max + 1:
            raise SlammingError(f"k-means from {source} has k={kmeans.k}; units must fit uint16 (k <= 65536)")
        self.kmeans = kmeans.to(self.device)

    @property
    def k(self) -> int:
        """Number of units."""
        return self.kmeans.k

    @property
    def layer(self) -> int:
        """The HuBERT hidden-states index quantised."""
        return self.features.layer

    @property
    def frame_rate(self) -> int | float:
        """HuBERT frames per second (an int when whole)."""
        rate = self.features.frame_rate
        return int(rate) if float(rate).is_integer() else rate

    def settings(self) -> dict[str, Any]:
        """The constructor settings saved in ``tokenizer.json`` (the centroids are saved apart)."""
        return {
            "model": self.model,
            "layer": self.layer,
            "dedup": self.dedup,
            "dtype": self.features.dtype_name,
        }

    @property
    def identity(self) -> dict[str, Any]:
        """Kind, model folder name, layer, k, frame rate, dedup and a settings hash.

        ``settings_hash`` is 16 hex digits of a sha256 over the unit-changing settings (layer, dedup,
        dtype, edge padding, frame rate), the sha256 of the HuBERT weights in use and the centroid
        bytes; the model's path is left out, so moving the folder keeps the identity.
        """
        hashed = {
            "layer": self.layer,
            "dedup": self.dedup,
            "dtype": self.features.dtype_name,
            "edge_padding": EDGE_PADDING,
            "frame_rate": self.frame_rate,
            "weights_sha256": self.features.weights_sha256,
        }
        digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode("utf-8"))
        digest.update(self.kmeans.centroids.cpu().numpy().astype("<f4").tobytes())
        return {
            "kind": self.kind,
            "model": Path(self.model).name,
            "layer": self.layer,
            "k": self.k,
            "frame_rate": self.frame_rate,
            "dedup": self.dedup,
            "settings_hash": digest.hexdigest()[:16],
        }

    def _finish(self, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        units = labels.cpu().numpy().astype(np.uint16)
        lengths = np.ones(len(units), dtype=np.int64)
        if self.dedup:
            units, lengths = dedup(units, lengths)
        return units, lengths.astype(np.int32)

    def encode(self, wav: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise one utterance.

        Args:
            wav: ``(N,)`` 16 kHz mono waveform.

        Returns:
            ``units`` (uint16, each < k) and ``durations`` (int32 run lengths in HuBERT frames,
            summing to ``features.num_frames(N)``).
        """
        return self.encode_batch([wav])[0]

    def encode_batch(self, wavs: Sequence[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Tokenise several utterances: batched HuBERT passes and one k-means assignment.

        Each result equals :meth:`encode` of that waveform alone (see
        :class:`~slamming.speech.hubert.HubertFeatures` on padding).
        """
        if len(wavs) == 0:
            return []
        features = self.features(wavs)
        labels = self.kmeans.assign(torch.cat(features))
        return [self._finish(chunk) for chunk in labels.split([len(f) for f in features])]

    def save(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``tokenizer.json`` (settings, identity) and ``kmeans.safetensors`` into ``directory``.

        The HuBERT weights are not copied: ``settings["model"]`` records the (absolute) folder or hub
        id, and :meth:`load` checks the weights' hash against the recorded identity.

        Raises:
            SlammingError: the directory already holds a tokeniser and ``overwrite`` is False.
        """
        return save_tokenizer_files(
            directory, self.kind, self.settings(), self.identity, self.kmeans, overwrite
        )

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], device: torch.device | str = "cpu", model: str | None = None
    ) -> HubertTokenizer:
        """Load a tokeniser written by :meth:`save` and verify it still gives the recorded identity.

        Args:
            directory: the saved tokeniser.
            device: where HuBERT and the assignment run.
            model: use this HuBERT folder/hub id instead of the recorded one (e.g. on another machine);
                its weights must hash the same.

        Raises:
            SlammingError: missing or malformed files, another kind, or a model/centroids that do not
                match the recorded identity (``TokenizerMismatchError``).
        """
        directory = Path(directory)
        payload = read_config(directory)
        if payload["kind"] != cls.kind:
            raise SlammingError(
                f"{directory / CONFIG_FILE} describes a {payload['kind']!r} tokeniser, not {cls.kind!r}; "
                "use load_tokenizer()"
            )
        try:
            settings, recorded = dict(payload["settings"]), payload["identity"]
            if model is not None:
                settings["model"] = model
            tokenizer = cls(**settings, kmeans=directory / KMEANS_FILE, device=device)
        except (KeyError, TypeError, ValueError) as err:
            raise SlammingError(
                f"{directory / CONFIG_FILE} has settings this version cannot use ({err!r}); save the tokeniser again"
            ) from err
        check_identity(
            recorded, tokenizer.identity, f"{directory}: recorded identity vs model and {KMEANS_FILE}"
        )
        return tokenizer
