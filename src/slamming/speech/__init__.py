"""Speech front end: audio I/O, text-to-speech, acoustic features, k-means and unit tokenisers.

- :mod:`slamming.speech.audio`: read, decode, mono-mix, resample and write waveforms (soundfile).
- :mod:`slamming.speech.tts`: the espeak-ng engine and seeded, parallel batch synthesis.
- :mod:`slamming.speech.features`: 100 Hz MFCCs, pooling, and phone-like change-point segments.
- :mod:`slamming.speech.kmeans`: k-means on a centroid tensor (matmul assignment, safetensors files).
- :mod:`slamming.speech.tokenizers`: dedup, the MFCC tokeniser and tokeniser identity checks.
"""
