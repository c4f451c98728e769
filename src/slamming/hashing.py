"""Content hashing: file digests and the short keys that name cached builds.

A cache key is the sha256 of the settings' canonical JSON (sorted keys), cut to a few hex digits:
the same settings always give the same folder name, and any changed setting gives another.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def settings_key(settings: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``settings`` as canonical JSON.

    Args:
        settings: Anything JSON can encode (dicts are encoded with sorted keys).
        length: How many hex digits to keep (16 = 64 bits).
    """
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
