"""espeak-ng through its library in helper processes: the program's samples, faster, and no leftovers.

Real espeak-ng throughout: every check compares the library backend with the ``espeak-ng`` program.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import torch

from slamming.errors import SlammingError
from slamming.speech.audio import decode_audio_bytes
from slamming.speech.espeak_pool import HelperPool
from slamming.speech.espeak_server import LIBRARY_ENV, fgets_pieces
from slamming.speech.tts import EspeakEngine, SpeechJob, synthesize_many

pytestmark = [
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the library backend is used on Linux"),
]

STORY = (
    "Once upon a time, a little girl named Lily found a shiny red ball in the park. "
    "She threw it high into the sky, and her dog Max jumped to catch it! "
)
LONG = STORY * 16  # 2,352 bytes: the program speaks it in pieces of at most 999 bytes
MID_CHARACTER = "Lily " * 199 + "abcé, the café sold crème brûlée."  # byte 999 is inside "é"
CASES = [
    SpeechJob("Hello.", "en-us", 175, 50),
    SpeechJob(STORY, "en-gb", 150, 30),
    SpeechJob(STORY, "en-us+f3", 190, 62),
    SpeechJob(STORY, "en-us+klatt", 160, 45),
    SpeechJob(STORY, "en-us+Alex", 145, 99),
    SpeechJob(LONG, "en-us+m3", 195, 40),
    SpeechJob("The cat sat.\nThe dog ran!\n\nAnd then... the end", "en-us", 170, 55),
    SpeechJob("--version -v xx", "en-us", 175, 50),
    SpeechJob("Bonjour, le petit chat dort.", "fr-fr", 175, 50),  # not a voice file: chosen by language
    SpeechJob(MID_CHARACTER, "en-gb", 180, 35),
]


def children() -> dict[int, tuple[str, int]]:
    """This process's child processes: ``{pid: (state, process group)}``, zombies included."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8") as handle:
                    state, parent, group = handle.read().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if int(parent) == os.getpid():
                found[int(entry.name)] = (state, int(group))
    return found


def living_in_group(group: int) -> list[int]:
    """Processes of a process group that are not zombies."""
    alive = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                alive.append(int(entry.name))
    return alive


@pytest.fixture(scope="module")
def program() -> EspeakEngine:
    return EspeakEngine(backend="program")


@pytest.fixture
def library() -> Iterator[EspeakEngine]:
    engine = EspeakEngine(backend="library")
    yield engine
    engine.close()


def test_fgets_pieces_split_like_the_program() -> None:
    assert fgets_pieces(b"") == []
    assert fgets_pieces(b"a\nb\n\nc") == [b"a\n", b"b\n", b"\n", b"c"]
    text = b"x" * 2500
    assert [len(piece) for piece in fgets_pieces(text)] == [999, 999, 502]
    assert b"".join(fgets_pieces(b"ab\n" * 700)) == b"ab\n" * 700
    first, rest = fgets_pieces(MID_CHARACTER.encode())
    with pytest.raises(UnicodeDecodeError):
        first.decode()


@pytest.mark.parametrize("job", CASES, ids=lambda job: f"{job.voice}-{job.rate}-{job.pitch}-{len(job.text)}")
def test_library_speaks_exactly_like_the_program(
    library: EspeakEngine, program: EspeakEngine, job: SpeechJob
) -> None:
    assert library.active_backend == "library" and program.active_backend == "program"
    assert torch.equal(library.synthesize_job(job), program.synthesize_job(job))


def test_library_bytes_equal_the_programs_output() -> None:
    pool = HelperPool()
    try:
        for job in (
            CASES[4],
            CASES[5],
            SpeechJob("", "en-us", 175, 50),
            SpeechJob("hi", "xx-nowhere", 175, 50),
        ):
            command = ["espeak-ng", "-v", job.voice, "-s", str(job.rate), "-p", str(job.pitch), "--stdout"]
            cli = subprocess.run(command, input=job.text.encode(), capture_output=True, check=False)
            assert pool.speak(job.voice, job.rate, job.pitch, job.text.encode(), 60) == (
                cli.returncode,
                cli.stdout,
                cli.stderr,
            )
        assert pool.version and pool.version.split(".")[0].isdigit()
    finally:
        pool.close()


@pytest.mark.parametrize("sample_rate", [16000, 22050, 24000])
def test_waveform_is_what_soundfile_reads_from_the_programs_output(sample_rate: int) -> None:
    for job in (CASES[0], CASES[3]):
        command = ["espeak-ng", "-v", job.voice, "-s", str(job.rate), "-p", str(job.pitch), "--stdout"]
        wav = subprocess.run(command, input=job.text.encode(), capture_output=True, check=True).stdout
        for backend in ("library", "program"):
            with EspeakEngine(sample_rate=sample_rate, backend=backend) as engine:  # type: ignore[arg-type]
                assert torch.equal(engine.synthesize_job(job), decode_audio_bytes(wav, sample_rate))


def test_output_does_not_depend_on_what_was_spoken_before(library: EspeakEngine) -> None:
    first = library.synthesize_job(CASES[1])
    library.synthesize_job(CASES[3])  # klatt: noise and wave generator state that would carry over
    library.synthesize_job(CASES[2])
    assert torch.equal(library.synthesize_job(CASES[1]), first)


def test_two_threads_give_what_one_gives(library: EspeakEngine, program: EspeakEngine) -> None:
    jobs = [CASES[i % 5] for i in range(8)]
    before = set(children())
    together = list(synthesize_many(library, jobs, workers=2, progress=False))
    assert 1 <= len(set(children()) - before) <= 2  # a helper per concurrent caller
    for job, wav in zip(jobs, together, strict=True):
        assert torch.equal(wav, program.synthesize_job(job))


def test_unknown_voice_gives_the_programs_error(library: EspeakEngine, program: EspeakEngine) -> None:
    messages = []
    for engine in (library, program):
        with pytest.raises(
            SlammingError, match=r"voice 'xx-nowhere'.*does not exist.*espeak-ng --voices=en"
        ) as err:
            engine.synthesize("hello", "xx-nowhere", 175, 50)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "\n" not in messages[0]


def test_auto_uses_the_library_for_the_default_program_only() -> None:
    assert EspeakEngine().active_backend == "library"
    assert EspeakEngine(program=shutil.which("espeak-ng") or "").active_backend == "program"
    with pytest.raises(ValueError, match="backend must be one of"):
        EspeakEngine(backend="fastest")  # type: ignore[arg-type]


def test_without_the_library_auto_falls_back_to_the_program(
    monkeypatch: pytest.MonkeyPatch, program: EspeakEngine
) -> None:
    monkeypatch.setenv(LIBRARY_ENV, "/nowhere/libespeak-ng.so.1")  # helpers started now cannot load it
    job = CASES[2]
    with EspeakEngine() as auto:
        assert torch.equal(auto.synthesize_job(job), program.synthesize_job(job))
    with EspeakEngine(backend="library") as forced:
        with pytest.raises(
            SlammingError, match=r"cannot speak through libespeak-ng.*nowhere.*backend='program'"
        ):
            forced.synthesize_job(job)


def test_a_hung_job_is_killed_and_reported(library: EspeakEngine, program: EspeakEngine) -> None:
    before = set(children())
    library.synthesize("Warm up.", "en-us", 175, 50)
    (helper,) = set(children()) - before
    library.timeout = 0.05
    with pytest.raises(SlammingError, match=r"took over 0 s for a \d+-character text.*timeout"):
        library.synthesize(LONG * 10, "en-us", 175, 50)
    assert helper not in children()  # killed and reaped
    deadline = time.monotonic() + 5
    while living_in_group(helper) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert living_in_group(helper) == []  # the child that was speaking is gone too
    library.timeout = 60.0
    assert torch.equal(library.synthesize_job(CASES[0]), program.synthesize_job(CASES[0]))


def test_close_leaves_no_process_and_the_engine_still_pickles(program: EspeakEngine) -> None:
    before = set(children())
    engine = EspeakEngine(backend="library")
    jobs = [CASES[i % 3] for i in range(6)]
    wavs = list(synthesize_many(engine, jobs, workers=2, progress=False))
    assert set(children()) - before
    copy = pickle.loads(pickle.dumps(engine))  # the helpers stay behind
    engine.close()
    assert set(children()) <= before  # stopped and reaped: no zombie either
    assert torch.equal(copy.synthesize_job(jobs[0]), wavs[0])
    copy.close()
    assert set(children()) <= before
