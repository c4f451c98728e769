"""One line, exit status 2 and nothing written for a user's mistake: settings, checkpoints, folders.

Every case runs the real command (``slamming fit``/``test``/``export``/``tokenizer``) through
:func:`slamming.cli.main` and asserts the whole error line, so a message that stops naming the
setting and its fix fails here. The settings are those a config or a flag can get wrong whose check
used to raise a bare ``ValueError`` (a traceback); now a
:class:`~slamming.errors.ConfigError`, which the CLI prints as one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from slamming.data.audio.manifest import read_manifest
from slamming.errors import SlammingError
from tests.cli.user_mistake_helpers import refused, temporaries, tiny_run
from tests.conftest import fit_config

#: (flag, value, the error line after ``slamming: error: ``) for the tiny pretraining config,
#: whose lr is 3e-3 and whose backbone has 256 positions.
BAD_SETTINGS = [
    ("--model.init_args.optimizer", "sgd", "model.optimizer must be one of adamw, adamw8bit; got 'sgd'"),
    (
        "--model.init_args.schedule",
        "linear",
        "model.schedule must be one of inverse_sqrt, cosine, constant; got 'linear'",
    ),
    (
        "--model.init_args.warmup_ratio",
        "1.5",
        "model.warmup_ratio is a fraction of the run and must be in [0, 1], got 1.5",
    ),
    (
        "--model.init_args.min_lr",
        "0.006",
        "the cosine's floor model.min_lr ÷ model.lr must be in [0, 1], got 2: set model.min_lr between 0 "
        "and model.lr",
    ),
    (
        "--data.init_args.context_length",
        "512",
        "the model's max_position_embeddings (256) is below data.context_length (512); lower "
        "data.context_length or raise the backbone's max_position_embeddings",
    ),
    ("--throughput.log_every_n_steps", "0", "throughput.log_every_n_steps must be >= 1, got 0"),
    (
        "--throughput.peak_flops",
        "-1.0",
        "throughput.peak_flops must be a positive FLOP/s figure, got -1.0; leave it null to look the peak "
        "up (CUDA) or measure it (CPU)",
    ),
]


@pytest.mark.parametrize(
    ("flag", "value", "message"), BAD_SETTINGS, ids=[s[0].removeprefix("--") for s in BAD_SETTINGS]
)
def test_a_bad_setting_is_one_line_and_nothing_is_written(
    tmp_path: Path, unit_corpora: dict, capsys: pytest.CaptureFixture, flag: str, value: str, message: str
) -> None:
    config = fit_config(tmp_path, unit_corpora)
    assert refused(capsys, ["fit", "--config", str(config), flag, value]) == f"slamming: error: {message}"
    assert not (tmp_path / "runs").exists()


def test_a_value_outside_a_literal_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    # jsonargparse checks Literal-typed settings while parsing: the same one line, nothing built.
    line = refused(
        capsys, ["fit", "--config", "configs/tiny/dpo.yaml", "--model.init_args.reference", "bogus"]
    )
    assert "Expected a typing.Literal['precomputed', 'live']. Got value: bogus" in line, line
    assert line.endswith("; `slamming fit --help` lists every option"), line


def _noise_folder(folder: Path, n: int = 3) -> Path:
    """``n`` half-second noise clips: audio enough for a tokeniser's options to be read."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        sf.write(folder / f"clip{i}.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)
    return folder


def test_a_bad_tokenizer_option_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    audio = _noise_folder(tmp_path / "audio")
    out = tmp_path / "tok"
    argv = ["tokenizer", "fit", "--kind", "mfcc", "--audio", str(audio), "--k", "0", "--out", str(out)]
    assert refused(capsys, argv) == "slamming: error: k must be in [1, 65536] so units fit uint16, got 0"
    assert not out.exists()


def test_a_symlink_loop_in_an_audio_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    audio = _noise_folder(tmp_path / "audio")
    (audio / "more").mkdir()
    (audio / "more" / "up").symlink_to("..")  # more/up/more/up/... for ever
    message = (
        f"{audio / 'more' / 'up'} is a symbolic link loop: it leads back to {audio}, a folder that contains "
        "it, so the scan would never end; remove the link or give a .tsv/.jsonl manifest"
    )
    with pytest.raises(SlammingError) as err:
        read_manifest(audio)
    assert str(err.value) == message
    out = tmp_path / "tok"
    argv = ["tokenizer", "fit", "--kind", "mfcc", "--audio", str(audio), "--k", "2", "--out", str(out)]
    assert refused(capsys, argv) == f"slamming: error: {message}"
    assert not out.exists()


def test_links_to_other_folders_are_still_followed(tmp_path: Path) -> None:
    audio = _noise_folder(tmp_path / "audio", n=2)
    elsewhere = _noise_folder(tmp_path / "elsewhere", n=1)
    (audio / "linked").symlink_to(elsewhere)
    (audio / "again").symlink_to(elsewhere)  # the same folder twice is no loop: read under both names
    rels = [entry.rel for entry in read_manifest(audio)]
    assert rels == ["again/clip0.wav", "clip0.wav", "clip1.wav", "linked/clip0.wav"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, unit_corpora: dict) -> Path:
    return tiny_run(tmp_path_factory.mktemp("run"), unit_corpora) / "checkpoints" / "last.ckpt"


def _one_pair(root: Path) -> Path:
    """A StoryCloze folder with one pair of short wav files (read, never scored here)."""
    folder = root / "tSC"
    folder.mkdir(parents=True)
    for side in ("correct", "incorrect"):
        sf.write(folder / f"story_{side}.wav", np.zeros(1600, dtype=np.float32), 16000)
    return folder


@pytest.mark.parametrize("kept", ["empty", "64-bytes", "half", "one-byte-short"])
def test_a_truncated_checkpoint_is_one_line_for_export_test_and_resume(
    tmp_path: Path, checkpoint: Path, unit_corpora: dict, capsys: pytest.CaptureFixture, kept: str
) -> None:
    data = checkpoint.read_bytes()
    size = {"empty": 0, "64-bytes": 64, "half": len(data) // 2, "one-byte-short": len(data) - 1}[kept]
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[:size])
    benchmarks = json.dumps([{"kind": "storycloze", "path": str(_one_pair(tmp_path / "bench"))}])
    commands = {
        "export": ["export", str(cut), str(tmp_path / "out")],
        "test": [
            "test",
            "--config",
            "configs/eval.yaml",
            "--trainer.accelerator",
            "cpu",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "runs"),
            "--data.init_args.benchmarks",
            benchmarks,
            "--model.init_args.model",
            str(cut),
        ],
        "resume": ["fit", "--config", str(fit_config(tmp_path, unit_corpora)), "--ckpt_path", str(cut)],
    }
    reason = "the file is empty" if size == 0 else "PytorchStreamReader failed reading zip archive"
    for name, argv in commands.items():
        line = refused(capsys, argv)
        assert line.startswith(f"slamming: error: {cut}: not a readable checkpoint ({reason}"), (name, line)
        assert line.endswith(
            "it may be truncated or in another format: use a .ckpt written by slamming fit"
        ), (name, line)
    assert sorted(os.listdir(tmp_path)) == ["bench", "config.yaml", "cut.ckpt"]
    assert temporaries(tmp_path) == []
