"""Make a tokeniser: fit k-means on speech, or wrap a community k-means file, then save it.

Used by ``slamming tokenizer fit`` and ``slamming tokenizer from-kmeans``; the saved folder is what
``configs/tiny/tokenize.yaml`` (``model.init_args.tokenizer``) and ``UnitExtraction`` load.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from slamming.data.audio.manifest import read_manifest
from slamming.errors import AudioError, SlammingError
from slamming.speech.audio import read_audio
from slamming.speech.hubert import HubertFeatures
from slamming.speech.kmeans import KMeans
from slamming.speech.tokenizers import HubertTokenizer, MFCCTokenizer, hubert_from_kmeans
from slamming.speech.tokenizers.base import CONFIG_FILE


def sample_audio(
    manifest: str, max_files: int, seed: int
) -> tuple[list[torch.Tensor], list[tuple[str, str]]]:
    """Read up to ``max_files`` files of a manifest (a seeded sample), skipping and listing bad ones."""
    entries = read_manifest(manifest)
    if len(entries) > max_files:
        entries = sorted(random.Random(seed).sample(entries, max_files), key=lambda e: e.rel)
    wavs, bad = [], []
    for entry in tqdm(entries, desc="Reading audio for k-means", unit="file"):
        try:
            wavs.append(read_audio(entry.path))
        except AudioError as err:
            bad.append((entry.rel, str(err)))
    if not wavs:
        raise SlammingError(f"no readable audio in {manifest}: {len(bad)} bad file(s)")
    return wavs, bad


def _check_out(out: str, overwrite: bool) -> None:
    """Refuse an ``out`` that holds a tokeniser before any work, not after minutes of fitting."""
    config = Path(out) / CONFIG_FILE
    if config.exists() and not overwrite:
        raise SlammingError(
            f"{config} already exists; pass overwrite=True (--overwrite on the command line) to replace "
            "it, or choose another directory"
        )


def fit_tokenizer(
    kind: str,
    manifest: str,
    out: str,
    k: int,
    model: str | None = None,
    layer: int = 11,
    max_files: int = 2000,
    max_vectors: int = 200_000,
    seed: int = 0,
    device: str = "cpu",
    minibatch: int | None = None,
    overwrite: bool = False,
    **mfcc: Any,
) -> dict[str, Any]:
    """Fit a tokeniser's k-means on speech from ``manifest`` and save it to ``out``; returns its identity.

    Args:
        kind: ``mfcc`` (no model needed) or ``hubert`` (``model``: a HuBERT folder or hub id).
        manifest: audio folder or manifest (see :func:`slamming.data.audio.manifest.read_manifest`).
        out: folder to save the tokeniser to (refused if it already holds one, unless ``overwrite``).
        k: number of units.
        layer: HuBERT layer whose features are clustered.
        max_files: files read (a seeded sample when the manifest is larger).
        max_vectors: feature vectors the k-means sees (a seeded sample).
        seed: seed of the samples and of the k-means.
        device: where features and k-means are computed.
        minibatch: HuBERT only: fit with mini-batch k-means of this batch size (200 steps) instead of
            full-batch Lloyd iterations.
        overwrite: replace a tokeniser already saved in ``out``.
        **mfcc: extra ``MFCCTokenizer`` settings (``segment``, ``frame_rate``, ...).
    """
    _check_out(out, overwrite)
    wavs, bad = sample_audio(manifest, max_files, seed)
    if kind == "mfcc":
        tokenizer = MFCCTokenizer(k=k, **mfcc).fit(wavs, seed=seed, max_vectors=max_vectors)
    elif kind == "hubert":
        if not model:
            raise SlammingError("tokenizer fit --kind hubert needs --model (a HuBERT folder or hub id)")
        features = HubertFeatures(model, layer=layer, device=device)
        vectors = torch.cat([f.to("cpu") for f in features(wavs)])
        if len(vectors) > max_vectors:
            generator = torch.Generator().manual_seed(seed)
            vectors = vectors[torch.randperm(len(vectors), generator=generator)[:max_vectors]]
        if minibatch:
            kmeans = KMeans.fit(vectors, k=k, iters=200, seed=seed, device=device, batch_size=minibatch)
        else:
            kmeans = KMeans.fit(vectors, k=k, seed=seed, device=device)
        tokenizer = HubertTokenizer(model, layer=layer, kmeans=kmeans, device=device)
    else:
        raise SlammingError(f"tokenizer kind must be 'mfcc' or 'hubert', got {kind!r}")
    tokenizer.save(Path(out), overwrite=overwrite)
    return {"identity": tokenizer.identity, "files": len(wavs), "bad_files": bad}


def tokenizer_from_kmeans(
    model: str,
    kmeans: str,
    out: str,
    layer: int = 11,
    trust_pickle: bool = False,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Save a HuBERT tokeniser made of ``model`` and a community k-means file (e.g. ``…_km500.bin``).

    ``out`` is refused if it already holds a tokeniser, unless ``overwrite``. The tokeniser is
    :func:`~slamming.speech.tokenizers.spec.hubert_from_kmeans`'s, as for a config's
    :class:`~slamming.speech.tokenizers.spec.HubertTokenizerSpec`, so both give the same folder.
    """
    _check_out(out, overwrite)
    tokenizer = hubert_from_kmeans(model, kmeans, layer, trust_pickle=trust_pickle, device=device)
    tokenizer.save(Path(out), overwrite=overwrite)
    return {"identity": tokenizer.identity}
