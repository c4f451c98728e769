"""The espeak-ng helper program: ``libespeak-ng`` kept loaded, speaking exactly like ``espeak-ng``.

Running the ``espeak-ng`` program costs ~20 ms per utterance, most of it start-up (loading the
phoneme data, scanning the voice files), even for one word. The shared library can stay loaded, but
one long-lived library instance is not deterministic: its wave generator and noise state carry over
from one utterance to the next, so the same job gives a few hundred samples more or less depending
on what was spoken before.

So this helper is a fork server. It is run as ``python -I -S espeak_server.py`` and imports only the
standard library (never torch). It loads ``libespeak-ng``, initialises it as the program's ``main``
does (espeak-ng 1.51, ``src/espeak-ng.c``), lists the voices once, and speaks nothing itself. For
every request it forks a child, which starts from that pristine state, does what the program does
for ``espeak-ng -v VOICE -s RATE -p PITCH --stdout`` with the text on standard input, and sends back
the bytes the program would have written, its exit status and its error text: byte-identical to the
program, whatever was spoken before and whichever helper speaks.

Details of the program that are reproduced: the voice name is cut to 39 bytes (an empty one means
``en``); a rate <= 0 or a negative pitch leaves the voice's default; the text is read with ``fgets``
into a 1,000-byte buffer, so it is spoken in pieces that end at a newline or after 999 bytes (even
inside a word or a UTF-8 character), one ``espeak_Synth`` call each; the WAV header goes out with
the first audio buffer and declares the rate of the last sample-rate event so far and a placeholder
length; the final empty (NULL) buffer adds nothing.

Frames on the pipes: a request is :data:`REQUEST` (rate, pitch, voice bytes, text bytes) and the two
byte strings; a reply is :data:`REPLY` (exit status, output bytes, error bytes) and the two byte
strings. The first reply, sent unasked, says whether the library loaded (status 0, the output holds
its version) or why not (the error text). The helper stops at the end of its input, so one whose
parent died leaves no process behind. :mod:`slamming.speech.espeak_pool` is the parent's side.

The library is the system's ``libespeak-ng.so.1``, or the file the environment variable named by
:data:`LIBRARY_ENV` gives; its data folder is the program's default (or ``ESPEAK_DATA_PATH``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct

__all__ = [
    "LIBRARY_ENV",
    "REPLY",
    "REQUEST",
    "HelperError",
    "fgets_pieces",
    "serve",
    "wav_header",
    "write_all",
]

#: Environment variable naming the libespeak-ng to load (a file name or path) instead of the system's.
LIBRARY_ENV = "SLAMMING_ESPEAK_LIBRARY"

#: A request's head: rate, pitch, and the lengths of the voice name and of the text that follow.
REQUEST = struct.Struct("<iiII")
#: A reply's head: exit status, and the lengths of the standard output and error that follow.
REPLY = struct.Struct("<iII")
_FGETS_BUFFER = 1000  # the program's `max`: fgets reads at most 999 bytes
_VOICE_BUFFER = 40  # the program's `char voicename[40]`
_DEFAULT_VOICE = b"en"  # ESPEAKNG_DEFAULT_VOICE
_SYNTH_FLAGS = 0x1100  # espeakCHARS_AUTO | espeakPHONEMES | espeakENDPAUSE
_POS_CHARACTER = 1
_ENOUTPUT_MODE_SYNCHRONOUS = 0x0001
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_EVENT_SAMPLERATE = 8
_LIBRARY_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so", "libespeak-ng.1.dylib", "libespeak-ng.dylib")


class HelperError(Exception):
    """A helper could not start (no usable ``libespeak-ng``) or broke off in the middle of a reply."""


def fgets_pieces(text: bytes) -> list[bytes]:
    """Split ``text`` the way the program's ``fgets(p_text, 1000, stdin)`` loop reads it.

    Args:
        text: the bytes the program would get on standard input.

    Returns:
        The pieces it passes to ``espeak_Synth`` one by one: each ends at (and keeps) a newline or
        is 999 bytes long, whichever comes first; an empty text gives no piece.
    """
    pieces, start, limit = [], 0, _FGETS_BUFFER - 1
    while start < len(text):
        newline = text.find(b"\n", start, start + limit)
        end = newline + 1 if newline >= 0 else min(start + limit, len(text))
        pieces.append(text[start:end])
        start = end
    return pieces


def wav_header(sample_rate: int) -> bytes:
    """The 44-byte header the program writes before its first samples on standard output."""
    return (
        b"RIFF\x24\xf0\xff\x7fWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
        + struct.pack("<ii", sample_rate, sample_rate * 2)
        + b"\x02\x00\x10\x00data\x00\xf0\xff\x7f"
    )


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("number", ctypes.c_int),  # the first member of the id union
        ("_rest_of_id", ctypes.c_int),
    ]


class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


# Plain addresses, not ctypes pointers: the callback runs ~40 times per second of speech.
_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)


class _Speaker:
    """The library, initialised as the program initialises it; :meth:`speak` runs in a forked child."""

    def __init__(self) -> None:
        self.lib = _load_library()
        lib = self.lib
        lib.espeak_ng_InitializePath(None)
        context = ctypes.c_void_p()
        status = lib.espeak_ng_Initialize(ctypes.byref(context))
        if status != 0:
            raise HelperError(f"libespeak-ng could not initialise: {self.message(status)}")
        status = lib.espeak_ng_InitializeOutput(_ENOUTPUT_MODE_SYNCHRONOUS, 0, None)
        if status != 0:
            raise HelperError(f"libespeak-ng could not set up its output: {self.message(status)}")
        self.initial_rate = lib.espeak_ng_GetSampleRate()
        self.callback = _Callback(self._on_audio)
        lib.espeak_SetSynthCallback(self.callback)
        lib.espeak_ListVoices(None)  # what the program does for a voice that is not a file name
        self.rate = self.initial_rate
        self.output: list[bytes] | None = None

    def message(self, status: int) -> str:
        buffer = ctypes.create_string_buffer(512)
        self.lib.espeak_ng_GetStatusCodeMessage(status, buffer, len(buffer))
        return buffer.value.decode("utf-8", "replace")

    def _on_audio(self, wav: int | None, count: int, events: int | None) -> int:
        """The program's ``SynthCallback``: the header comes with the first buffer of audio."""
        if not wav:
            return 0  # the end of the data, or a buffer the program ignores
        if self.output is None:  # the sample rate matters only for the header: look until it is out
            event = ctypes.cast(events, ctypes.POINTER(_Event))
            index = 0
            while events and event[index].type != 0:
                if event[index].type == _EVENT_SAMPLERATE:
                    self.rate = event[index].number
                index += 1
            self.output = [wav_header(self.rate)]
        if count > 0:
            self.output.append(ctypes.string_at(wav, count * 2))
        return 0

    def speak(self, voice: bytes, rate: int, pitch: int, text: bytes) -> tuple[int, bytes]:
        """The program's exit status and standard output for one job; its error lines go to fd 2."""
        lib = self.lib
        voice = voice[: _VOICE_BUFFER - 1] or _DEFAULT_VOICE
        status = lib.espeak_ng_SetVoiceByName(voice)
        if status != 0:
            selector = _Voice(languages=voice)
            status = lib.espeak_ng_SetVoiceByProperties(ctypes.byref(selector))
            if status != 0:
                write_all(2, f"Error: {self.message(status)}.\n".encode())
                return 1, b""
        if rate > 0:
            lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
        if pitch >= 0:
            lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
        for piece in fgets_pieces(text):
            buffer = ctypes.create_string_buffer(piece, _FGETS_BUFFER)
            lib.espeak_Synth(buffer, _FGETS_BUFFER, 0, _POS_CHARACTER, 0, _SYNTH_FLAGS, None, None)
        status = lib.espeak_ng_Synchronize()
        stdout = b"".join(self.output or ())
        if status != 0:
            write_all(2, f"Error: {self.message(status)}.\n".encode())
            return 1, stdout
        return 0, stdout


def _scratch_file() -> int:
    """A file descriptor of an anonymous file (in memory where the system allows)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("espeak-ng-stderr")
    import tempfile

    return os.dup(tempfile.TemporaryFile().fileno())


def _load_library() -> ctypes.CDLL:
    errors = []
    chosen = os.environ.get(LIBRARY_ENV)
    for name in (chosen,) if chosen else _LIBRARY_NAMES:
        try:
            lib = ctypes.CDLL(name)
        except OSError as err:
            errors.append(str(err))
            continue
        lib.espeak_ng_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_ListVoices.restype = ctypes.c_void_p
        lib.espeak_Synth.argtypes = (
            [ctypes.c_char_p, ctypes.c_size_t] + [ctypes.c_uint] * 4 + [ctypes.c_void_p] * 2
        )
        return lib
    raise HelperError(f"libespeak-ng was not found ({'; '.join(errors)})")


def _read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``; None at end of input before the first byte."""
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            if data:
                raise HelperError("the request was cut short")
            return None
        data += chunk
    return bytes(data)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd`` (a pipe may take it in parts)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _reply(status: int, stdout: bytes, stderr: bytes) -> bytes:
    return REPLY.pack(status, len(stdout), len(stderr)) + stdout + stderr


def _speak_in_child(speaker: _Speaker, voice: bytes, rate: int, pitch: int, text: bytes) -> bytes:
    """Fork, speak in the child, and return its reply (or the status of a child that died)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        exit_code = 70  # a Python error before the reply went out
        try:
            os.close(read_end)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's way to stop a hung job
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)  # nothing the library prints may reach the reply pipe
            errors = _scratch_file()
            os.dup2(errors, 2)  # the library's own complaints, read back as the program's stderr
            status, stdout = speaker.speak(voice, rate, pitch, text)
            stderr = os.pread(errors, os.fstat(errors).st_size, 0)
            write_all(write_end, _reply(status, stdout, stderr))
            exit_code = 0
        finally:
            os._exit(exit_code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 1 << 20):
        chunks.append(chunk)
    os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    reply = b"".join(chunks)
    if len(reply) >= REPLY.size:
        _, out_size, err_size = REPLY.unpack_from(reply)
        if len(reply) == REPLY.size + out_size + err_size:
            return reply
    code = os.waitstatus_to_exitcode(wait_status)
    return _reply(code if code != 0 else 1, b"", b"")


def serve(stdin: int = 0, stdout: int = 1) -> None:
    """The helper's main loop: announce readiness (or why not), then answer requests until end of input."""
    try:
        speaker = _Speaker()
    except (HelperError, OSError, AttributeError) as err:  # AttributeError: a symbol the library lacks
        write_all(stdout, _reply(1, b"", str(err).encode("utf-8", "replace")))
        return
    speaker.lib.espeak_Info.restype = ctypes.c_char_p
    write_all(stdout, _reply(0, speaker.lib.espeak_Info(None) or b"", b""))
    while (header := _read_exactly(stdin, REQUEST.size)) is not None:
        rate, pitch, voice_size, text_size = REQUEST.unpack(header)
        voice, text = _read_exactly(stdin, voice_size), _read_exactly(stdin, text_size)
        if voice is None or text is None:
            return
        write_all(stdout, _speak_in_child(speaker, voice, rate, pitch, text))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # meant for the child speaking (see HelperPool)
    try:
        serve()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
