"""Two real processes building the same cache at once: one builds, the other waits and reuses it.

Each test holds the cache's build lock itself while it starts two worker processes
(``cache_lock_worker.py``), and lets go only once both print that they wait for it: the two
builders then certainly overlap, the way two ranks or two runs sharing a cache would. Before the
lock, both built, and the second deleted the first one's ``.partial`` folder under it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slamming.locks import build_lock, lock_path
from tests.data.cache_lock_worker import synthetic_module

WORKER = Path(__file__).with_name("cache_lock_worker.py")
WAITING = "waiting for another process building"

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def exited_pid() -> int:
    """The id of a process that has exited (and been reaped), as a killed builder's would be."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def run_two_builders(kind: str, target: str, lock_target: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """Start two workers while holding ``lock_target``'s lock; release it once both wait on it."""
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    results = [tmp_path / f"worker{i}.json" for i in range(2)]
    with build_lock(lock_target):
        procs = []
        for log, result in zip(logs, results, strict=True):
            with log.open("w") as stream:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), kind, target, str(result)],
                        stdout=stream,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 600  # a guard against a hang, not a timed assertion
        while not all(WAITING in log.read_text() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                for p in procs:
                    p.kill()
                shown = "\n".join(log.read_text()[-2000:] for log in logs)
                pytest.fail(f"the workers did not both wait on the lock:\n{shown}")
            time.sleep(0.05)
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    return [json.loads(result.read_text()) for result in results]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_espeak
def test_two_processes_building_one_synthetic_corpus(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_dir = synthetic_module(str(cache)).build_dir
    # A partial build of a builder killed earlier: removed under the lock, never mixed in.
    stale = build_dir.with_name(build_dir.name + ".partial")
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "junk").write_text("left by a killed build")

    first, second = run_two_builders("synthetic", str(cache), build_dir, tmp_path)

    assert sorted([first["built"], second["built"]]) == [False, True]  # one built, one reused
    assert first["done"] == second["done"] == (build_dir / "done.json").read_text()
    done = json.loads(first["done"])
    assert done["train_documents"] == 3 and done["val_documents"] == 0
    assert sorted(p.name for p in cache.iterdir()) == [build_dir.name]  # no .partial, no lock file
    assert sorted(p.name for p in build_dir.iterdir()) == ["done.json", "tokenizer", "train"]
    from slamming.data.corpus.format import UnitCorpus

    corpus = UnitCorpus(build_dir / "train")
    assert len(corpus) == 3 and int(max(corpus.document(i).max() for i in range(3))) < 16
    assert not (build_dir / "train" / "junk").exists()


@needs_espeak
def test_two_processes_building_one_benchmark_folder(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "n1"
    out.parent.mkdir()
    first, second = run_two_builders("benchmarks", str(out), out, tmp_path)

    assert sorted([first["built"], second["built"]]) == [False, True]
    assert first["done"] == second["done"] == (out / "done.json").read_text()
    assert json.loads(first["done"])["benchmarks"]["lexical"]["rows"] == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["n1"]
    before = tree(out)
    # done.json; per benchmark a manifest, texts and two wavs, and each cloze pair's prefix wav
    assert len(before) == 1 + 4 * 2 + 4 * 2 + 2
    assert not lock_path(out).exists()


def test_two_processes_converting_one_kmeans_pickle(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    cluster = pytest.importorskip("sklearn.cluster")
    from slamming.speech.kmeans_import import converted_path

    points = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32)
    pickle = tmp_path / "km8.bin"
    model = cluster.KMeans(n_clusters=8, n_init=1, random_state=0).fit(points)
    joblib.dump(model, pickle)
    converted = converted_path(pickle)
    # A half-written conversion of a killed process (its pid is in the name): removed.
    stale = converted.with_name(f".{converted.name}.tmp-{exited_pid()}-1-0badcafe")
    stale.write_bytes(b"half a safetensors file")

    first, second = run_two_builders("kmeans", str(pickle), converted, tmp_path)

    expected = hashlib.sha256(model.cluster_centers_.astype(np.float32).tobytes()).hexdigest()
    assert first["centroids"] == second["centroids"] == expected
    assert first["inode"] == second["inode"] == converted.stat().st_ino  # converted once, then read
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("worker")) == [
        "km8.bin",
        "km8.safetensors",
    ]


@needs_espeak
def test_a_preference_build_of_the_same_inputs_is_reused_and_other_inputs_refused(tmp_path: Path) -> None:
    from slamming.data.preference.text import TextTriple
    from slamming.data.preference.tts import build_spoken_preferences
    from slamming.errors import SlammingError
    from slamming.speech.tokenizers import MFCCTokenizer
    from slamming.speech.tts import EspeakEngine

    engine = EspeakEngine(voices=["en-us"])
    tokenizer = tmp_path / "tok"
    wavs = [engine.synthesize(text, "en-us", 175, 50) for text in ("Hello there.", "A cat sat on the mat.")]
    MFCCTokenizer(k=8, segment=False).fit(wavs, seed=0).save(tokenizer)
    triples = [TextTriple("Hello there.", "General Kenobi.", "Good morning.", "t0")]
    out = tmp_path / "cache" / "build"
    # What a second process finds once the first one's build is done (it waited on the lock).
    built = build_spoken_preferences(out, triples, [], tokenizer, engine, progress=False, info={"n": 1})
    stamp = (out / "done.json").stat().st_mtime_ns
    again = build_spoken_preferences(out, triples, [], tokenizer, engine, progress=False, info={"n": 1})
    assert again == json.loads(json.dumps(built)) == json.loads((out / "done.json").read_text())
    assert (out / "done.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in out.parent.iterdir()) == ["build"]  # no .partial, no lock file
    with pytest.raises(SlammingError, match="already holds a finished spoken preference build of other"):
        build_spoken_preferences(out, triples, [], tokenizer, engine, progress=False, info={"n": 2})
