"""Shared fixtures for the speech tests: real espeak-ng speech, synthesised once per session."""

from __future__ import annotations

import shutil

import pytest
import torch

from slamming.speech.tts import EspeakEngine

SENTENCES = [
    "Once upon a time a little fox named Tom went to the river to find a shiny stone.",
    "The girl looked at the big red ball and laughed with her friend.",
    "Every morning the old bear walked slowly through the quiet forest.",
    "Sue gave the bird a small piece of bread, and it sang a happy song.",
    "At night the castle was dark, but the moon was bright above the hills.",
    "Max found a kite in the garden and ran to show it to his mother.",
]


@pytest.fixture(scope="session")
def espeak() -> EspeakEngine:
    """The default espeak-ng engine; the tests that need it are skipped where it is not installed."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return EspeakEngine()


@pytest.fixture(scope="session")
def speech(espeak: EspeakEngine) -> list[torch.Tensor]:
    """The sentences above, spoken by two voices at normal rate and pitch (12 utterances, ~40 s)."""
    return [espeak.synthesize(text, voice, 175, 50) for voice in ("en-us", "en-gb") for text in SENTENCES]
