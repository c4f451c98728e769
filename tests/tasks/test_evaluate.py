"""``slamming test`` on pair benchmarks: numbers by hand (D1, D3), checkpoint = export (D5), clear errors.

A tiny model is pretrained through the CLI on espeak-ng speech with an MFCC tokeniser (as
tests/data/pretrain/test_synthetic.py does); its checkpoint records the tokeniser folder and its ``hf_model``
export carries a copy. The benchmarks are espeak-ng speech written in each published layout.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slamming.cli import main
from slamming.data.benchmarks import PairBenchmarkDataModule
from slamming.errors import SlammingError, TokenizerMismatchError
from slamming.models.loading import load_unit_lm
from slamming.models.unit_lm import export_hf
from slamming.speech.audio import read_audio, write_wav
from slamming.speech.tokenizers import MFCCTokenizer, load_tokenizer
from slamming.speech.tts import EspeakEngine
from slamming.tasks.evaluate import PairEvaluation
from tests.conftest import speech_fit_config

K = 16
US, GB = "en-us", "en-gb"
#: A smaller spoken corpus than speech_fit_config's default: 8 + 2 stories, K units.
SMALL_SPEECH = {"init_args": {"num_train_stories": 8, "num_val_stories": 2, "fit_stories": 6, "num_units": K}}


@dataclass(frozen=True)
class Truth:
    """What the test itself knows about a pair (never read back from the code under test)."""

    bench: str
    id: str
    positive: Path
    negative: Path
    group: str = ""


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return EspeakEngine(voices=[US, GB])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, engine: EspeakEngine) -> dict[str, Path]:
    """A 4-step pretraining run on espeak speech: its last checkpoint and its hf_model export."""
    root = tmp_path_factory.mktemp("pre")
    speech_fit_config(root, name="pre", trainer={"max_steps": 4, "val_check_interval": 2}, data=SMALL_SPEECH)
    main(["fit", "--config", str(root / "pre.yaml")])
    run = root / "runs" / "pre" / "version_0"
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    return {"ckpt": ckpt, "hf": run / "hf_model"}


def _say(engine: EspeakEngine, path: Path, text: str, voice: str) -> Path:
    return write_wav(path, engine.synthesize(text, voice, 170, 50), 16000)


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory: pytest.TempPathFactory, engine: EspeakEngine) -> tuple[Path, list[Truth]]:
    """Every layout, spoken; returns the root and the test's own list of true pairs."""
    root = tmp_path_factory.mktemp("bench")
    truths: list[Truth] = []
    # sWUGGY: id 3 has one voice only and id 4 two non-words for en-us, so the ZeroSpeech average
    # (voices per id, then ids) differs from the flat one; id 3 is out of vocabulary.
    lexical = [("1", "garden", ["gardel"], [US, GB], "12"), ("2", "window", ["wondow"], [US, GB], "30")]
    lexical += [("3", "blicket", ["blickep"], [US], "oov"), ("4", "table", ["tabble", "tobble"], [US], "50")]
    rows = ["id,filename,voice,frequency,word,phones,length,correct"]
    folder = root / "zr" / "lexical" / "dev"
    for item, word, nonwords, voices, freq in lexical:
        for voice in voices:
            pos = _say(engine, folder / f"w{item}{voice}.wav", word, voice)
            rows.append(f"{item},{pos.name},{voice},{freq},{word},x,{len(word)},1")
            for j, nonword in enumerate(nonwords):
                neg = _say(engine, folder / f"n{item}{j}{voice}.wav", nonword, voice)
                rows.append(f"{item},{neg.stem},{voice},,{nonword},x,{len(nonword)},0")
                truths.append(Truth("sWUGGY", item, pos, neg, "oov" if freq == "oov" else "in-vocabulary"))
    (folder / "gold.csv").write_text("\n".join([rows[0], *reversed(rows[1:])]) + "\n")
    syntactic = [("7", "agreement", "the dogs run home", "the dogs runs home", [US, GB])]
    syntactic += [("8", "anaphor", "she saw herself", "she saw himself", [US])]
    rows = ["filename,id,voice,type,subtype,transcription,correct"]
    folder = root / "zr" / "syntactic" / "dev"
    for item, kind, good, bad, voices in syntactic:
        for voice in voices:
            pos, neg = (
                _say(engine, folder / f"{s}{item}{voice}.wav", t, voice) for s, t in (("g", good), ("b", bad))
            )
            rows += [
                f"{pos.stem},{item},{voice},{kind},x,{good},1",
                f"{neg.stem},{item},{voice},{kind},x,{bad},0",
            ]
            truths.append(Truth("sBLIMP", item, pos, neg, kind))
    (folder / "gold.csv").write_text("\n".join(rows) + "\n")
    stories = [
        ("The cat sat down.", "It fell asleep.", "It flew to Mars."),
        ("Tom was hungry.", "He ate.", "He sang."),
    ]
    prefixed = []
    for i, (prefix, good, bad) in enumerate(stories):
        pos = _say(engine, root / "ssc" / f"{i}_correct.wav", f"{prefix} {good}", US)
        neg = _say(engine, root / "ssc" / f"{i}_incorrect.wav", f"{prefix} {bad}", US)
        truths.append(Truth("sSC", str(i), pos, neg))
        # The same stories with the beginning spoken once (as the embedded cloze benchmarks are).
        sides = {"prefix": prefix, "positive": good, "negative": bad}
        prefixed.append(
            {k: str(_say(engine, root / "pre" / f"{i}_{k}.wav", t, US)) for k, t in sides.items()}
        )
    (root / "prefixed.jsonl").write_text("\n".join(json.dumps(x) for x in prefixed) + "\n")
    for part in ("speaker_consistency", "gender_consistency"):
        for i, text in enumerate(("a quiet morning", "the red house")):
            pos = _say(engine, root / "salmon" / part / f"sample_{i}_0.wav", text, US)
            neg = _say(engine, root / "salmon" / part / f"sample_{i}_1.wav", text, GB)
            truths.append(Truth(f"SALMon/{part}", str(i), pos, neg))
    manifest = [t for t in truths if t.bench == "sSC"]
    lines = [
        {"positive": str(t.negative), "negative": str(t.positive.relative_to(root)), "id": t.id}
        for t in manifest
    ]
    (root / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    truths += [Truth("swapped", t.id, t.negative, t.positive) for t in manifest]
    return root, truths


def _specs(root: Path) -> list[dict[str, Any]]:
    return [
        {"kind": "zerospeech-lexical", "path": str(root / "zr")},
        {"kind": "zerospeech-syntactic", "path": str(root / "zr"), "split": "dev"},
        {"kind": "storycloze", "path": str(root / "ssc"), "name": "sSC"},
        {"kind": "salmon", "path": str(root / "salmon")},
        {"kind": "manifest", "path": str(root / "m.jsonl"), "name": "swapped"},
    ]


def _test(tmp_path: Path, model: Path, specs: list[dict[str, Any]], **init: Any) -> Path:
    cfg = {
        "trainer": {
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "eval"},
            },
        },
        "model": {
            "class_path": "slamming.tasks.PairEvaluation",
            "init_args": {"model": str(model), **init},
        },
        "data": {
            "class_path": "slamming.data.PairBenchmarkDataModule",
            "init_args": {"benchmarks": specs, "batch_size": 3},
        },
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["test", "--config", str(path)])
    return path


def _expected(truths: list[Truth], ckpt: Path) -> dict[str, dict[str, Any]]:
    """Per-file scores by a direct forward of each file alone, then every accuracy by hand."""
    loaded = load_unit_lm(ckpt)
    tokenizer = load_tokenizer(loaded.tokenizer_dir)

    def score(path: Path) -> float:
        units, _ = tokenizer.encode(read_audio(path))
        ids = torch.tensor([1, *(int(u) + 2 for u in units), 1])
        with torch.no_grad():
            logps = torch.log_softmax(loaded.model(input_ids=ids[None]).logits[0].double(), -1)
        return float(logps[torch.arange(len(ids) - 1), ids[1:]].mean())

    outcome = {}
    for t in truths:
        pos, neg = score(t.positive), score(t.negative)
        outcome[t] = 1.0 if pos > neg else 0.5 if pos == neg else 0.0
    expected: dict[str, dict[str, Any]] = {}
    for bench in dict.fromkeys(t.bench for t in truths):
        mine = [t for t in truths if t.bench == bench]
        result: dict[str, Any] = {"pairs": len(mine), "accuracy": sum(outcome[t] for t in mine) / len(mine)}
        if bench in ("sWUGGY", "sBLIMP"):
            groups: dict[str, list[Truth]] = defaultdict(list)
            for t in mine:
                groups[t.group].append(t)
            result["zerospeech_accuracy"] = _zerospeech(mine, outcome)
            result["groups"] = {
                g: {
                    "pairs": len(ts),
                    "accuracy": sum(outcome[t] for t in ts) / len(ts),
                    "zerospeech_accuracy": _zerospeech(ts, outcome),
                }
                for g, ts in sorted(groups.items())
            }
        expected[bench] = result
    return expected


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested results as one level (``groups/oov/accuracy``), for pytest.approx."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _zerospeech(truths: list[Truth], outcome: dict[Truth, float]) -> float:
    by_id: dict[str, list[float]] = defaultdict(list)
    for t in truths:
        by_id[t.id].append(outcome[t])
    return float(np.mean([np.mean(v) for v in by_id.values()]))


def test_checkpoint_and_export_give_the_hand_computed_accuracies(
    tmp_path: Path, pretrained: dict[str, Path], benchmarks: tuple[Path, list[Truth]]
) -> None:
    """D1, D3 (every layout, one dataloader each) and D5 (export = checkpoint)."""
    root, truths = benchmarks
    _test(tmp_path / "a", pretrained["ckpt"], _specs(root))
    results = json.loads((pretrained["ckpt"].parent / "eval-results.json").read_text())
    expected = _expected(truths, pretrained["ckpt"])
    assert set(results["benchmarks"]) == set(expected)
    for name, values in expected.items():
        got = {k: v for k, v in _flat(results["benchmarks"][name]).items() if k in _flat(values)}
        assert got == pytest.approx(_flat(values), abs=1e-12), name
    assert results["benchmarks"]["swapped"]["accuracy"] == pytest.approx(1 - expected["sSC"]["accuracy"])
    md = (pretrained["ckpt"].parent / "eval-results.md").read_text()
    assert "| sWUGGY / oov | 1 |" in md and "| SALMon/gender_consistency | 2 |" in md
    events = EventAccumulator(str(next((tmp_path / "a" / "runs" / "eval").glob("version_*")))).Reload()
    logged = events.Scalars("test/sBLIMP/agreement/zerospeech_accuracy")[-1].value
    assert logged == pytest.approx(expected["sBLIMP"]["groups"]["agreement"]["zerospeech_accuracy"], abs=1e-6)

    # The exported folder, its tokeniser found in hf_model/tokenizer: the same numbers.
    assert "## Benchmarks\n\nNot yet evaluated." in (pretrained["hf"] / "README.md").read_text()
    _test(tmp_path / "b", pretrained["hf"], _specs(root))
    exported = json.loads((pretrained["hf"] / "eval-results.json").read_text())
    assert exported["benchmarks"] == results["benchmarks"]
    assert Path(exported["tokenizer"]["dir"]) == pretrained["hf"] / "tokenizer"
    # The export's model card now shows them: every row of eval-results.md's table.
    card = (pretrained["hf"] / "README.md").read_text()
    table = (pretrained["hf"] / "eval-results.md").read_text().split("\n\n")[-1].strip()
    assert "From `slamming test`" in card and table in card and "Not yet evaluated" not in card
    # A rerun overwrites our own results file, and the card follows.
    _test(tmp_path / "c", pretrained["hf"], _specs(root)[:1])
    assert list(json.loads((pretrained["hf"] / "eval-results.json").read_text())["benchmarks"]) == ["sWUGGY"]
    card = (pretrained["hf"] / "README.md").read_text()
    assert f"| sWUGGY | {results['benchmarks']['sWUGGY']['pairs']} |" in card and "| sBLIMP |" not in card


def test_wrong_layout_and_foreign_results_fail_with_one_line(
    tmp_path: Path,
    pretrained: dict[str, Path],
    benchmarks: tuple[Path, list[Truth]],
    capsys: pytest.CaptureFixture,
) -> None:
    root, _ = benchmarks
    with pytest.raises(SystemExit) as exit_info:
        _test(tmp_path, pretrained["ckpt"], [{"kind": "zerospeech-lexical", "path": str(root / "ssc")}])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ssc: no lexical/dev/gold.csv; expected the ZeroSpeech 2021 layout lexical/{dev,test}/*.wav" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "eval-results.md").write_text("my notes\n")
    with pytest.raises(SlammingError, match="eval-results.md exists and was not written by slamming test"):
        PairEvaluation(str(pretrained["ckpt"]), results_dir=str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "eval-results.md").read_text() == "my notes\n"


def test_tokenizer_must_match_the_model(
    tmp_path: Path, pretrained: dict[str, Path], engine: EspeakEngine
) -> None:
    texts = ("one small test", "another short line here", "the third one is longer still", "and a fourth")
    wavs = [engine.synthesize(t, voice, 170, 50) for t in texts for voice in (US, GB)]
    other = MFCCTokenizer(k=K, segment=True).fit(wavs, seed=1).save(tmp_path / "other")
    with pytest.raises(TokenizerMismatchError, match="settings_hash"):
        PairEvaluation(str(pretrained["ckpt"]), tokenizer=str(other))
    bare = tmp_path / "bare"
    shutil.copytree(pretrained["hf"], bare, ignore=shutil.ignore_patterns("tokenizer", "eval-results.*"))
    with pytest.raises(SlammingError, match="records no tokeniser folder; set model.init_args.tokenizer"):
        PairEvaluation(str(bare))
    ok = PairEvaluation(str(bare), tokenizer=str(pretrained["hf"] / "tokenizer"))
    assert ok.results_dir == bare and ok.num_units == K
    # A model trained on imported units records only declared settings (no settings_hash): those
    # are compared, the rest cannot be.
    declared = {"kind": "mfcc", "name": "espeak-mfcc", "k": K, "frame_rate": 100, "dedup": True}
    export_hf(load_unit_lm(bare).model, tmp_path / "declared", declared)
    PairEvaluation(str(tmp_path / "declared"), tokenizer=str(pretrained["hf"] / "tokenizer"))
    export_hf(load_unit_lm(bare).model, tmp_path / "hubert", {**declared, "kind": "hubert"})
    with pytest.raises(TokenizerMismatchError, match="kind: expected 'hubert', got 'mfcc'"):
        PairEvaluation(str(tmp_path / "hubert"), tokenizer=str(pretrained["hf"] / "tokenizer"))


def test_embedded_benchmarks_build_and_evaluate(tmp_path: Path, pretrained: dict[str, Path], caplog) -> None:
    """configs/tiny/eval.yaml's data module: the four embedded benchmarks, spoken, then scored; the
    spoken cloze's true endings are the topic cloze's, so their sides are scored once."""
    cfg = {
        # default_root_dir: without a logger, LightningCLI saves its config.yaml there (not in the repo).
        "trainer": {
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "logger": False,
            "default_root_dir": str(tmp_path),
        },
        "model": {
            "class_path": "slamming.tasks.PairEvaluation",
            "init_args": {"model": str(pretrained["hf"])},
        },
        "data": {
            "class_path": "slamming.data.EmbeddedBenchmarkDataModule",
            "init_args": {
                "cache_dir": str(tmp_path / "emb"),
                "num_pairs": 3,
                "voices": [US, GB],
                "progress": False,
            },
        },
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO):
        main(["test", "--config", str(tmp_path / "eval.yaml")])
    # 2 sides of 6 + 6 + 3 + 3 pairs; the 3 spoken cloze positives were scored as topic cloze ones
    # (and short words may give the tiny tokeniser the same units in both voices)
    scored = re.search(r"scored (\d+) distinct sequences for the 36 sides", caplog.text)
    assert scored and int(scored.group(1)) <= 33
    results = json.loads((pretrained["hf"] / "eval-results.json").read_text())["benchmarks"]
    pairs = {name: results[name]["pairs"] for name in ("lexical", "syntactic", "topic_cloze", "spoken_cloze")}
    assert pairs == {
        "lexical": 6,
        "syntactic": 6,
        "topic_cloze": 3,
        "spoken_cloze": 3,
    }  # 2 voices for the first two
    assert all(0.0 <= results[name]["accuracy"] <= 1.0 for name in pairs)
    (build,) = (tmp_path / "emb").iterdir()
    assert (build / "done.json").is_file()


def _pair_scores(
    root: Path, model: Path, specs: list[dict[str, Any]], weights: torch.dtype, **init: Any
) -> dict[str, np.ndarray]:
    """PairEvaluation's per-pair scores of ``model`` on ``specs``, scored with weights of that dtype."""
    module = PairEvaluation(str(model), results_dir=str(root), **init)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.test(module, datamodule=PairBenchmarkDataModule(benchmarks=specs, batch_size=3))
    assert {p.dtype for p in module.model.parameters()} == {weights}
    return module.scores


def test_a_bf16_model_scores_in_fp32_by_default(
    tmp_path: Path, pretrained: dict[str, Path], benchmarks: tuple[Path, list[Truth]]
) -> None:
    """A bf16 export scores exactly as its fp32 copy does; dtype: null scores it in bf16, differently."""
    root, _ = benchmarks
    specs = _specs(root)[:3]
    loaded = load_unit_lm(pretrained["hf"])
    bf16 = loaded.model.to(torch.bfloat16)
    export_hf(bf16, tmp_path / "bf16", loaded.tokenizer, loaded.tokenizer_dir)
    export_hf(copy.deepcopy(bf16).float(), tmp_path / "fp32", loaded.tokenizer, loaded.tokenizer_dir)
    default = _pair_scores(tmp_path / "a", tmp_path / "bf16", specs, torch.float32)
    fp32 = _pair_scores(tmp_path / "b", tmp_path / "fp32", specs, torch.float32, dtype=None)
    as_stored = _pair_scores(tmp_path / "c", tmp_path / "bf16", specs, torch.bfloat16, dtype=None)
    assert list(default) == ["sWUGGY", "sBLIMP", "sSC"]
    for name, scores in default.items():
        assert not np.isnan(scores).any()
        np.testing.assert_allclose(scores, fp32[name], rtol=0, atol=1e-6, err_msg=name)
    differences = np.concatenate([np.abs(default[n] - as_stored[n]).ravel() for n in default])
    assert differences.max() > 1e-5


def test_a_units_cache_spares_the_next_run_its_tokenising(
    tmp_path: Path, pretrained: dict[str, Path], benchmarks: tuple[Path, list[Truth]], caplog
) -> None:
    """The pretrained-then-aligned pattern of the demo: the second run reads every benchmark's units
    from the cache the first one wrote, and scores exactly as if it had tokenised them."""
    root, _ = benchmarks
    cache = tmp_path / "units"

    def run(name: str, model: Path) -> None:
        _test(
            tmp_path / name,
            model,
            _specs(root),
            units_cache=str(cache),
            results_dir=str(tmp_path / f"r-{name}"),
        )

    run("a", pretrained["ckpt"])
    [written] = cache.glob("*.npz")
    stamp = written.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        run("b", pretrained["hf"])
    # and not one audio file was decoded: each side's units were found by its file's key
    sides = re.search(
        r"benchmark units: (\d+) waveforms from the cache, 0 tokenised, (\d+) audio files not decoded",
        caplog.text,
    )
    assert sides and sides.group(1) == sides.group(2) and int(sides.group(1)) > 0
    first, second = (json.loads((tmp_path / r / "eval-results.json").read_text()) for r in ("r-a", "r-b"))
    assert second["benchmarks"] == first["benchmarks"]
    assert written.stat().st_mtime_ns == stamp  # nothing new to write


def test_a_prefix_is_scored_before_each_side(
    tmp_path: Path, pretrained: dict[str, Path], engine: EspeakEngine
) -> None:
    """A manifest row with a ``prefix``: each side is scored as the prefix's units followed by its
    own (a repeated unit at the junction collapsed, as the tokeniser collapses runs), by hand here."""
    stories = [
        ("The cat sat down. Then it looked around.", "It fell asleep.", "It flew to Mars."),
        ("Tom was hungry.", "He ate a big red apple.", "He sang."),
        ("Mia went to the park.", "Mia played with the ball.", "Ben played with the ball."),
    ]
    rows = []
    for i, (prefix, good, bad) in enumerate(stories):
        paths = {
            side: _say(engine, tmp_path / f"{i}_{side}.wav", text, US)
            for side, text in (("prefix", prefix), ("positive", good), ("negative", bad))
        }
        rows.append({**{side: path.name for side, path in paths.items()}, "id": str(i)})
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _test(
        tmp_path,
        pretrained["ckpt"],
        [{"kind": "manifest", "path": str(tmp_path / "m.jsonl"), "name": "p"}],
        results_dir=str(tmp_path / "r"),
        units_cache=str(tmp_path / "units"),
    )

    loaded = load_unit_lm(pretrained["ckpt"])
    tokenizer = load_tokenizer(loaded.tokenizer_dir)
    assert tokenizer.identity["dedup"] is True

    def score(units: np.ndarray) -> float:
        ids = torch.tensor([1, *(int(u) + 2 for u in units), 1])
        with torch.no_grad():
            logps = torch.log_softmax(loaded.model(input_ids=ids[None]).logits[0].double(), -1)
        return float(logps[torch.arange(len(ids) - 1), ids[1:]].mean())

    outcomes = []
    for row in rows:
        head, pos, neg = (
            tokenizer.encode(read_audio(tmp_path / row[s]))[0] for s in ("prefix", "positive", "negative")
        )
        joined = []
        for side in (pos, neg):
            side = side[1:] if len(side) and side[0] == head[-1] else side
            joined.append(np.concatenate([head, side]))
        a, b = score(joined[0]), score(joined[1])
        outcomes.append(1.0 if a > b else 0.5 if a == b else 0.0)
    results = json.loads((tmp_path / "r" / "eval-results.json").read_text())["benchmarks"]["p"]
    assert results["pairs"] == 3
    assert results["accuracy"] == pytest.approx(float(np.mean(outcomes)), abs=1e-12)
    assert results["outcomes"] == "".join({1.0: "1", 0.0: "0", 0.5: "="}[o] for o in outcomes)
    # Three prefixes and six endings were tokenised, each once.
    [cache] = (tmp_path / "units").glob("*.npz")
    assert len(np.load(cache)["digests"]) == 9


def test_join_units_collapses_a_repeat_at_the_junction() -> None:
    from slamming.eval.likelihood import join_units

    head = np.array([3, 4, 5], dtype=np.uint16)
    assert join_units(head, np.array([5, 6], dtype=np.uint16), dedup=True).tolist() == [3, 4, 5, 6]
    assert join_units(head, np.array([5, 6], dtype=np.uint16), dedup=False).tolist() == [3, 4, 5, 5, 6]
    assert join_units(head, np.array([7], dtype=np.uint16), dedup=True).tolist() == [3, 4, 5, 7]
    empty = np.zeros(0, dtype=np.uint16)
    assert join_units(empty, head, dedup=True).tolist() == [3, 4, 5]
    assert join_units(head, empty, dedup=True).dtype == np.uint16
