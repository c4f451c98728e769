"""User-facing errors.

A :class:`SlammingError` is a mistake the user can fix (a missing file, a corrupt corpus, a config
that does not fit the data). The CLI prints its message as one line, without a traceback, and exits
with status 2. Messages name the file or setting at fault and say what to do about it.
"""

from __future__ import annotations


class SlammingError(Exception):
    """A user mistake, reported as one clear line by the CLI."""


class AudioError(SlammingError):
    """An audio file that cannot be read or holds no usable audio."""


class CorpusError(SlammingError):
    """A unit corpus that is missing, malformed, or fails its checksum."""


class TokenizerMismatchError(SlammingError):
    """Units made by one tokeniser fed to a model or corpus that expects another."""


class ConfigError(SlammingError, ValueError):
    """A setting with a value that cannot work (an unknown name, a value out of range).

    Also a :class:`ValueError`, so code and tests that validate arguments keep catching it; the CLI
    reports it as one line like every :class:`SlammingError`.
    """
