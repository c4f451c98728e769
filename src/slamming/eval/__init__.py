"""Evaluation: pair scoring by likelihood, sampling continuations, GenPPL, scoring precision.

- :mod:`.likelihood`: batched per-sequence scores, pair outcomes, flat and ZeroSpeech accuracies.
- :mod:`.generate`: the paper's sampling (temperature, top-k, repetition penalty), seeded per prompt.
- :mod:`.genppl`: units → speech (vocoder) → text (ASR) → a text LM's perplexity.
- :mod:`.precision`: every scoring path scores in fp32 (as the authors do), leaving the model as it was.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "score_sequences": ".likelihood",
    "pair_outcomes": ".likelihood",
    "SamplingSettings": ".generate",
    "sample_continuations": ".generate",
    "UnitVocoder": ".genppl",
    "scoring_model": ".precision",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
