"""The preference data's tokeniser identity, compared in full when known (issue 12, item 6).

The authors' preference ``.jsonl`` does not say which tokeniser made its units, so it used to be
checked on K alone: units of another tokeniser with the same K trained a DPO run silently.
``data.tokenizer_dir`` names the tokeniser; its identity is then compared in full with the
corpora's and the model's, and units of an unknown tokeniser are never mixed with known ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import slamming.cli.lightning  # noqa: F401  (imported at collection: see tests/cli/conftest.py)
from slamming.cli import main
from slamming.data.corpus.meta import META_CHECKSUM, meta_checksum
from slamming.data.preference.corpus import META_FILE, PreferenceCorpusWriter
from slamming.data.preference.datamodule import PreferenceDataModule
from slamming.data.preference.sources import JsonlPreferences
from slamming.errors import CorpusError, TokenizerMismatchError
from slamming.models.unit_lm import UnitLMBuilder, export_hf
from slamming.speech.kmeans import KMeans
from slamming.speech.tokenizers import MFCCTokenizer, recorded_identity, unknown_identity
from tests.conftest import TINY_BACKBONE

K = 20
LINES = [([1, 2, 3], [4, 5], [6, 7]), ([8], [9, 10, 11], [12]), ([13, 14], [15], [16, 19])]


def _tokenizer_folder(path: Path, seed: int, k: int = K) -> Path:
    """A saved MFCC tokeniser with ``k`` random centroids (its identity hashes them)."""
    dim = MFCCTokenizer(k=k, normalization="utterance").features.dim
    centroids = torch.randn(k, dim, generator=torch.Generator().manual_seed(seed))
    MFCCTokenizer(k=k, normalization="utterance", kmeans=KMeans(centroids)).save(path)
    return path


def _jsonl(path: Path) -> Path:
    side = lambda u: {"units": u, "duration": [1] * len(u)}  # noqa: E731
    rows = [{"prompt": side(p), "chosen": side(c), "rejected": side(r)} for p, c, r in LINES * 4]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _corpus(path: Path, identity: dict[str, Any], num_units: int = K) -> Path:
    with PreferenceCorpusWriter(path, tokenizer=identity, num_units=num_units) as writer:
        for p, c, r in LINES:
            writer.add(np.array(p), np.array(c), np.array(r))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tokenisers with the same K and different centroids (identities differ in settings_hash)."""
    root = tmp_path_factory.mktemp("tokenizers")
    return _tokenizer_folder(root / "a", seed=0), _tokenizer_folder(root / "b", seed=1)


def test_a_named_tokeniser_makes_the_jsonl_identity_known(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    path = _jsonl(tmp_path / "p.jsonl")
    named = PreferenceDataModule(
        train=str(path), num_units=K, context_length=16, tokenizer_dir=str(folders[0])
    )
    assert named.tokenizer == recorded_identity(folders[0]) and named.num_units == K
    named.setup("fit")
    (source,) = named._split("train").sources
    assert isinstance(source, JsonlPreferences) and source.tokenizer == recorded_identity(folders[0])
    # Without it the file's tokeniser is not known: only K can be checked, as before.
    plain = PreferenceDataModule(train=str(path), num_units=K, context_length=16)
    assert plain.tokenizer is None


def test_a_named_tokeniser_of_another_k_is_one_line(tmp_path: Path) -> None:
    folder = _tokenizer_folder(tmp_path / "k12", seed=0, k=12)
    with pytest.raises(TokenizerMismatchError) as err:
        PreferenceDataModule(train=str(_jsonl(tmp_path / "p.jsonl")), num_units=K, tokenizer_dir=str(folder))
    assert str(err.value) == (
        f"data.tokenizer_dir {folder} has k=12 but the preference data has K={K}: "
        "give the tokeniser folder that made the units"
    )


def test_a_named_tokeniser_is_compared_in_full_with_the_corpora(
    tmp_path: Path, folders: tuple[Path, Path]
) -> None:
    a, b = (recorded_identity(f) for f in folders)
    corpus = _corpus(tmp_path / "corpus", a)
    jsonl = _jsonl(tmp_path / "p.jsonl")
    with pytest.raises(TokenizerMismatchError) as err:
        PreferenceDataModule(train=[str(corpus), str(jsonl)], tokenizer_dir=str(folders[1]))
    message = str(err.value)
    assert message.startswith(
        f"data.tokenizer_dir {folders[1]} (vs {corpus}): tokeniser mismatch (settings_hash:"
    )
    assert f"expected {a['settings_hash']!r}, got {b['settings_hash']!r}" in message
    same = PreferenceDataModule(
        train=[str(corpus), str(jsonl)], tokenizer_dir=str(folders[0]), context_length=16
    )
    assert same.tokenizer == a and same.num_triples("train") == 3 + 12


def _dpo_config(tmp_path: Path, model: Path, data: dict[str, Any]) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 2,
            "enable_progress_bar": False,
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_checkpointing": False,
        },
        "model": {
            "class_path": "slamming.tasks.DPOAlignment",
            "init_args": {
                "init_from": str(model),
                "reference_cache_dir": str(tmp_path / "ref"),
                "progress": False,
            },
        },
        "data": {
            "class_path": "slamming.data.PreferenceDataModule",
            "init_args": {"context_length": 32, **data},
        },
        "budget": {"max_gpu_hours": 1.0},
    }
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("model_identity", ["a", "unknown"])
def test_dpo_compares_the_named_preference_identity_in_full_with_the_model(
    model_identity: str,
    tmp_path: Path,
    folders: tuple[Path, Path],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same K, another tokeniser: refused before any reference log-prob is computed."""
    monkeypatch.chdir(tmp_path)  # without a logger, Lightning saves the run's config.yaml here
    torch.manual_seed(0)
    identity = recorded_identity(folders[0]) if model_identity == "a" else unknown_identity(K)
    model = export_hf(UnitLMBuilder(**TINY_BACKBONE["init_args"]).build(K), tmp_path / "model", identity)
    jsonl = _jsonl(tmp_path / "p.jsonl")
    config = _dpo_config(
        tmp_path, model, {"train": str(jsonl), "num_units": K, "tokenizer_dir": str(folders[1])}
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("slamming: error: ")]
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1] and "Traceback" not in err, err
    assert errors[0].startswith("slamming: error: preference data (vs the model's tokeniser): tokeniser ")
    if model_identity == "a":
        assert "mismatch (settings_hash: expected" in errors[0]
    else:
        assert "unknown on one side (expected units of an unknown tokeniser" in errors[0]
    assert not (tmp_path / "ref").exists()  # stopped before the reference log-probs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "dpo.yaml", "model", "p.jsonl"]


def test_a_side_with_another_k_than_its_preference_corpus_is_refused(tmp_path: Path) -> None:
    """Each side's ids are bounded by its own meta.json; that K must be the one compared with the model's."""
    identity = {"kind": "test", "frame_rate": 25, "settings_hash": "t0"}  # records no k
    corpus = _corpus(tmp_path / "c", identity)
    side = corpus / "prompt" / "meta.json"
    meta = json.loads(side.read_text())
    meta["num_units"] = 30
    meta[META_CHECKSUM] = meta_checksum(meta)
    side.write_text(json.dumps(meta, indent=2) + "\n")
    binding = json.loads((corpus / META_FILE).read_text())
    binding["sides_meta_sha256"]["prompt"] = hashlib.sha256(side.read_bytes()).hexdigest()
    (corpus / META_FILE).write_text(json.dumps(binding))
    with pytest.raises(CorpusError) as err:
        PreferenceDataModule(train=str(corpus))
    assert str(err.value) == (
        f"{corpus / 'prompt'} holds units of K=30 but {corpus} records K={K}: the prompt side does not "
        "belong to this preference corpus; rebuild it"
    )
