"""``make bench`` rows C11/C12 (perf-anchors §8a): HuBERT unit extraction and k-means on the CPU.

A randomly initialised HuBERT shaped like ``transformers.HubertConfig()`` (hubert-base: 12 layers,
hidden 768, FFN 3072, 512-channel conv encoder, strides 5·2·2·2·2·2·2 = 320 → 50 Hz) is saved to a
temporary folder and loaded through :class:`slamming.speech.hubert.HubertFeatures`, once per
depth. A 25 Hz variant adds one conv layer (kernel 2, stride 2), as mHuBERT-base-25Hz does.

* Real-time factor: audio seconds ÷ seconds of ``HubertFeatures(...)(clips)`` for the full depth,
  stopping at layer 11 and at layer 9; the variants alternate (full, L11, L9, full, ...) and each
  speed-up is the median of the per-repeat ratios.
* k-means share: ``KMeans.assign`` on the layer-11 features (one call on the concatenated frames,
  as ``HubertTokenizer.encode_batch`` does) ÷ (layer-11 extraction + that assignment).
* Assignment speed: ``KMeans.assign`` (torch matmul + argmin on the centroids' device) ÷
  scikit-learn ``KMeans.predict`` frames/s on the same frames and centroids (a scikit-learn fit of
  the layer-11 features), interleaved, median ratio; plus the fraction of equal labels.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_report import Row

from slamming.speech.hubert import HubertFeatures
from slamming.speech.kmeans import KMeans

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ExtractConfig:
    """Sizes of the extraction benchmark (defaults: hubert-base shape, 60 s of audio)."""

    hidden: int = 768
    ffn: int = 3072
    heads: int = 12
    conv_channels: int = 512
    layers: int = 12
    audio_s: float = 60.0
    clip_s: float = 10.0
    repeats: int = 5
    repeats_25hz: int = 3
    with_25hz: bool = True
    k: int = 500
    assign_frames: int = 100_000
    assign_repeats: int = 5
    fit_frames: int = 20_000
    fit_iters: int = 5
    small_chunk: int = 1024
    seed: int = 0

    @property
    def depths(self) -> dict[str, int]:
        """Variant name → ``hidden_states`` index computed by HubertFeatures."""
        return {"full": self.layers, "L11": 11, "L9": 9}


QUICK_EXTRACT = ExtractConfig(
    hidden=32,
    ffn=64,
    heads=2,
    conv_channels=32,
    audio_s=4.0,
    clip_s=2.0,
    repeats=2,
    repeats_25hz=1,
    k=16,
    assign_frames=4000,
    assign_repeats=2,
    fit_frames=1000,
    fit_iters=2,
    small_chunk=256,
)


def save_random_hubert(directory: Path, cfg: ExtractConfig, frame_rate: int = 50) -> Path:
    """Save a random-init ``HubertModel`` from ``HubertConfig()`` defaults, resized by ``cfg``.

    ``frame_rate=25`` appends one conv layer (kernel 2, stride 2) to the 50 Hz encoder.
    """
    from transformers import HubertConfig, HubertModel

    base = HubertConfig()
    kernels, strides = list(base.conv_kernel), list(base.conv_stride)
    if frame_rate == 25:
        kernels.append(2)
        strides.append(2)
    elif frame_rate != 50:
        raise ValueError(f"frame_rate must be 50 or 25, got {frame_rate}")
    config = HubertConfig(
        hidden_size=cfg.hidden,
        intermediate_size=cfg.ffn,
        num_attention_heads=cfg.heads,
        num_hidden_layers=cfg.layers,
        conv_dim=tuple([cfg.conv_channels] * len(kernels)),
        conv_kernel=tuple(kernels),
        conv_stride=tuple(strides),
        num_feat_extract_layers=len(kernels),
    )
    torch.manual_seed(cfg.seed)
    HubertModel(config).save_pretrained(directory)
    return directory


def synthetic_speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-speech-like 16 kHz signal: gliding 100–150 Hz harmonics, 4 Hz syllable envelope, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 125.0 + 25.0 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(h * phase) / h for h in range(1, 11))
    envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 4.0 * t))
    return (0.1 * envelope * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def clips_of(audio: np.ndarray, clip_s: float) -> list[torch.Tensor]:
    """Equal-length clips (the last partial clip dropped), as utterances of a corpus would be."""
    n = int(clip_s * SAMPLE_RATE)
    return [torch.from_numpy(audio[s : s + n].copy()) for s in range(0, len(audio) - n + 1, n)]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure_extraction(
    cfg: ExtractConfig, model_dir: Path, clips: list[torch.Tensor], repeats: int
) -> dict[str, Any]:
    """Interleaved timings of each depth over ``clips``, plus assignment on the layer-11 features.

    Args:
        cfg: sizes and repeats.
        model_dir: a saved HuBERT folder.
        clips: the waveforms, extracted as one list per pass.
        repeats: interleaved rounds over the depths.

    Returns:
        Per-variant seconds per repeat, the assignment seconds, the last pass's layer-11 features
        (concatenated) and the frames per pass of each variant.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    extractors = {name: HubertFeatures(model_dir, layer=layer) for name, layer in cfg.depths.items()}
    for extractor in extractors.values():  # warm-up: one clip each
        extractor(clips[:1])
    seconds: dict[str, list[float]] = {name: [] for name in extractors}
    assign_s: list[float] = []
    features: torch.Tensor | None = None
    kmeans: KMeans | None = None
    for _ in range(repeats):
        for name, extractor in extractors.items():
            feats, elapsed = _timed(lambda e=extractor: e(clips))
            seconds[name].append(elapsed)
            if name != "L11":
                continue
            features = torch.cat(feats)
            if kmeans is None:  # centroids: cfg.k distinct layer-11 frames
                pick = torch.randperm(len(features), generator=torch.Generator().manual_seed(cfg.seed))
                kmeans = KMeans(features[pick[: cfg.k]])
                kmeans.assign(features)
            _, elapsed = _timed(lambda f=feats, km=kmeans: km.assign(torch.cat(f)))
            assign_s.append(elapsed)
    assert features is not None  # repeats >= 1 and "L11" is one of the depths
    frames = {name: extractors[name].num_frames(len(clips[0])) * len(clips) for name in extractors}
    return {"seconds": seconds, "assign_s": assign_s, "features": features, "frames": frames}


def measure_assignment(cfg: ExtractConfig, features: torch.Tensor, threads: int) -> dict[str, Any]:
    """``KMeans.assign`` vs scikit-learn ``predict`` frames/s on the same frames and centroids.

    The frames are the layer-11 features tiled to ``cfg.assign_frames`` rows with Gaussian noise of
    0.1 × each dimension's standard deviation. scikit-learn is fitted (random init: its k-means++
    took 70 s here; one init, ``cfg.fit_iters`` Lloyd iterations) in float32 on the first
    ``cfg.fit_frames`` of them, and its float32 ``cluster_centers_`` become the torch centroids.
    ``KMeans.assign`` is timed with its default chunking and with ``chunk_size=cfg.small_chunk``.
    scikit-learn runs under ``threadpool_limits(threads)``.
    """
    from sklearn.cluster import KMeans as SkKMeans
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(cfg.seed)
    base = features.numpy()
    rows = base[np.arange(cfg.assign_frames) % len(base)]
    noise = rng.standard_normal(rows.shape, dtype=np.float32) * (0.1 * base.std(axis=0))
    x = np.ascontiguousarray(rows + noise, dtype=np.float32)
    with threadpool_limits(limits=threads):
        fit_start = time.perf_counter()
        sk = SkKMeans(
            n_clusters=cfg.k, n_init=1, max_iter=cfg.fit_iters, random_state=cfg.seed, init="random"
        ).fit(x[: cfg.fit_frames])
        fit_s = time.perf_counter() - fit_start
        ours = KMeans(torch.from_numpy(np.ascontiguousarray(sk.cluster_centers_, dtype=np.float32)))
        xt = torch.from_numpy(x)
        ours_labels, sk_labels = ours.assign(xt).numpy(), sk.predict(x)  # warm-up and labels
        ours.assign(xt, chunk_size=cfg.small_chunk)
        sides: dict[str, Callable[[], Any]] = {
            "ours": lambda: ours.assign(xt),
            "ours_small_chunk": lambda: ours.assign(xt, chunk_size=cfg.small_chunk),
            "sklearn": lambda: sk.predict(x),
        }
        fps: dict[str, list[float]] = {name: [] for name in sides}
        for i in range(cfg.assign_repeats):
            names = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in names:
                fps[name].append(len(x) / _timed(sides[name])[1])
    differ = np.flatnonzero(ours_labels != sk_labels)
    gaps: list[float] = []
    if len(differ):
        centers = sk.cluster_centers_.astype(np.float64)
        rows64 = x[differ].astype(np.float64)
        d_ours = ((rows64 - centers[ours_labels[differ]]) ** 2).sum(axis=1)
        d_sk = ((rows64 - centers[sk_labels[differ]]) ** 2).sum(axis=1)
        gaps = (np.abs(d_ours - d_sk) / np.minimum(d_ours, d_sk).clip(min=1e-30)).tolist()
    return {
        "frames": len(x),
        "fit_s": fit_s,
        "sklearn_iterations": int(sk.n_iter_),
        "ours_fps": fps["ours"],
        "ours_small_chunk_fps": fps["ours_small_chunk"],
        "sklearn_fps": fps["sklearn"],
        "ratios": [o / s for o, s in zip(fps["ours"], fps["sklearn"], strict=True)],
        "small_chunk_ratios": [o / s for o, s in zip(fps["ours_small_chunk"], fps["sklearn"], strict=True)],
        "agreement": 1.0 - len(differ) / len(x),
        "disagreements": len(differ),
        "max_relative_gap": max(gaps) if gaps else 0.0,
    }


def _ratios(seconds: dict[str, list[float]], slow: str, fast: str) -> list[float]:
    return [a / b for a, b in zip(seconds[slow], seconds[fast], strict=True)]


def run_extract_bench(cfg: ExtractConfig, threads: int) -> dict[str, Any]:
    """Build the model(s), run every measurement and return the JSON-able result (without rows)."""
    audio = synthetic_speechlike(cfg.audio_s, seed=cfg.seed)
    clips = clips_of(audio, cfg.clip_s)
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE
    out: dict[str, Any] = {"audio_s": audio_s, "clips": len(clips)}
    with tempfile.TemporaryDirectory(prefix="slamming-extract-bench-") as tmp:
        hz50 = measure_extraction(
            cfg, save_random_hubert(Path(tmp) / "hubert50", cfg, 50), clips, cfg.repeats
        )
        assign = measure_assignment(cfg, hz50.pop("features"), threads)
        out["hz50"], out["assign"] = hz50, assign
        if cfg.with_25hz:
            model25 = save_random_hubert(Path(tmp) / "hubert25", cfg, 25)
            hz25 = measure_extraction(cfg, model25, clips, cfg.repeats_25hz)
            hz25.pop("features")
            out["hz25"] = hz25
    return out


def _share(run: dict[str, Any]) -> float:
    """Median over repeats of assignment ÷ (layer-11 extraction + assignment)."""
    return statistics.median(a / (e + a) for a, e in zip(run["assign_s"], run["seconds"]["L11"], strict=True))


def extract_rows(result: dict[str, Any]) -> list[Row]:
    """The table rows of C11/C12 from :func:`run_extract_bench`'s result."""
    audio_s = result["audio_s"]
    rows: list[Row] = []
    runs = [("50 Hz", result["hz50"])] + ([("25 Hz", result["hz25"])] if "hz25" in result else [])
    for label, run in runs:
        sec = run["seconds"]
        for name, text in (("full", "full depth"), ("L11", "stop at layer 11"), ("L9", "stop at layer 9")):
            rtf = audio_s / statistics.median(sec[name])
            rows.append(Row(f"{label} extraction × real time, {text}", rtf, None, ".1f"))
        main = label == "50 Hz"
        rows.append(
            Row(
                f"{label} speed-up L11 ÷ full (median ratio)",
                statistics.median(_ratios(sec, "full", "L11")),
                (">=", 1.05) if main else None,
            )
        )
        rows.append(
            Row(
                f"{label} speed-up L9 ÷ full (median ratio)",
                statistics.median(_ratios(sec, "full", "L9")),
                (">=", 1.15) if main else None,
            )
        )
        best = {name: min(times) for name, times in sec.items()}
        for depth in ("L11", "L9"):
            rows.append(Row(f"{label} speed-up {depth} ÷ full, best of repeats", best["full"] / best[depth]))
        rows.append(
            Row(
                f"{label} k-means share of L11 extraction",
                _share(run),
                ("<=", 0.02) if main else None,
                ".4f",
            )
        )
    a = result["assign"]
    rows += [
        Row("k-means frames/s: KMeans.assign (torch, median)", statistics.median(a["ours_fps"]), None, ".0f"),
        Row("k-means frames/s: sklearn predict (median)", statistics.median(a["sklearn_fps"]), None, ".0f"),
        Row("k-means assign ÷ sklearn predict (median ratio)", statistics.median(a["ratios"]), (">=", 1.0)),
        Row(
            f"same, KMeans.assign(chunk_size={result['config']['small_chunk']})",
            statistics.median(a["small_chunk_ratios"]),
            None,
        ),
        Row("k-means labels equal to sklearn (fraction)", a["agreement"], (">=", 1.0), ".6f"),
        Row("largest relative distance gap where labels differ", a["max_relative_gap"], None, ".1e"),
    ]
    return rows


def extract_log_section(result: dict[str, Any], rows: list[Row], table_text: str, json_path: Any) -> str:
    """The dated Markdown section for docs/perf-log.md."""
    cfg, env, a = result["config"], result["environment"], result["assign"]
    per_rep = "; ".join(
        f"{label} {name}: " + ", ".join(f"{s:.2f}" for s in result[key]["seconds"][name])
        for key, label in (("hz50", "50 Hz"), ("hz25", "25 Hz"))
        if key in result
        for name in ("full", "L11", "L9")
    )
    lines = [
        f"## {result['date']} — `make bench`: HuBERT extraction real-time factor, k-means assignment",
        "",
        f"- Machine: {env['machine']}; torch {env['torch']}, transformers {env['transformers']}, "
        f"python {env['python']}; `torch.set_num_threads({cfg['threads']})`, fp32, eager.",
        f"- Model: random-init `HubertModel` from `HubertConfig()` defaults, {cfg['layers']} layers, hidden "
        f"{cfg['hidden']}, FFN {cfg['ffn']}, {cfg['heads']} heads, {cfg['conv_channels']}-channel conv encoder "
        "(50 Hz: strides 5·2·2·2·2·2·2; 25 Hz: one more kernel-2 stride-2 conv), loaded through "
        "`HubertFeatures(layer=12 | 11 | 9)` (layers after the target are dropped).",
        f"- Audio: {result['audio_s']:.0f} s of synthetic voiced-speech-like signal in {result['clips']} clips of "
        f"{cfg['clip_s']:.0f} s, one `HubertFeatures` call per pass (after one warm-up clip); full / L11 / L9 "
        f"interleaved × {cfg['repeats']} (25 Hz × {cfg['repeats_25hz']}), medians; RTF = audio s ÷ compute s.",
        f"- k-means share: k = {cfg['k']}, centroids = {cfg['k']} layer-11 frames; `KMeans.assign` on the "
        "concatenated layer-11 features after each L11 pass ÷ (that pass + assignment), median.",
        f"- Assign vs sklearn: {a['frames']} frames (layer-11 features tiled, + 0.1·std Gaussian noise), "
        f"float32; scikit-learn KMeans(k={cfg['k']}, init='random', n_init=1, max_iter={cfg['fit_iters']}) fitted on "
        f"{cfg['fit_frames']} of them in {a['fit_s']:.1f} s; its centres used by both sides; "
        f"interleaved × {cfg['assign_repeats']}, median ratio; sklearn under `threadpool_limits("
        f"{cfg['threads']})`. Labels differ on {a['disagreements']} frames.",
        f"- Load average (1 min) before / after: {result['load_average']['before'][0]:.2f} / "
        f"{result['load_average']['after'][0]:.2f}. Wall time {result['elapsed_s']:.0f} s.",
        f"- Per-repeat seconds: {per_rep}.",
        "- Per-repeat assign ÷ predict: "
        + ", ".join(f"{r:.3f}" for r in a["ratios"])
        + f"; with chunk_size={cfg['small_chunk']}: "
        + ", ".join(f"{r:.3f}" for r in a["small_chunk_ratios"])
        + ".",
        "",
        table_text,
        "",
    ]
    lines += [f"- Note: {n}" for n in result.get("notes") or []]
    if json_path is not None:
        lines.append(f"- JSON: `{json_path}`")
    return "\n".join(lines) + "\n\n"
