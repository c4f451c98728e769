"""A HuBERT tokeniser named by its parts, made into a tokeniser folder once and reused after that.

``slamming tokenizer from-kmeans`` and :class:`HubertTokenizerSpec` both build the paper's tokeniser
from a HuBERT checkpoint, a layer and a community k-means file with :func:`hubert_from_kmeans`. The
spec lets a config (``configs/tokenize.yaml``) state model, layer, k-means file and number of units
instead of pointing at a folder made beforehand. :meth:`HubertTokenizerSpec.materialize` builds the
tokeniser and

- saves it into :attr:`HubertTokenizerSpec.directory` (``data/tokenizer/mhubert-base-25hz-l11-k500``
  by default) when that folder holds no tokeniser yet; the folder is written beside its target and
  renamed into place, so concurrent ranks and crashes never leave half a folder;
- otherwise checks that the folder's recorded identity (model name, layer, k, frame rate, dedup and a
  hash of the weights, settings and centroid bytes: see
  :attr:`~slamming.speech.tokenizers.hubert.HubertTokenizer.identity`) is the spec's, and reuses it.

The authors' toolkit caches the k-means it downloads under one fixed file name whatever its URL, so
switching tokenisers silently reuses the old centroids (reference/slam-recipe.md §2.2); here a spec
that gives another tokeniser than the folder holds is refused with one line naming the folder.
The pickled k-means is unpickled once (behind ``trust_pickle``) and kept as a tensor file beside it
(:mod:`slamming.speech.kmeans_import`), so later runs never unpickle.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slamming.atomic import temporary_sibling
from slamming.errors import SlammingError
from slamming.speech.kmeans_import import converted_path, load_kmeans
from slamming.speech.tokenizers.base import CONFIG_FILE, read_config
from slamming.speech.tokenizers.hubert import HubertTokenizer

__all__ = ["KMEANS_SHA256", "KMEANS_URL", "MODEL_ID", "HubertTokenizerSpec", "hubert_from_kmeans"]

log = logging.getLogger(__name__)

#: The paper's HuBERT (TWIST's mHuBERT-base-25Hz) on the Hugging Face hub.
MODEL_ID = "slprl/mhubert-base-25hz"
#: The paper's k-means (layer 11, 500 units), a joblib pickle of a scikit-learn KMeans, as listed by
#: textlesslib's checkpoint manager together with its sha256.
KMEANS_URL = (
    "https://dl.fbaipublicfiles.com/textless_nlp/twist/speech_tokenizer/"
    "mhubert_base_25hz_cp_mls_cv_sp_fisher_L11_km500.bin"
)
KMEANS_SHA256 = "03cc04a9c24fec4285e73e709c485756d8f116aa8e724eac555de6a7cf8d28ad"


def hubert_from_kmeans(
    model: str | os.PathLike[str],
    kmeans: str | os.PathLike[str],
    layer: int = 11,
    *,
    trust_pickle: bool = False,
    num_units: int | None = None,
    dedup: bool = True,
    dtype: str = "float32",
    device: str = "cpu",
) -> HubertTokenizer:
    """A :class:`HubertTokenizer` made of a HuBERT checkpoint and a k-means file.

    Args:
        model: local folder or hub id of the HuBERT checkpoint.
        kmeans: ``.safetensors`` centroids, or a joblib pickle of a scikit-learn k-means (the
            authors' ``..._km500.bin``; converted once, see :func:`~slamming.speech.kmeans_import.load_kmeans`).
        layer: the hidden-states index quantised.
        trust_pickle: allow unpickling ``kmeans`` (runs code from the file: trusted files only).
        num_units: the number of centroids the file must hold; None accepts any.
        dedup: collapse consecutive duplicate units.
        dtype: HuBERT's dtype, ``"float32"`` or ``"bfloat16"`` (part of the identity).
        device: where HuBERT and the assignment run.

    Raises:
        SlammingError: a missing k-means file or model folder (saying where to get them), an
            untrusted pickle, a k-means of another size than ``num_units`` or another dimension than
            the model's.
    """
    path = Path(kmeans).expanduser()
    missing = []
    name = os.fspath(model)
    if _local_path(name) and not Path(name).expanduser().exists():
        missing.append(
            f"HuBERT model folder {name} does not exist (the paper's: `huggingface-cli download {MODEL_ID} "
            f"--local-dir {name}`, or give the hub id {MODEL_ID} with network access)"
        )
    if not path.is_file() and not converted_path(path).is_file():
        missing.append(
            f"k-means file {path} does not exist (the paper's, mHuBERT-25Hz layer 11, 500 units: "
            f"{KMEANS_URL}, sha256 {KMEANS_SHA256[:16]}…)"
        )
    if missing:
        raise SlammingError("; ".join(missing) + "; download them there or fix the paths")
    centroids = load_kmeans(path, trust_pickle=trust_pickle, device=device)
    if num_units is not None and centroids.k != num_units:
        raise SlammingError(
            f"k-means file {path} holds {centroids.k} centroids, not num_units={num_units}; use the "
            f"k-means with {num_units} units or set num_units to {centroids.k}"
        )
    return HubertTokenizer(model, layer=layer, kmeans=centroids, dedup=dedup, dtype=dtype, device=device)


def _local_path(name: str) -> bool:
    """Whether ``name`` can only be a local folder: a hub id is ``name`` or ``owner/name``."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _differences(recorded: dict[str, Any], actual: dict[str, Any]) -> str:
    keys = sorted(k for k in set(recorded) | set(actual) if recorded.get(k) != actual.get(k))
    return "; ".join(f"{k}: {recorded.get(k)!r} there, {actual.get(k)!r} here" for k in keys)


@dataclass(frozen=True)
class HubertTokenizerSpec:
    """The parts of a HuBERT unit tokeniser, as a config states them.

    Args:
        model: local folder or hub id of the HuBERT checkpoint (the paper's: ``slprl/mhubert-base-25hz``).
        kmeans: the k-means file: the authors' joblib pickle
            ``mhubert_base_25hz_cp_mls_cv_sp_fisher_L11_km500.bin`` (needs ``trust_pickle``) or a
            ``.safetensors`` of centroids.
        layer: hidden-states index quantised (11 in the paper).
        num_units: the number of k-means centroids, checked against the file (500 in the paper).
        trust_pickle: allow unpickling the k-means file once (only for a file from a trusted source).
        dedup: collapse consecutive duplicate units (the paper does).
        dtype: HuBERT's dtype, ``float32`` or ``bfloat16``; part of the identity (units can differ).
        folder: where the tokeniser folder is made and reused; None gives
            ``data/tokenizer/<model name>-l<layer>-k<num_units>`` (plus ``-<dtype>`` when not
            float32 and ``-nodedup`` without dedup), relative to the working directory.
    """

    model: str
    kmeans: str
    layer: int = 11
    num_units: int = 500
    trust_pickle: bool = False
    dedup: bool = True
    dtype: str = "float32"
    folder: str | None = None

    @property
    def directory(self) -> Path:
        """The tokeniser folder this spec is made into (see ``folder``)."""
        if self.folder is not None:
            return Path(self.folder).expanduser()
        name = f"{Path(os.fspath(self.model)).name.lower()}-l{self.layer}-k{self.num_units}"
        name += "" if self.dtype == "float32" else f"-{self.dtype}"
        name += "" if self.dedup else "-nodedup"
        return Path("data/tokenizer") / name

    def build(self, device: str = "cpu") -> HubertTokenizer:
        """The tokeniser of this spec (model loaded, centroids read), without touching the folder."""
        return hubert_from_kmeans(
            self.model, self.kmeans, self.layer, trust_pickle=self.trust_pickle,
            num_units=self.num_units, dedup=self.dedup, dtype=self.dtype, device=device,
        )  # fmt: skip

    def materialize(self, device: str = "cpu") -> HubertTokenizer:
        """Build the tokeniser, then save it to :attr:`directory` or check the one already there.

        Returns:
            The tokeniser, equal in identity to the one saved in :attr:`directory`.

        Raises:
            SlammingError: missing files (see :func:`hubert_from_kmeans`); :attr:`directory` holds
                another tokeniser than this spec gives, or is a non-empty folder without one.
        """
        tokenizer = self.build(device)
        folder = self.directory
        if not (folder / CONFIG_FILE).is_file():
            if folder.is_dir() and any(folder.iterdir()):
                raise SlammingError(
                    f"{folder} is not empty but holds no tokeniser ({CONFIG_FILE}); empty it or set "
                    "tokenizer.folder to another path"
                )
            if self._save(tokenizer, folder):
                return tokenizer
        self._check(tokenizer, folder)
        return tokenizer

    def _save(self, tokenizer: HubertTokenizer, folder: Path) -> bool:
        """Save into ``folder`` atomically; False when another process made it first."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = temporary_sibling(folder)
        try:
            tokenizer.save(partial)
            try:
                os.rename(partial, folder)  # atomic; fails on a folder another process filled first
            except OSError:
                if not (folder / CONFIG_FILE).is_file():
                    raise
                return False  # made meanwhile by another rank: the caller checks it
            log.info(
                f"saved the tokeniser of model {self.model}, layer {self.layer}, k {tokenizer.k} to {folder}"
            )
            return True
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _check(self, tokenizer: HubertTokenizer, folder: Path) -> None:
        recorded = read_config(folder).get("identity") or {}
        differences = _differences(dict(recorded), tokenizer.identity)
        if differences:
            raise SlammingError(
                f"tokeniser folder {folder} was made from other parts than model {self.model}, layer "
                f"{self.layer}, k-means {self.kmeans} ({differences}); delete {folder} to make it again, "
                "or set tokenizer.folder to another path"
            )
        log.info(
            f"reusing tokeniser {folder}: its identity is model {self.model}'s, layer {self.layer}, k {tokenizer.k}"
        )
