"""Content hashing: the pinned keys of :mod:`slamming.hashing`, and every call site's key unchanged.

The call sites used to compute ``hashlib.sha256(json.dumps(...)).hexdigest()[:n]`` by hand; the old
expression is recomputed here so a cached build named by it is still found.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from slamming.data.benchmarks.embedded import BUILD_VERSION as BENCH_VERSION
from slamming.data.benchmarks.embedded import build_embedded_benchmarks
from slamming.data.preference.text import TextTriple, story_triples, triples_hash
from slamming.data.preference.tts import spoken_preference_key
from slamming.data.pretrain.synthetic import SyntheticSpeechDataModule
from slamming.data.text.reader import content_hash
from slamming.hashing import settings_key, sha256_file
from slamming.speech.piper import voice_fingerprint
from slamming.tasks.reference import ReferenceKey

SETTINGS = {"b": [1, 2], "a": "x", "c": {"z": 1, "y": None}}


def test_settings_key_is_pinned() -> None:
    assert settings_key(SETTINGS) == "b5640ee0cfe541e3"
    assert settings_key(SETTINGS, length=12) == "b5640ee0cfe5"
    # Key order does not matter: the JSON is key-sorted.
    assert settings_key(dict(reversed(list(SETTINGS.items())))) == "b5640ee0cfe541e3"


def test_sha256_file_is_pinned(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"slamming\n" * 1000)
    expected = "56f0b17eed5cfe81ff01e1b24a5a5d07f164f56d8913d85b520623eb9dff1875"
    assert sha256_file(path) == expected == hashlib.sha256(path.read_bytes()).hexdigest()
    assert voice_fingerprint(path) == expected  # Piper voices are named by the same digest
    big = tmp_path / "big.bin"  # more than one 1 MiB block
    big.write_bytes(bytes(range(256)) * 8193)
    assert sha256_file(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_synthetic_cache_folder_keeps_its_name(tmp_path: Path) -> None:
    dm = SyntheticSpeechDataModule(
        cache_dir=str(tmp_path), num_train_stories=7, num_val_stories=2, num_units=20
    )
    old = hashlib.sha256(json.dumps(dm.settings, sort_keys=True).encode()).hexdigest()[:16]
    assert dm.build_dir == tmp_path / f"stories-{old}"
    normalised = SyntheticSpeechDataModule(cache_dir=str(tmp_path), normalization="utterance")
    old = hashlib.sha256(json.dumps(normalised.settings, sort_keys=True).encode()).hexdigest()[:16]
    assert normalised.build_dir.name == f"stories-{old}"


def test_spoken_preference_key_unchanged() -> None:
    settings = {"texts": triples_hash(story_triples(3, "train")), "engine": "espeak", "tts_seed": 0}
    text = json.dumps(settings, sort_keys=True)
    assert spoken_preference_key(settings) == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    with pytest.raises(ValueError, match="must be JSON-serialisable"):
        spoken_preference_key({"engine": object()})


def test_reference_key_digest_unchanged() -> None:
    key = ReferenceKey(model="m" * 64, data="d" * 64, precision="bf16-mixed")
    old = hashlib.sha256(json.dumps(asdict(key), sort_keys=True).encode()).hexdigest()[:16]
    assert key.digest == old


def test_benchmark_datamodule_folder_name_unchanged() -> None:
    # EmbeddedBenchmarkDataModule names its folder by a list (no keys to sort): same bytes either way.
    for num_pairs, voices, seed in ((400, ["en-us", "en-gb"], 0), (3, ["en-us+m3"], 7)):
        old = hashlib.sha256(json.dumps([num_pairs, voices, seed]).encode()).hexdigest()[:12]
        assert settings_key([num_pairs, voices, seed], length=12) == old


def test_triples_hash_unchanged() -> None:
    triples = story_triples(4, "train") + [TextTriple("a", "b", "c", "x")]
    digest = hashlib.sha256()
    for triple in triples:
        for text in (triple.prompt, triple.chosen, triple.rejected):
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    assert triples_hash(triples) == digest.hexdigest()
    assert triples_hash([]) == content_hash([]) == hashlib.sha256().hexdigest()


def test_embedded_benchmarks_find_a_build_keyed_the_old_way(tmp_path: Path) -> None:
    found = shutil.which("espeak-ng")
    if found is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    version = subprocess.run([found, "--version"], capture_output=True, check=False).stdout.decode(
        errors="replace"
    )
    settings = {
        "build_version": BENCH_VERSION,
        "num_pairs": 3,
        "voices": ["en-us"],
        "seed": 2,
        "rate_range": [150, 190],
        "pitch_range": [35, 65],
        "sample_rate": 16000,
        "espeak": version.split("Data at")[0].strip(),
    }
    old = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    out = tmp_path / "bench"
    out.mkdir()
    (out / "done.json").write_text(json.dumps({"key": old, "hours": 0.5}), encoding="utf-8")
    summary = build_embedded_benchmarks(out, num_pairs=3, voices=["en-us"], seed=2, progress=False)
    assert summary == {"key": old, "hours": 0.5, "reused": True}
