"""ExtractionWriter's parts: a rank clears only unfinished parts no rank of its run can be writing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from slamming.callbacks.extraction_writer import ExtractionWriter
from slamming.cli import main
from slamming.data.corpus.format import UnitCorpus
from slamming.speech.tokenizers import MFCCTokenizer
from tests.tasks.test_extract import _args, _tone


def exited_pid() -> int:
    """The id of a process that has exited (and been reaped), as a killed rank's would be."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def unfinished(parts: Path, rank: int, pid: int, order: int = 0) -> Path:
    """A part as ``CorpusWriter`` stages it: ``.rankRRRR-ORDER-HEX.tmp-PID-THREAD-RANDOM``, half written."""
    folder = parts / f".rank{rank:04d}-{order:012d}-a1b2c3.tmp-{pid}-140000000000001-0badf00d"
    folder.mkdir(parents=True)
    (folder / "tokens.bin").write_bytes(b"\x01\x00" * 3)
    return folder


def test_setup_removes_its_own_and_absent_ranks_parts_only(tmp_path: Path) -> None:
    writer = ExtractionWriter(str(tmp_path / "units"))
    parts = writer.parts_dir
    dead = exited_pid()
    mine = unfinished(parts, 0, dead)  # this rank's, from an interrupted run
    beyond = unfinished(parts, 2, dead)  # a rank this run does not have
    other = unfinished(parts, 1, dead, order=5)  # rank 1 of this run: perhaps being written now
    other_live = unfinished(parts, 1, 1, order=9)
    finished = parts / "rank0001-000000000003-d4e5f6"  # a finished part: resumed from, never removed
    finished.mkdir()
    report = parts / "bad-rank0001.json"
    report.write_text("[]")
    assert writer.remove_interrupted_parts(rank=0, world_size=2) == [mine, beyond]
    assert sorted(p.name for p in parts.iterdir()) == sorted(
        [other.name, other_live.name, finished.name, report.name]
    )
    # Rank 1 of the same run removes its own unfinished parts, not rank 0's.
    again = unfinished(parts, 0, dead)
    assert writer.remove_interrupted_parts(rank=1, world_size=2) == [other, other_live]
    assert again.is_dir() and finished.is_dir()


@pytest.fixture(scope="module")
def audio_and_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audio")
    for i in range(4):
        sf.write(root / f"clip{i:02d}.wav", _tone(1.0 + 0.3 * i, 16000, 150 + 40 * i), 16000)
    from slamming.speech.audio import read_audio

    tokenizer = tmp_path_factory.mktemp("tok") / "tokenizer"
    MFCCTokenizer(k=16, segment=False).fit([read_audio(p) for p in sorted(root.glob("*.wav"))], seed=0).save(
        tokenizer
    )
    return root, tokenizer


def test_a_rerun_clears_leftovers_and_gives_the_clean_runs_corpus(
    tmp_path: Path, audio_and_tokenizer: tuple[Path, Path]
) -> None:
    audio, tokenizer = audio_and_tokenizer
    clean, rerun = tmp_path / "clean", tmp_path / "rerun"
    main(_args(audio, tokenizer, clean))
    parts = rerun.with_name("rerun.parts")
    dead = exited_pid()
    leftovers = [unfinished(parts, 0, dead), unfinished(parts, 3, dead, order=2)]
    main(_args(audio, tokenizer, rerun))
    a, b = UnitCorpus(clean), UnitCorpus(rerun)
    assert len(a) == len(b) == 4
    assert [a.source(i) for i in range(4)] == [b.source(i) for i in range(4)]
    assert all(np.array_equal(a.document(i), b.document(i)) for i in range(4))
    assert not parts.exists() and not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "rerun"]
