"""One process building a cache, for tests/data/test_cache_locks.py (run as a script, two at once).

Usage: ``python tests/data/cache_lock_worker.py KIND TARGET RESULT`` with KIND ``synthetic`` (TARGET:
the cache folder), ``benchmarks`` (TARGET: the build folder) or ``kmeans`` (TARGET: the pickle). The
"waiting for another process" line of :func:`slamming.locks.build_lock` is printed every 0.05 s
instead of every 30 s, so the test sees when this process waits on the lock. RESULT gets a JSON
summary: whether this process built, and what it then read (``done.json``'s text, or the k-means's
centroids hash and the inode of the converted file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import slamming.locks

#: The smallest real synthetic build: 3 spoken stories, no validation split, 16 units.
SYNTHETIC = {
    "num_train_stories": 3,
    "num_val_stories": 0,
    "num_units": 16,
    "fit_stories": 3,
    "tts_workers": 1,
    "progress": False,
}
#: The smallest real benchmark build: one pair of each benchmark, one voice.
BENCHMARKS = {"num_pairs": 1, "voices": ("en-us",), "tts_workers": 1, "progress": False}


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def synthetic_module(cache_dir: str) -> Any:
    """The data module whose cache the synthetic workers build."""
    from slamming.data.pretrain.synthetic import SyntheticSpeechDataModule

    return SyntheticSpeechDataModule(cache_dir=cache_dir, **SYNTHETIC)


def main(kind: str, target: str, result: str) -> None:
    slamming.locks.LOCK_REPORT_SECONDS = 0.05
    messages = _Messages()
    logging.getLogger().addHandler(messages)
    logging.getLogger().setLevel(logging.INFO)
    out: dict[str, Any] = {}
    if kind == "synthetic":
        dm = synthetic_module(target)
        dm.prepare_data()
        out["built"] = any(m.startswith("building the synthetic corpus") for m in messages.lines)
        out["done"] = (dm.build_dir / "done.json").read_text()
    elif kind == "benchmarks":
        from slamming.data.benchmarks.embedded import build_embedded_benchmarks

        summary = build_embedded_benchmarks(target, **BENCHMARKS)
        out["built"] = not summary["reused"]
        out["done"] = (Path(target) / "done.json").read_text()
    elif kind == "kmeans":
        from slamming.speech.kmeans_import import converted_path, load_kmeans

        kmeans = load_kmeans(target, trust_pickle=True)
        out["centroids"] = hashlib.sha256(kmeans.centroids.numpy().tobytes()).hexdigest()
        out["inode"] = converted_path(target).stat().st_ino
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    Path(result).write_text(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
