"""SpokenPreferenceDataModule: text triples → auto-BLEU filter → espeak-ng → the model's units → DPO (issue 4, C3).

Everything is real: a tiny pretraining on espeak speech gives the policy and its MFCC tokeniser,
and the DPO fits run through ``slamming fit``.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slamming.cli import main
from slamming.data.preference.corpus import PreferenceCorpus
from slamming.data.preference.spoken import SpokenPreferenceDataModule
from slamming.data.preference.text import read_swag_csv, split_triples, story_triples
from slamming.data.text.repetition import auto_bleu
from slamming.errors import SlammingError
from slamming.models.loading import load_unit_lm
from slamming.speech.tts import DEFAULT_VOICES
from tests.conftest import speech_fit_config

SWAG_HEADER = [
    "video-id",
    "fold-ind",
    "startphrase",
    "sent1",
    "sent2",
    "gold-source",
    "ending0",
    "ending1",
    "ending2",
    "ending3",
    "label",
]
# (sent1, sent2, four endings, label): short, plausible, never repeating a bigram much.
SWAG_ROWS = [
    (
        "A man walks into the kitchen.",
        "He",
        "opens the fridge.",
        "flies to the moon.",
        "eats a chair.",
        "sings to a rock.",
        0,
    ),
    (
        "The girl holds a red kite.",
        "She",
        "swims under the car.",
        "runs across the field.",
        "paints the sky.",
        "reads a spoon.",
        1,
    ),
    (
        "A dog waits by the door.",
        "It",
        "drives a truck.",
        "bakes a pie.",
        "barks at the mailman.",
        "writes a letter.",
        2,
    ),
    (
        "The boy climbs a tall tree.",
        "He",
        "melts into water.",
        "orders a pizza.",
        "types on a laptop.",
        "reaches the top branch.",
        3,
    ),
    (
        "A woman pours hot tea.",
        "She",
        "sips it slowly.",
        "throws the cup away.",
        "plants a garden.",
        "buys a horse.",
        0,
    ),
    (
        "The chef slices an onion.",
        "He",
        "juggles the stove.",
        "puts it in the pan.",
        "paints the knife.",
        "calls a taxi.",
        1,
    ),
    (
        "Two friends kick a ball.",
        "They",
        "sleep on the grass.",
        "fly a plane.",
        "score a goal.",
        "cook some soup.",
        2,
    ),
    (
        "A cat sees a small mouse.",
        "It",
        "reads the news.",
        "swims in the sea.",
        "knits a scarf.",
        "chases it under the bed.",
        3,
    ),
    (
        "The teacher writes on the board.",
        "The students",
        "copy the notes.",
        "leave for lunch.",
        "dance on desks.",
        "paint the walls.",
        0,
    ),
    (
        "A baby drops a bottle.",
        "The mother",
        "buys a boat.",
        "picks it up.",
        "climbs a wall.",
        "reads a map.",
        1,
    ),
    (
        "The farmer feeds the cows.",
        "They",
        "fly south.",
        "play chess.",
        "eat the fresh hay.",
        "sing a song.",
        2,
    ),
    (
        "A runner laces her shoes.",
        "She",
        "bakes bread.",
        "swims home.",
        "paints a door.",
        "starts the race.",
        3,
    ),
]
# Prompt + chosen repeats one bigram loop: auto-BLEU near 1, above the paper's 0.3.
PLANTED = (
    "the dog ran the dog ran the dog ran",
    "The dog",
    "ran the dog ran.",
    "sat down.",
    "ate food.",
    "slept.",
    0,
)


def swag_csv(path: Path, rows: list[tuple[Any, ...]], header: list[str] | None = None) -> Path:
    header = SWAG_HEADER if header is None else header
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, (sent1, sent2, e0, e1, e2, e3, label) in enumerate(rows):
            full = {
                "video-id": f"anetv_{i}",
                "fold-ind": str(i),
                "startphrase": f"{sent1} {sent2}",
                "sent1": sent1,
                "sent2": sent2,
                "gold-source": "gold",
                "ending0": e0,
                "ending1": e1,
                "ending2": e2,
                "ending3": e3,
                "label": str(label),
            }
            writer.writerow([full[column] for column in header])
    return path


def _pretrain_config(root: Path) -> Path:
    return speech_fit_config(root, name="syn")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny pretraining on espeak story speech: its checkpoint (recording the MFCC tokeniser) and export."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("pre")
    main(["fit", "--config", str(_pretrain_config(root))])
    run = root / "runs" / "syn" / "version_0"
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    assert (run / "hf_model" / "tokenizer").is_dir()
    return {"ckpt": ckpt, "hf_model": run / "hf_model"}


def _dpo_config(root: Path, init_from: Path, **data: Any) -> Path:
    cfg: dict[str, Any] = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 4,
            "log_every_n_steps": 1,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root / "runs"), "name": "dpo"},
            },
        },
        "model": {
            "class_path": "slamming.tasks.DPOAlignment",
            "init_args": {
                "init_from": str(init_from),
                "lr": 3e-3,
                "warmup_steps": 1,
                "reference_cache_dir": str(root / "ref"),
                "progress": False,
            },
        },
        "data": {
            "class_path": "slamming.data.SpokenPreferenceDataModule",
            "init_args": {
                "cache_dir": str(root / "pref"),
                "context_length": 64,
                "batch_size": 2,
                "progress": False,
                **data,
            },
        },
        "budget": {"max_gpu_hours": 1.0},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dpo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def _builds(root: Path, source: str) -> list[Path]:
    return sorted(p for p in (root / "pref").glob(f"{source}-*") if p.is_dir())


def _one_line_error(capsys: pytest.CaptureFixture[str], info: pytest.ExceptionInfo[SystemExit]) -> str:
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("slamming: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_swag_csv_is_filtered_spoken_in_the_models_units_and_trained_on_then_reused(
    tmp_path: Path, pretrained: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Acceptance C3: a SWAG-layout CSV → auto-BLEU filter → one voice per triple → DPO fit; cached."""
    text_file = swag_csv(tmp_path / "swag.csv", [*SWAG_ROWS[:6], PLANTED, *SWAG_ROWS[6:]])
    triples, _ = read_swag_csv(text_file)
    planted = next(t for t in triples if t.prompt == PLANTED[0])
    assert auto_bleu(planted.prompt + " " + planted.chosen) > 0.3
    assert all(auto_bleu(t.prompt + " " + t.chosen) <= 0.3 for t in triples if t is not planted)
    normal = {(t.prompt, t.chosen, t.rejected) for t in triples if t is not planted}
    assert len(normal) == 12
    train_split, val_split = split_triples([t for t in triples if t is not planted], 0.25)
    assert train_split and val_split  # the CSV exercises both splits

    root = tmp_path / "run1"
    cfg = _dpo_config(root, pretrained["ckpt"], source="swag", text_file=str(text_file), val_fraction=0.25)
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    messages = _messages(caplog)
    assert any("swag.csv: 13 rows, 13 triples, skipped 0" in m for m in messages)
    assert any(
        f"{len(train_split)} train + {len(val_split)} val; auto-BLEU filter (> 0.3) dropped 1" in m
        for m in messages
    ), messages
    assert any("building the spoken preference corpus" in m for m in messages)

    # The fit ran: losses logged, a checkpoint and an export written.
    run = root / "runs" / "dpo" / "version_0"
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert sorted(e.step for e in acc.Scalars("train/loss")) == [0, 1, 2, 3]
    assert list((run / "checkpoints").glob("*.ckpt")) and (run / "hf_model" / "config.json").is_file()

    (build,) = _builds(root, "swag")
    corpora = {"train": PreferenceCorpus(build / "train"), "val": PreferenceCorpus(build / "val")}
    seen = set()
    for split, corpus in corpora.items():
        texts = [corpus.texts(i) for i in range(len(corpus))]
        assert PLANTED[0] not in {prompt for prompt, _, _ in texts}, split
        assert not any("the dog ran the dog" in " ".join(t) for t in texts if None not in t), split
        seen |= set(texts)
        expected = train_split if split == "train" else val_split
        assert texts == [(t.prompt, t.chosen, t.rejected) for t in expected]
        for i in range(len(corpus)):
            sources = {corpus.sides[side].source(i) for side in ("prompt", "chosen", "rejected")}
            assert len(sources) == 1, sources  # one voice, rate and pitch for all three sides
            _, voice, rate, pitch = sources.pop().split("|")
            assert voice in DEFAULT_VOICES and 150 <= int(rate) <= 190 and 35 <= int(pitch) <= 65
    assert len(corpora["train"]) + len(corpora["val"]) == 12 and seen == normal
    # The preference units are the pretraining units: the tokeniser the policy was trained on.
    identity = load_unit_lm(pretrained["ckpt"]).tokenizer
    assert identity is not None and identity["kind"] == "mfcc" and identity["k"] == 32
    assert corpora["train"].tokenizer == identity and corpora["val"].tokenizer == identity

    # An identical second run reuses the build and makes nothing new.
    stamp = (build / "done.json").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    messages = _messages(caplog)
    counts = f"({len(train_split)} train / {len(val_split)} val triples"
    assert any(m.startswith(f"reusing the cached preference corpus {build} {counts}") for m in messages), (
        messages
    )
    assert not any("building the spoken preference corpus" in m for m in messages)
    assert _builds(root, "swag") == [build] and (build / "done.json").stat().st_mtime_ns == stamp
    assert (root / "runs" / "dpo" / "version_1" / "hf_model" / "config.json").is_file()


def test_exported_model_folder_gives_the_tokeniser_and_story_triples_are_held_out(
    tmp_path: Path, pretrained: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """init_from = the hf_model export: its tokenizer/ sub-folder speaks the embedded story triples."""
    cfg = _dpo_config(
        tmp_path, pretrained["hf_model"], source="stories", num_train_triples=6, num_val_triples=3
    )
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(cfg)])
    assert any("building the spoken preference corpus" in m for m in _messages(caplog))
    assert (tmp_path / "runs" / "dpo" / "version_0" / "hf_model" / "config.json").is_file()
    (build,) = _builds(tmp_path, "stories")
    train, val = PreferenceCorpus(build / "train"), PreferenceCorpus(build / "val")
    assert (
        train.tokenizer
        == load_unit_lm(pretrained["hf_model"]).tokenizer
        == load_unit_lm(pretrained["ckpt"]).tokenizer
    )
    train_texts = [train.texts(i) for i in range(len(train))]
    val_texts = [val.texts(i) for i in range(len(val))]
    assert (len(train_texts), len(val_texts)) == (6, 3)
    # Held out: no validation prompt is a training prompt.
    assert not {p for p, _, _ in val_texts} & {p for p, _, _ in train_texts}
    # Chosen is the story's true ending; rejected another story's ending.
    for texts, triples in ((train_texts, story_triples(6, "train")), (val_texts, story_triples(3, "val"))):
        assert texts == [(t.prompt, t.chosen, t.rejected) for t in triples]
        assert all(chosen != rejected for _, chosen, rejected in texts)


def test_swag_without_text_file_is_one_clear_line(
    tmp_path: Path, pretrained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(_dpo_config(tmp_path, pretrained["ckpt"], source="swag"))])
    line = _one_line_error(capsys, info)
    assert "data.source=swag needs data.text_file" in line


def test_swag_csv_missing_a_column_is_one_clear_line(
    tmp_path: Path, pretrained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    header = [c for c in SWAG_HEADER if c != "ending3"]
    text_file = swag_csv(tmp_path / "short.csv", SWAG_ROWS, header=header)
    cfg = _dpo_config(tmp_path, pretrained["ckpt"], source="swag", text_file=str(text_file))
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(cfg)])
    line = _one_line_error(capsys, info)
    assert "short.csv lacks the SWAG column(s) ending3" in line


def test_model_without_a_recorded_tokeniser_needs_data_tokenizer(
    tmp_path: Path, pretrained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bare = shutil.copytree(
        pretrained["hf_model"], tmp_path / "bare", ignore=shutil.ignore_patterns("tokenizer")
    )
    assert not (bare / "tokenizer").exists() and load_unit_lm(bare).tokenizer_dir is None
    cfg = _dpo_config(tmp_path, bare, source="stories", num_train_triples=2, num_val_triples=1)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(cfg)])
    line = _one_line_error(capsys, info)
    assert "data.tokenizer: the model records no tokeniser folder" in line
    assert not _builds(tmp_path, "stories")  # nothing was spoken

    # Naming the tokeniser folder is the fix; the build is keyed by it, without TTS or a fit here.
    dm = SpokenPreferenceDataModule(
        source="stories",
        num_train_triples=2,
        num_val_triples=1,
        tokenizer=str(pretrained["hf_model"] / "tokenizer"),
        cache_dir=str(tmp_path / "pref"),
        context_length=64,
    )
    assert dm.build_dir is not None and dm.build_dir.name.startswith("stories-")
    assert dm.num_units == 32


def test_an_empty_training_split_names_what_emptied_it(tmp_path: Path) -> None:
    one = swag_csv(tmp_path / "one.csv", SWAG_ROWS[:1])
    assert split_triples(read_swag_csv(one)[0], 0.999)[0] == []  # the one row falls into validation
    with pytest.raises(
        SlammingError,
        match=r"\(1 held out for validation, 0 dropped .*\); add triples or lower "
        r"data.val_fraction \(now 0.999\)$",
    ):
        SpokenPreferenceDataModule(
            source="swag", text_file=str(one), val_fraction=0.999, cache_dir=str(tmp_path)
        )
    looping = swag_csv(tmp_path / "loop.csv", [PLANTED])
    with pytest.raises(
        SlammingError,
        match=r"\(0 held out for validation, 1 dropped .*\); add triples or relax "
        r"data.max_auto_bleu$",
    ):
        SpokenPreferenceDataModule(
            source="swag", text_file=str(looping), val_fraction=0.0, cache_dir=str(tmp_path)
        )
    # Without the filter the same row trains.
    dm = SpokenPreferenceDataModule(
        source="swag", text_file=str(looping), val_fraction=0.0, max_auto_bleu=None, cache_dir=str(tmp_path)
    )
    assert [t.prompt for t in dm.train_triples] == [PLANTED[0]] and dm.dropped_by_auto_bleu == []


def test_contradictions_choose_the_share_of_story_triples_with_a_swapped_name(tmp_path: Path) -> None:
    plain = SpokenPreferenceDataModule(num_train_triples=8, num_val_triples=4, cache_dir=str(tmp_path))
    mixed = SpokenPreferenceDataModule(
        num_train_triples=8, num_val_triples=4, contradictions=0.5, cache_dir=str(tmp_path)
    )
    assert plain.train_triples == story_triples(8, "train") and plain.val_triples == story_triples(4, "val")
    assert mixed.train_triples == story_triples(8, "train", 0, 0.5)
    assert mixed.val_triples == story_triples(4, "val", 0, 0.5)
    assert sum(a != b for a, b in zip(plain.train_triples, mixed.train_triples, strict=True)) == 4
    assert mixed.text_settings["train_sha256"] != plain.text_settings["train_sha256"]
    with pytest.raises(SlammingError, match="share in"):
        SpokenPreferenceDataModule(contradictions=2.0, cache_dir=str(tmp_path))


def test_first_train_story_moves_only_the_training_triples(tmp_path: Path) -> None:
    plain = SpokenPreferenceDataModule(num_train_triples=6, num_val_triples=3, cache_dir=str(tmp_path))
    later = SpokenPreferenceDataModule(
        num_train_triples=6, num_val_triples=3, first_train_story=40, cache_dir=str(tmp_path)
    )
    assert later.train_triples == story_triples(6, "train", start=40)
    assert not {t.prompt for t in later.train_triples} & {t.prompt for t in story_triples(40, "train")}
    assert later.val_triples == plain.val_triples == story_triples(3, "val")
    # Another build: the cache key follows the triples.
    assert later.text_settings["train_sha256"] != plain.text_settings["train_sha256"]
    assert later.text_settings["val_sha256"] == plain.text_settings["val_sha256"]
    looping = tmp_path / "t.jsonl"
    looping.write_text('{"prompt": "a b", "chosen": "c d", "rejected": "e f"}\n')
    with pytest.raises(SlammingError, match="first_train_story is for data.source=stories"):
        SpokenPreferenceDataModule(
            source="jsonl", text_file=str(looping), first_train_story=5, cache_dir=str(tmp_path)
        )
