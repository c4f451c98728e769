"""Settings of the synthetic-speech data module that cannot work are one line when it is built,
before the model, the TTS or any data is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from slamming.data.pretrain.synthetic import SyntheticSpeechDataModule
from slamming.errors import ConfigError


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("num_train_stories", -1, "data.num_train_stories must be >= 0, got -1"),
        ("num_val_stories", -5, "data.num_val_stories must be >= 0, got -5"),
        ("tts_workers", 0, "data.tts_workers must be >= 1, got 0"),
        ("tts_seed", -3, "data.tts_seed must be a non-negative integer, got -3"),
        (
            "rate_range",
            (190, 150),
            "data.rate_range must be (low, high) with 1 <= low <= high, got (190, 150)",
        ),
        ("rate_range", (0, 150), "data.rate_range must be (low, high) with 1 <= low <= high, got (0, 150)"),
        ("pitch_range", (-1, 50), "data.pitch_range must be (low, high) with 0 <= low <= high, got (-1, 50)"),
        ("tokenizer", "wav2vec", "data.tokenizer must be 'mfcc' or 'phone', got 'wav2vec'"),
        ("phone_steps", 0, "data.phone_steps must be >= 1, got 0"),
    ],
)
def test_a_setting_that_cannot_work_is_one_config_error(
    tmp_path: Path, setting: str, value: object, message: str
) -> None:
    extra = {"tokenizer": "phone"} if setting == "phone_steps" else {}
    with pytest.raises(ConfigError) as err:
        SyntheticSpeechDataModule(cache_dir=str(tmp_path / "cache"), **{setting: value}, **extra)
    assert str(err.value) == message
    assert not (tmp_path / "cache").exists()


def test_sound_settings_build_the_module_without_touching_the_cache(tmp_path: Path) -> None:
    data = SyntheticSpeechDataModule(
        cache_dir=str(tmp_path / "cache"),
        num_val_stories=0,
        tts_workers=1,
        rate_range=(150, 150),
        pitch_range=(0, 0),
    )
    assert data.settings["rate_range"] == [150, 150] and data.settings["pitch_range"] == [0, 0]
    assert data.tts_workers == 1 and data.val_paths == []
    assert not (tmp_path / "cache").exists()
