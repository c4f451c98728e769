"""``slamming test`` checks the model and its tokeniser before it builds any benchmark data.

configs/tiny/eval.yaml scores on the embedded benchmarks, which are spoken by espeak-ng on first
use (minutes and 1.3 GB with its settings). A model that cannot be scored — its export records no
tokeniser, or the tokeniser folder given has no centroids — is refused in one line, and the
benchmark cache folder is never created: nothing was built, not even begun. The config's data
settings are checked first, as cheaply. (The build itself, after a model that can be scored, is
tests/tasks/test_evaluate.py::test_embedded_benchmarks_build_and_evaluate.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from slamming.speech.tokenizers import MFCCTokenizer
from tests.cli.user_mistake_helpers import refused, tiny_run


@pytest.fixture(scope="module")
def export_without_tokenizer(tmp_path_factory: pytest.TempPathFactory, unit_corpora: dict) -> Path:
    run = tiny_run(tmp_path_factory.mktemp("run"), unit_corpora)
    export = run / "hf_model"
    assert (export / "config.json").is_file() and not (export / "tokenizer").exists()
    return export


def _tiny_eval(tmp_path: Path, model: Path, *extra: str) -> list[str]:
    """configs/tiny/eval.yaml on ``model``, with its cache and logs under ``tmp_path``."""
    return [
        "test",
        "--config",
        "configs/tiny/eval.yaml",
        "--model.init_args.model",
        str(model),
        "--data.init_args.cache_dir",
        str(tmp_path / "embedded"),
        "--data.init_args.num_pairs",
        "2",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
        *extra,
    ]


def test_a_model_without_tokenizer_is_refused_before_any_benchmark_is_built(
    tmp_path: Path, export_without_tokenizer: Path, capsys: pytest.CaptureFixture
) -> None:
    line = refused(capsys, _tiny_eval(tmp_path, export_without_tokenizer))
    assert line == (
        f"slamming: error: {export_without_tokenizer} records no tokeniser folder; set "
        "model.init_args.tokenizer to the folder of the tokeniser the model was trained with "
        "(tokenizer.json + kmeans.safetensors)"
    )
    assert not (tmp_path / "embedded").exists()
    assert not (tmp_path / "runs").exists()


def test_a_tokenizer_without_centroids_is_refused_before_any_benchmark_is_built(
    tmp_path: Path, export_without_tokenizer: Path, capsys: pytest.CaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    waves = [torch.from_numpy(rng.standard_normal(8000).astype(np.float32)) for _ in range(4)]
    folder = MFCCTokenizer(k=20, segment=False, normalization="utterance").fit(waves).save(tmp_path / "tok")
    (folder / "kmeans.safetensors").unlink()
    line = refused(
        capsys, _tiny_eval(tmp_path, export_without_tokenizer, "--model.init_args.tokenizer", str(folder))
    )
    assert line.startswith(f"slamming: error: k-means file {folder / 'kmeans.safetensors'} does not exist")
    assert not (tmp_path / "embedded").exists()
    # The same folder with its centroids back is accepted as far as the model goes: what refuses it
    # now is the model's own record (another tokeniser made the test corpora's units).
    shutil.rmtree(folder)
    MFCCTokenizer(k=20, segment=False, normalization="utterance").fit(waves).save(folder)
    line = refused(
        capsys, _tiny_eval(tmp_path, export_without_tokenizer, "--model.init_args.tokenizer", str(folder))
    )
    assert "tokeniser mismatch" in line and "kind: expected 'test', got 'mfcc'" in line, line
    assert not (tmp_path / "embedded").exists()


def test_bad_benchmark_settings_are_one_line_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "no-model"  # never read: the data settings are refused first
    line = refused(capsys, _tiny_eval(tmp_path, missing, "--data.init_args.tts_workers", "0"))
    assert line == (
        "slamming: error: data.num_pairs, data.cloze_pairs and data.tts_workers must be at least 1 and "
        "data.seed at least 0, got num_pairs=2, cloze_pairs=1000, tts_workers=0, seed=0"
    )
    line = refused(capsys, _tiny_eval(tmp_path, missing, "--data.init_args.voices", "[]"))
    assert line == (
        "slamming: error: data.voices is empty; list espeak-ng voices, or leave it null for the defaults"
    )
    line = refused(capsys, _tiny_eval(tmp_path, missing, "--data.init_args.sample_rate", "0"))
    assert line == (
        "slamming: error: data.sample_rate must be a positive rate in Hz (16000 for slamming's tokenisers), got 0"
    )
    assert not (tmp_path / "embedded").exists()
