"""The identity of units whose tokeniser nobody named.

Every unit stream carries its tokeniser's identity (:func:`~slamming.speech.tokenizers.base.check_identity`
compares them). The authors' unit files do not say which tokeniser made them; imported without
``--tokenizer`` they record :func:`unknown_identity` instead of a guess, and ``check_identity``
refuses to mix such units with units of a known tokeniser. Kept apart from :mod:`.base` so that
``slamming corpus`` can name it without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["UNKNOWN_KIND", "is_unknown", "unknown_identity"]

#: The ``kind`` of an identity nobody named.
UNKNOWN_KIND = "unknown"


def unknown_identity(k: int) -> dict[str, Any]:
    """The identity of ``k`` units whose tokeniser is not known: ``{"kind": "unknown", "k": k}``.

    Two unknown identities with the same ``k`` are equal (nothing tells them apart); ``check_identity``
    refuses to mix one with a known identity.
    """
    return {"kind": UNKNOWN_KIND, "k": int(k)}


def is_unknown(identity: Mapping[str, Any] | None) -> bool:
    """Whether ``identity`` is an :func:`unknown_identity` (None, no identity at all, is not)."""
    return identity is not None and identity.get("kind") == UNKNOWN_KIND
