"""Import the community's pickled scikit-learn k-means (``..._km500.bin``) as a plain tensor file.

The HuBERT unit k-means files used by Slam, TWIST and GSLM are joblib pickles of scikit-learn
``KMeans`` / ``MiniBatchKMeans`` objects. Unpickling runs whatever code the file names, so
:func:`load_sklearn_kmeans` refuses unless the caller passes ``trust_pickle=True``. With it, the
pickle is loaded once, its ``cluster_centers_`` become a safetensors file next to it (see
:func:`converted_path`) with the pickle's sha256 in the header, and :func:`load_kmeans` then uses
that tensor file without unpickling again, as long as the pickle's sha256 still matches.

The conversion holds a file lock on the tensor file (:func:`~slamming.locks.build_lock`): when
several processes (the ranks of an extraction) need it at once, one converts and the others wait,
then read its file; a converted file that is already there is read without the lock.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from slamming.atomic import remove_stale_temporaries
from slamming.errors import SlammingError
from slamming.hashing import sha256_file
from slamming.locks import build_lock
from slamming.speech.kmeans import KMeans

__all__ = ["converted_path", "load_kmeans", "load_sklearn_kmeans"]

_SUFFIX = ".safetensors"


def converted_path(path: str | os.PathLike[str]) -> Path:
    """Where the tensor copy of a pickled k-means goes: ``km500.bin`` → ``km500.safetensors``."""
    return Path(path).with_suffix(_SUFFIX)


def _refuse(path: Path) -> SlammingError:
    return SlammingError(
        f"{path} is a pickle, and unpickling runs code stored in the file; pass trust_pickle=True "
        "(--trust-pickle) only for a file from a source you trust, and slamming will convert it once "
        f"to the tensor file {converted_path(path).name} and use that afterwards"
    )


def load_sklearn_kmeans(
    path: str | os.PathLike[str],
    trust_pickle: bool = False,
    out: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
) -> KMeans:
    """Unpickle a scikit-learn k-means and save its centroids as a safetensors file.

    Args:
        path: joblib pickle of a fitted ``sklearn.cluster.KMeans`` or ``MiniBatchKMeans``.
        trust_pickle: must be True; unpickling executes code from the file.
        out: where to write the tensor file; default :func:`converted_path` of ``path``.
        device: where the returned centroids live.

    Returns:
        The centroids (``cluster_centers_`` as float32) as a :class:`KMeans`.

    Raises:
        SlammingError: ``trust_pickle`` is False, the file is missing or is not a fitted k-means, or
            scikit-learn/joblib is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise SlammingError(f"k-means file {path} does not exist; fix the path or download the file first")
    if not trust_pickle:
        raise _refuse(path)
    try:
        import joblib
        import sklearn
    except ImportError as err:
        raise SlammingError(
            f"reading the pickled k-means {path} needs scikit-learn and joblib ({err}); "
            "run `pip install scikit-learn`"
        ) from err
    target = Path(out) if out is not None else converted_path(path)
    with build_lock(target):
        remove_stale_temporaries(target)  # half-written copies of processes killed while converting
        return _convert(path, target, sklearn.__version__, joblib.load).to(device)


def _convert(path: Path, target: Path, sklearn_version: str, load: Callable[[Path], Any]) -> KMeans:
    """Unpickle ``path`` with ``load`` and save its centroids to ``target`` (under its build lock)."""
    source_sha256 = sha256_file(path)
    try:
        with warnings.catch_warnings():
            # Files pickled by older scikit-learn versions warn about the version on every load.
            warnings.simplefilter("ignore")
            model = load(path)
    except Exception as err:  # an arbitrary pickle can raise anything
        raise SlammingError(
            f"cannot unpickle k-means file {path} ({type(err).__name__}: {err}); check that it is a "
            "joblib file of a scikit-learn k-means and that it is not truncated"
        ) from err
    centers = getattr(model, "cluster_centers_", None)
    if centers is None:
        raise SlammingError(
            f"{path} holds a {type(model).__name__}, not a fitted scikit-learn k-means (no cluster_centers_); "
            "use the k-means file that belongs to the HuBERT layer"
        )
    array = np.asarray(centers)
    if array.ndim != 2 or array.shape[0] == 0 or not np.isfinite(array).all():
        raise SlammingError(
            f"{path}: cluster_centers_ has shape {array.shape} or non-finite values; the k-means file is broken"
        )
    kmeans = KMeans(torch.from_numpy(array.astype(np.float32)))
    kmeans.save(
        target,
        metadata={
            "source_name": path.name,
            "source_sha256": source_sha256,
            "source_class": type(model).__name__,
            "sklearn_version": str(sklearn_version),
        },
    )
    return kmeans


def _recorded_sha256(path: Path) -> str | None:
    """The ``source_sha256`` in a tensor file's header, or None if unreadable or absent."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("source_sha256")
    except (SafetensorError, OSError):
        return None


def load_kmeans(
    path: str | os.PathLike[str], trust_pickle: bool = False, device: torch.device | str = "cpu"
) -> KMeans:
    """Load k-means centroids from a safetensors file or a (converted) scikit-learn pickle.

    A ``.safetensors`` path is read directly. For a pickle, a sibling tensor file whose recorded
    ``source_sha256`` equals the pickle's sha256 is used without unpickling; otherwise the pickle is
    converted by :func:`load_sklearn_kmeans` (which needs ``trust_pickle=True``).

    Args:
        path: ``.safetensors`` centroids or a joblib pickle of a scikit-learn k-means.
        trust_pickle: allow unpickling when no matching tensor file exists.
        device: where the centroids live.

    Raises:
        SlammingError: missing file, untrusted pickle without a matching conversion, or a bad file.
    """
    path = Path(path)
    if path.suffix == _SUFFIX:
        return KMeans.load(path, device=device)
    if not path.is_file():
        sibling = converted_path(path)
        hint = f"; the converted {sibling} exists, pass that instead" if sibling.is_file() else ""
        raise SlammingError(f"k-means file {path} does not exist{hint}")
    sibling = converted_path(path)
    source_sha256 = sha256_file(path)
    if sibling.is_file() and _recorded_sha256(sibling) == source_sha256:
        return KMeans.load(sibling, device=device)
    if not trust_pickle:
        raise _refuse(path)
    with build_lock(sibling):  # another process converting it meanwhile: wait, then read its file
        if sibling.is_file() and _recorded_sha256(sibling) == source_sha256:
            return KMeans.load(sibling, device=device)
        return load_sklearn_kmeans(path, trust_pickle=trust_pickle, device=device)
