"""Text to speech: an engine interface, the espeak-ng engine, and seeded batch synthesis.

The embedded pipeline needs speech without downloading anything, so the default engine is
espeak-ng (a Debian/Homebrew package, about 1,000x real time on one core). Its program spends most
of a short utterance starting up, so the engine speaks through the already loaded library in helper
processes (:mod:`slamming.speech.espeak_server`) with exactly the program's output. The Slam
paper's sTinyStories and SpokenSwag were spoken by neural TTS; any engine that implements
:class:`TTSEngine` plugs into the same :func:`plan_jobs` / :func:`synthesize_many` code.

Variety comes from a plan: :func:`plan_jobs` draws a voice, speaking rate and pitch for every text
from a seed, so a corpus can be rebuilt bit for bit, and text ``i`` gets the same voice whether the
corpus holds 10 texts or 10,000.
"""

from __future__ import annotations

import abc
import os
import shutil
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from slamming.errors import ConfigError, SlammingError
from slamming.speech.audio import decode_audio_bytes, resample
from slamming.speech.espeak_pool import HelperError, HelperPool, speaks_like
from slamming.speech.espeak_server import wav_header

__all__ = [
    "DEFAULT_VOICES",
    "EspeakEngine",
    "HELD_OUT_VOICES",
    "RECOGNISER_VARIANTS",
    "SpeechJob",
    "TTSEngine",
    "WordTiming",
    "plan_jobs",
    "synthesize_many",
    "synthesize_many_with_timings",
]

#: English espeak-ng voices that sound clearly different: two accents and two voice variants.
DEFAULT_VOICES: tuple[str, ...] = ("en-us", "en-gb", "en-us+f3", "en-us+m3")

#: More espeak-ng variants of en-us that the phone recogniser learns from besides the corpus's voices
#: (:mod:`slamming.data.pretrain.tokenizer_fit`): trained on the four voices above only, it misread
#: 31 % of the phonemes of a voice it never heard; with these too, 15 % (docs/perf-log.md).
RECOGNISER_VARIANTS: tuple[str, ...] = tuple(
    f"en-us+{variant}"
    for variant in (
        "m1", "m2", "m4", "m5", "m6", "m7", "f1", "f2", "f5", "Alex", "Andy", "Annie", "edward",
        "john", "linda", "max", "steph", "paul", "rob", "robert", "Michael",
    )
)  # fmt: skip

#: Voices no recogniser trains on, kept to measure units on a voice never heard (en-gb ignores
#: variants: ``en-gb+f4`` sounds exactly like ``en-gb``, so the held-out voices are en-us variants).
HELD_OUT_VOICES: tuple[str, ...] = ("en-us+f4", "en-us+klatt")

#: One spoken word: ``(word, start_s, end_s)`` in seconds of the returned waveform (the format of
#: sTinyStories' ``aligned_text``).
WordTiming = tuple[str, float, float]
_T = TypeVar("_T")
#: A spoken job as the program leaves it: exit status, standard output (WAV), standard error.
_Reply = tuple[int, bytes, bytes]
_BACKENDS = ("auto", "library", "program")


@dataclass(frozen=True)
class SpeechJob:
    """One utterance to synthesise.

    Attributes:
        text: what to say.
        voice: an engine voice name (for espeak-ng, e.g. ``"en-us+f3"``).
        rate: speaking rate in words per minute.
        pitch: pitch on the engine's scale (espeak-ng: 0-99, 50 is the voice's normal pitch).
    """

    text: str
    voice: str
    rate: int
    pitch: int


class TTSEngine(abc.ABC):
    """A speech synthesiser that returns mono ``float32`` waveforms at :attr:`sample_rate`.

    Args:
        voices: voice names :func:`plan_jobs` chooses from.
        rate_range: inclusive (low, high) speaking rate in words per minute.
        pitch_range: inclusive (low, high) pitch on the engine's scale.
        sample_rate: sample rate of the returned waveforms in Hz.

    Raises:
        ConfigError: no voice, or a range whose low end is above its high end.
    """

    def __init__(
        self,
        voices: Sequence[str],
        rate_range: tuple[int, int],
        pitch_range: tuple[int, int],
        sample_rate: int = 16000,
    ) -> None:
        if len(voices) == 0:
            raise ConfigError("a TTS engine needs at least one voice; list one or more in voices")
        for name, (low, high) in (("rate_range", rate_range), ("pitch_range", pitch_range)):
            if low > high:
                raise ConfigError(f"{name} must be (low, high) with low <= high, got ({low}, {high})")
        self.voices: list[str] = list(voices)
        self.rate_range: tuple[int, int] = (int(rate_range[0]), int(rate_range[1]))
        self.pitch_range: tuple[int, int] = (int(pitch_range[0]), int(pitch_range[1]))
        self.sample_rate: int = int(sample_rate)

    @abc.abstractmethod
    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> torch.Tensor:
        """Speak ``text``; returns a ``(T,)`` float32 waveform at :attr:`sample_rate`."""

    def synthesize_job(self, job: SpeechJob) -> torch.Tensor:
        """Speak one planned :class:`SpeechJob`."""
        return self.synthesize(job.text, job.voice, job.rate, job.pitch)

    @property
    def supports_timings(self) -> bool:
        """Whether :meth:`synthesize_with_timings` works; engines without word timings say False."""
        return False

    def synthesize_with_timings(
        self, text: str, voice: str, rate: int, pitch: int
    ) -> tuple[torch.Tensor, list[WordTiming]]:
        """Speak ``text`` and say when each word is spoken; only where :attr:`supports_timings`.

        Returns:
            The ``(T,)`` waveform and one :data:`WordTiming` per word, in order.

        Raises:
            SlammingError: this engine gives no word timings.
        """
        raise SlammingError(f"{type(self).__name__} gives no word timings; use synthesize() instead")

    def synthesize_job_with_timings(self, job: SpeechJob) -> tuple[torch.Tensor, list[WordTiming]]:
        """Speak one planned :class:`SpeechJob` with word timings (see :meth:`synthesize_with_timings`)."""
        return self.synthesize_with_timings(job.text, job.voice, job.rate, job.pitch)


class EspeakEngine(TTSEngine):
    """Speech from espeak-ng, resampled from its 22,050 Hz to ``sample_rate``.

    The samples are always those of ``espeak-ng -v VOICE -s RATE -p PITCH --stdout`` with the text
    on standard input (never through a shell or the argument list, so a text that starts with ``-``
    cannot be read as an option, and long texts do not hit the argument-length limit). Output is
    deterministic: the same job gives the same samples.

    How they are made is the ``backend``: ``"program"`` runs the program once per utterance (~20 ms
    of start-up each); ``"library"`` asks helper processes that keep ``libespeak-ng`` loaded and
    fork a fresh copy of it per utterance (:mod:`slamming.speech.espeak_server`, byte-identical to
    the program); ``"auto"`` uses the library for the default ``program`` on Linux once a probe
    utterance has come out byte-identical from both, and the program otherwise. Each thread that
    speaks at the same time gets its own helper; :meth:`close` (or the end of the interpreter, or
    the engine being garbage collected) stops them.

    Args:
        voices: espeak-ng voice names, optionally with a variant (``"en-us+f3"``); see
            ``espeak-ng --voices=en`` and ``espeak-ng --voices=variant``.
        rate_range: inclusive words-per-minute range (espeak-ng's default rate is 175).
        pitch_range: inclusive pitch range on espeak-ng's 0-99 scale (default 50).
        sample_rate: sample rate of the returned waveforms in Hz.
        program: the espeak-ng executable, a name on ``PATH`` or a path; another than the default
            ``"espeak-ng"`` makes ``"auto"`` run that program.
        timeout: seconds one synthesis may take before it is treated as hung.
        backend: ``"auto"``, ``"library"`` or ``"program"`` (see above).

    Raises:
        ConfigError: an unknown ``backend``, or a setting :class:`TTSEngine` refuses.
    """

    def __init__(
        self,
        voices: Sequence[str] = DEFAULT_VOICES,
        rate_range: tuple[int, int] = (145, 195),
        pitch_range: tuple[int, int] = (35, 65),
        sample_rate: int = 16000,
        program: str = "espeak-ng",
        timeout: float = 120.0,
        backend: Literal["auto", "library", "program"] = "auto",
    ) -> None:
        super().__init__(voices, rate_range, pitch_range, sample_rate)
        if backend not in _BACKENDS:
            raise ConfigError(f"EspeakEngine backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
        self.program = program
        self.timeout = float(timeout)
        self.backend = backend
        self._pool: HelperPool | None = None
        self._pool_lock = threading.Lock()

    def _executable(self) -> str:
        """The resolved espeak-ng path; looked up per call so a config can name it before install."""
        found = shutil.which(self.program)
        if found is None:
            raise SlammingError(
                f"the TTS program {self.program!r} was not found on PATH; install it with "
                "`apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"
            )
        return found

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> torch.Tensor:
        """Speak ``text`` with espeak-ng.

        Args:
            text: what to say; must contain something other than whitespace.
            voice: espeak-ng voice name.
            rate: words per minute.
            pitch: 0-99.

        Returns:
            ``(T,)`` float32 waveform at :attr:`sample_rate`.

        Raises:
            SlammingError: espeak-ng is missing, rejects the voice, fails or hangs; or the library
                backend was asked for and cannot work here.
            ValueError: ``text`` is empty.
        """
        if not text.strip():
            raise ValueError("cannot synthesise empty text")
        pool = self._helpers()
        reply = None if pool is None else self._speak_with_library(pool, text, voice, int(rate), int(pitch))
        if reply is None:
            reply = self._speak_with_program(text, voice, int(rate), int(pitch))
        returncode, stdout, stderr = reply
        if returncode != 0 or len(stdout) == 0:
            reason = " ".join(stderr.decode("utf-8", "replace").split()) or f"exit status {returncode}"
            raise SlammingError(
                f"espeak-ng failed with voice {voice!r}: {reason}; "
                "list the installed voices with `espeak-ng --voices=en` and fix EspeakEngine(voices=...)"
            )
        return _waveform(stdout, self.sample_rate, name=f"espeak-ng output for {text[:40]!r}")

    @property
    def active_backend(self) -> Literal["library", "program"]:
        """What :meth:`synthesize` uses here: ``"auto"`` resolved (may run the one-off probe)."""
        return "program" if self._helpers() is None else "library"

    def close(self) -> None:
        """Stop the engine's helper processes (a later synthesis starts new ones)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> EspeakEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # helpers and locks stay with this process
        state["_pool"], state["_pool_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _pool_lock=threading.Lock())

    def _speak_with_program(self, text: str, voice: str, rate: int, pitch: int) -> _Reply:
        command = [self._executable(), "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout"]
        try:
            result = subprocess.run(
                command, input=text.encode("utf-8"), capture_output=True, timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise self._hung(len(text)) from err
        return result.returncode, result.stdout, result.stderr

    def _speak_with_library(
        self, pool: HelperPool, text: str, voice: str, rate: int, pitch: int
    ) -> _Reply | None:
        """The helpers' reply; None when ``"auto"`` should fall back to the program for this job."""
        try:
            return pool.speak(voice, rate, pitch, text.encode("utf-8"), self.timeout)
        except TimeoutError as err:
            raise self._hung(len(text)) from err
        except HelperError as err:
            if self.backend == "library":
                raise SlammingError(
                    f"EspeakEngine(backend='library') cannot speak through libespeak-ng: {err}; install "
                    "the espeak-ng package (it brings libespeak-ng1) or use backend='program'"
                ) from err
            return None

    def _hung(self, characters: int) -> SlammingError:
        return SlammingError(
            f"espeak-ng took over {self.timeout:.0f} s for a {characters}-character text; "
            "split the text or raise EspeakEngine(timeout=...)"
        )

    def _helpers(self) -> HelperPool | None:
        """The helper pool when the library backend applies, else None (the program speaks)."""
        if self.backend == "program":
            return None
        usable = hasattr(os, "fork") and sys.platform.startswith("linux") and self.program == "espeak-ng"
        if self.backend == "auto" and not (usable and speaks_like(self._executable(), self.timeout)):
            return None
        if not hasattr(os, "fork"):
            raise SlammingError("EspeakEngine(backend='library') needs os.fork; use backend='program' here")
        with self._pool_lock:
            if self._pool is None:
                self._pool = HelperPool()
                weakref.finalize(self, self._pool.close)
            pool = self._pool
        return pool


def _waveform(stream: bytes, sample_rate: int, name: str) -> torch.Tensor:
    """espeak-ng's WAV stream at ``sample_rate``: what :func:`decode_audio_bytes` gives, sooner.

    After espeak-ng's fixed 44-byte header come 16-bit samples, read here as libsndfile reads PCM_16
    (``x / 32768``, exact) instead of through soundfile (~5 ms less per 100 words); any other stream
    goes to :func:`decode_audio_bytes` and its checks.
    """
    rate = int.from_bytes(stream[24:28], "little")
    if rate > 0 and len(stream) > 44 and len(stream) % 2 == 0 and stream[:44] == wav_header(rate):
        samples = np.frombuffer(stream, dtype="<i2", offset=44).astype(np.float32) / np.float32(32768)
        return resample(torch.from_numpy(samples), rate, sample_rate).contiguous()
    return decode_audio_bytes(stream, sample_rate, name=name)


def plan_jobs(texts: Iterable[str], engine: TTSEngine, seed: int) -> list[SpeechJob]:
    """Give every text a voice, rate and pitch drawn from ``seed``.

    Text ``i`` uses its own generator seeded with ``(seed, i)``, so its plan depends only on the seed
    and its position: appending texts never changes the plan of earlier ones.

    Args:
        texts: the texts, in corpus order.
        engine: supplies the voices and the inclusive rate and pitch ranges.
        seed: a non-negative integer.

    Returns:
        One :class:`SpeechJob` per text, in order.

    Raises:
        ConfigError: a negative ``seed``.
    """
    if seed < 0:
        raise ConfigError(f"the speech plan's seed (tts_seed) must be a non-negative integer, got {seed}")
    jobs = []
    for index, text in enumerate(texts):
        rng = np.random.default_rng([int(seed), index])
        voice = engine.voices[int(rng.integers(len(engine.voices)))]
        rate = int(rng.integers(engine.rate_range[0], engine.rate_range[1] + 1))
        pitch = int(rng.integers(engine.pitch_range[0], engine.pitch_range[1] + 1))
        jobs.append(SpeechJob(text=text, voice=voice, rate=rate, pitch=pitch))
    return jobs


def synthesize_many(
    engine: TTSEngine, jobs: Iterable[SpeechJob], workers: int = 2, progress: bool = True
) -> Iterator[torch.Tensor]:
    """Synthesise jobs on a thread pool and yield the waveforms in input order.

    Threads are enough for parallelism because espeak-ng runs as a child process and the Python side
    mostly waits on it. At most ``4 * workers`` utterances are in flight, so a long stream of jobs is
    synthesised and consumed without holding all its audio in memory.

    Args:
        engine: the synthesiser.
        jobs: the planned utterances (a sequence gives the progress bar a total).
        workers: number of concurrent syntheses.
        progress: show a tqdm bar ("Synthesising speech", in utterances).

    Yields:
        ``(T,)`` float32 waveforms, one per job, in the order of ``jobs``.
    """
    return _in_order(engine.synthesize_job, jobs, workers, progress)


def synthesize_many_with_timings(
    engine: TTSEngine, jobs: Iterable[SpeechJob], workers: int = 2, progress: bool = True
) -> Iterator[tuple[torch.Tensor, list[WordTiming]]]:
    """Like :func:`synthesize_many`, but yields ``(waveform, word timings)`` pairs.

    Raises:
        SlammingError: the engine gives no word timings (:attr:`TTSEngine.supports_timings`).
    """
    if not engine.supports_timings:
        raise SlammingError(f"{type(engine).__name__} gives no word timings; use synthesize_many()")
    return _in_order(engine.synthesize_job_with_timings, jobs, workers, progress)


def _in_order(
    speak: Callable[[SpeechJob], _T], jobs: Iterable[SpeechJob], workers: int, progress: bool
) -> Iterator[_T]:
    """Run ``speak`` on a thread pool over ``jobs``; yield its results in input order (a window of
    ``4 * workers`` in flight)."""
    if workers < 1:
        raise ConfigError(f"the number of speech workers (tts_workers) must be >= 1, got {workers}")
    return _in_order_stream(speak, jobs, workers, progress)


def _in_order_stream(
    speak: Callable[[SpeechJob], _T], jobs: Iterable[SpeechJob], workers: int, progress: bool
) -> Iterator[_T]:
    total = len(jobs) if isinstance(jobs, Sequence) else None
    window = 4 * workers
    pending: deque[Future[_T]] = deque()
    bar = tqdm(total=total, desc="Synthesising speech", unit="utt", disable=not progress)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slamming-tts")
    try:
        for job in jobs:
            pending.append(executor.submit(speak, job))
            if len(pending) >= window:
                yield pending.popleft().result()
                bar.update(1)
        while pending:
            yield pending.popleft().result()
            bar.update(1)
    finally:
        # Reached on normal end, on an error, and when the consumer stops early (generator close):
        # queued jobs are dropped instead of being synthesised for nobody.
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True)
        bar.close()
