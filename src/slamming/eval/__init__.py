"""Evaluation: pair scoring by likelihood, sampling continuations, GenPPL, scoring precision.

- :mod:`.likelihood`: batched per-sequence scores, pair outcomes, flat and ZeroSpeech accuracies.
- :mod:`.intervals`: 95 % intervals of an accuracy and of two models' paired difference.
- :mod:`.generate`: the paper's sampling (temperature, top-k, repetition penalty), seeded per prompt.
- :mod:`.genppl`: units → speech (vocoder) → text (ASR) → a text LM's perplexity.
- :mod:`.precision`: every scoring path scores in fp32 (as the authors do), leaving the model as it was.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "score_sequences": ".likelihood",
    "pair_outcomes": ".likelihood",
    "accuracy_interval": ".intervals",
    "paired_difference": ".intervals",
    "SamplingSettings": ".generate",
    "sample_continuations": ".generate",
    "UnitVocoder": ".genppl",
    "scoring_model": ".precision",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
