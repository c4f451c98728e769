"""The parent's side of the espeak-ng helpers: a pool of them for callers on any number of threads.

:mod:`slamming.speech.espeak_server` explains the helpers (``libespeak-ng`` kept loaded in a fork
server, byte-identical to the ``espeak-ng`` program). :class:`HelperPool` gives each concurrent
caller a helper of its own, since a helper answers one request at a time: a call takes an idle
helper or starts one (~50 ms), and gives it back when done. A helper that timed out or failed is
killed with the child speaking for it (each helper leads its own process group). Idle helpers are
stopped by :meth:`HelperPool.close`; one whose parent dies stops at the end of its input.

Standard library only, like the helper itself.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

from slamming.speech import espeak_server
from slamming.speech.espeak_server import REPLY, REQUEST, HelperError, write_all

__all__ = ["HelperError", "HelperPool", "speaks_like"]

# Per program path: whether the helpers speak a probe job byte for byte like that program.
_MATCHES: dict[str, bool] = {}
_MATCHES_LOCK = threading.Lock()
_PROBE = ("Hello there, 1 2 3. Who's that?", "en-us", 175, 50)


class _Helper:
    """One helper process and its pipes; raises :class:`HelperError` if it cannot speak."""

    def __init__(self, start_timeout: float) -> None:
        if not sys.executable:
            raise HelperError("the Python executable is unknown (sys.executable is empty)")
        # -I: no user site, no PYTHON* variables, no script folder on sys.path; -S: no site-packages.
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(espeak_server.__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
                start_new_session=True,  # its own process group: a timeout kills it and its child at once
            )
        except OSError as err:
            raise HelperError(f"the espeak-ng helper process could not start ({err})") from err
        assert self.process.stdin is not None and self.process.stdout is not None
        self.poll = select.poll()
        self.poll.register(self.process.stdout.fileno(), select.POLLIN)
        try:
            status, version, reason = self._reply(time.monotonic() + start_timeout)
        except BaseException:
            self.kill()
            raise
        if status != 0:
            self.kill()
            raise HelperError(reason.decode("utf-8", "replace"))
        self.version = version.decode("utf-8", "replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def speak(
        self, voice: bytes, rate: int, pitch: int, text: bytes, timeout: float
    ) -> tuple[int, bytes, bytes]:
        deadline = time.monotonic() + timeout
        assert self.process.stdin is not None
        try:
            write_all(
                self.process.stdin.fileno(), REQUEST.pack(rate, pitch, len(voice), len(text)) + voice + text
            )
        except OSError as err:
            raise HelperError(f"the espeak-ng helper process stopped taking requests ({err})") from err
        return self._reply(deadline)

    def _reply(self, deadline: float) -> tuple[int, bytes, bytes]:
        status, out_size, err_size = REPLY.unpack(self._read(REPLY.size, deadline))
        stdout = self._read(out_size, deadline)
        return status, stdout, self._read(err_size, deadline)

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.process.stdout is not None
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the espeak-ng helper did not answer in time")
            if not self.poll.poll(
                int(min(left, 60.0) * 1000) + 1
            ):  # a minute at most: an infinite timeout works
                continue
            chunk = os.read(self.process.stdout.fileno(), min(size - len(data), 1 << 20))
            if not chunk:
                raise HelperError(f"the espeak-ng helper process stopped (exit status {self.process.poll()})")
            data += chunk
        return bytes(data)

    def close(self) -> None:
        """Stop the helper: end of its input, then reap it (a helper that hangs is killed after 5 s)."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """Stop the helper now, in the middle of a job: its child is terminated and reaped by the
        helper (which ignores SIGTERM), then the helper stops as in :meth:`close`."""
        self._signal(signal.SIGTERM)
        self.close()

    def _signal(self, number: int) -> None:
        try:
            os.killpg(self.process.pid, number)  # the helper leads its own process group
        except (ProcessLookupError, PermissionError):
            pass


class HelperPool:
    """Helper processes for callers on any number of threads: one helper per concurrent call.

    A call takes an idle helper or starts one (~50 ms), and gives it back when done; a helper that
    timed out or failed is killed instead. Not for sharing across processes: in a forked copy of the
    owner the pool forgets the owner's helpers and starts its own.

    Args:
        max_idle: idle helpers kept for reuse; more are stopped when given back.
    """

    def __init__(self, max_idle: int = 8) -> None:
        self.max_idle = int(max_idle)
        self.version: str | None = None
        self._lock = threading.Lock()
        self._idle: list[_Helper] = []
        self._owner = os.getpid()
        self._closed = False

    def speak(
        self, voice: str, rate: int, pitch: int, text: bytes, timeout: float
    ) -> tuple[int, bytes, bytes]:
        """What ``espeak-ng -v VOICE -s RATE -p PITCH --stdout`` would do with ``text`` on its input.

        Args:
            voice: the voice name (passed on as the program's argument would be).
            rate: words per minute (read as the program's ``atoi`` reads it).
            pitch: 0-99 (likewise).
            text: the standard input bytes.
            timeout: seconds before the helper (started or reused) counts as hung and is killed.

        Returns:
            The program's exit status, standard output (a WAV stream) and standard error.

        Raises:
            HelperError: no helper could start (no usable libespeak-ng), or one broke off.
            TimeoutError: no answer within ``timeout`` seconds.
            ValueError: ``voice`` holds a null character (as :mod:`subprocess` says of arguments).
        """
        name = os.fsencode(voice)
        if b"\0" in name:
            raise ValueError("embedded null byte")
        helper = self._take(timeout)
        try:
            reply = helper.speak(name, _atoi(int(rate)), _atoi(int(pitch)), text, timeout)
        except BaseException:
            helper.kill()
            raise
        self._give_back(helper)
        return reply

    def close(self) -> None:
        """Stop the idle helpers and reap them; helpers in use stop when given back."""
        if os.getpid() != self._owner:
            return
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for helper in idle:
            helper.close()

    def _take(self, timeout: float) -> _Helper:
        if os.getpid() != self._owner:  # a forked copy: the helpers and the lock belong to the owner
            self._owner, self._idle, self._lock = os.getpid(), [], threading.Lock()
        with self._lock:
            if self._idle:
                return self._idle.pop()
        helper = _Helper(start_timeout=timeout)
        self.version = helper.version
        return helper

    def _give_back(self, helper: _Helper) -> None:
        with self._lock:
            if not self._closed and os.getpid() == self._owner and len(self._idle) < self.max_idle:
                self._idle.append(helper)
                return
        helper.close()


def speaks_like(executable: str, timeout: float) -> bool:
    """Whether the helpers speak a probe job byte for byte like the program ``executable``.

    Asked once per program and process (~0.1 s): a program from another espeak-ng build or version
    than the library would give other samples, and then its own program should speak.

    Args:
        executable: the resolved path of an espeak-ng program.
        timeout: seconds either may take.

    Returns:
        True when both succeed with the same bytes; False when they differ or either fails.
    """
    with _MATCHES_LOCK:
        if executable not in _MATCHES:
            text, voice, rate, pitch = _PROBE
            command = [executable, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout"]
            pool = HelperPool()
            try:
                program = subprocess.run(command, input=text.encode(), capture_output=True, timeout=timeout)
                library = pool.speak(voice, rate, pitch, text.encode(), timeout)
                _MATCHES[executable] = program.returncode == 0 and library == (0, program.stdout, b"")
            except (HelperError, TimeoutError, subprocess.TimeoutExpired, OSError):
                _MATCHES[executable] = False
            finally:
                pool.close()
        return _MATCHES[executable]


def _atoi(value: int) -> int:
    """``value`` as glibc's ``atoi`` reads its decimal text: clamped to 64 bits, then cut to 32."""
    value = max(-(2**63), min(2**63 - 1, value))
    return ((value & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000
