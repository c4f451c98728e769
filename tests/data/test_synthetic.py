"""SyntheticSpeechDataModule: stories → espeak-ng → units → corpus, cached, through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slamming.cli import main
from slamming.data.corpus import UnitCorpus
from slamming.data.stories import StoryGenerator
from tests.conftest import TINY_BACKBONE


def _config(tmp_path: Path) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 6,
            "log_every_n_steps": 1,
            "val_check_interval": 3,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "syn"},
            },
        },
        "model": {
            "class_path": "slamming.tasks.pretrain.NextUnitPretraining",
            "init_args": {"backbone": TINY_BACKBONE},
        },
        "data": {
            "class_path": "slamming.data.synthetic.SyntheticSpeechDataModule",
            "init_args": {
                "cache_dir": str(tmp_path / "cache"),
                "num_train_stories": 24,
                "num_val_stories": 6,
                "fit_stories": 12,
                "num_units": 32,
                "progress": False,
                "context_length": 64,
                "batch_size": 4,
            },
        },
    }
    path = tmp_path / "syn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_builds_once_then_reuses_and_trains(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(tmp_path)
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    assert any("building the synthetic corpus" in r.getMessage() for r in caplog.records)
    builds = list((tmp_path / "cache").glob("stories-*"))
    assert len(builds) == 1 and (builds[0] / "done.json").is_file()
    train, val = UnitCorpus(builds[0] / "train"), UnitCorpus(builds[0] / "val")
    assert len(train) == 24 and len(val) == 6
    assert (
        train.tokenizer == val.tokenizer and train.tokenizer["k"] == 32 and train.tokenizer["kind"] == "mfcc"
    )
    stories = StoryGenerator(0).stories(24, "train")
    assert [train.text(i) for i in range(24)] == [s.text for s in stories]
    assert int(train.document(0).max()) < 32 and train.hours > 0
    assert (tmp_path / "runs" / "syn" / "version_0" / "hf_model" / "config.json").is_file()

    caplog.clear()
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    assert any("reusing the cached synthetic corpus" in r.getMessage() for r in caplog.records)
    assert not any("building the synthetic corpus" in r.getMessage() for r in caplog.records)
    assert len(list((tmp_path / "cache").glob("stories-*"))) == 1
