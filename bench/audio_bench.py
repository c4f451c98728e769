"""Audio decoding for unit extraction: soundfile vs fairseq2's native ``AudioDecoder``, to 16 kHz mono.

What ``AudioManifestDataModule`` does to every file before HuBERT sees it: decode, average the
channels, resample to 16 kHz. Two ways of doing it are timed on the same files, each as the
``map(fn, num_parallel_calls=2)`` stage of a fairseq2 pipeline (``read_sequence(paths)``), as the
extraction pipeline runs it:

* **soundfile**: :func:`slamming.speech.audio.read_audio` (``soundfile.SoundFile.read`` to float32,
  libsndfile's log checked for truncation, channel mean, ``torchaudio.functional.resample``).
* **fairseq2**: ``FileMapper`` + ``fairseq2.data.audio.AudioDecoder(dtype=float32)``, with the checks
  that keep ``read_audio``'s guarantees (a ``soundfile.info`` header read for the truncation log and
  the frame count, a finite-sample check; anything suspicious goes to ``read_audio``), the same
  channel mean and the same resampler (fairseq2 0.8 has no resampler of its own).

The files: a mix like the corpora ``configs/tokenize.yaml`` reads and the authors' TTS output — 16 kHz
mono FLAC (LibriSpeech, LibriLight), 24 kHz mono and stereo WAV (Kokoro, SpokenSwag), 44.1 kHz
stereo WAV — 5 to 20 s each, 16-bit, a voiced-speech-like synthetic signal, written once to a
temporary folder (after the warm-up pass they are read from the page cache: this measures decoding,
not the disk). Timed per repeat, in an order that rotates every repeat: the whole mix through both
decode-and-resample functions, the whole mix through the bare decoders (``soundfile.read`` vs
``AudioDecoder``: no checks, no mixing, no resampling), and each format group through both full
functions. Throughput is audio seconds per wall second, and per CPU second of the process (all
threads, ``time.process_time``): on a shared machine the CPU-time ratio is the steadier measure of the
work each side does, the wall-time ratio what a run sees. Each ratio is the median of the per-repeat
ratios.

Identical work is checked, not assumed: for every file the two decoders' samples (the maximum
absolute difference, and equal frame and channel counts) and the two 16 kHz waveforms.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from bench_report import Row, machine, table, versions

from slamming.data.audio.decode import NATIVE_SUFFIXES, AudioFileDecoder
from slamming.speech.audio import read_audio

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioBenchConfig:
    """Files of the audio benchmark: ``(name, rate, channels, format, count)`` per group."""

    groups: tuple[tuple[str, int, int, str, int], ...] = (
        ("flac 16 kHz mono", 16000, 1, "flac", 48),
        ("wav 24 kHz mono", 24000, 1, "wav", 12),
        ("wav 24 kHz stereo", 24000, 2, "wav", 6),
        ("wav 44.1 kHz stereo", 44100, 2, "wav", 12),
    )
    min_s: float = 5.0
    max_s: float = 20.0
    parallel: int = 2
    repeats: int = 9
    seed: int = 0


QUICK_AUDIO = AudioBenchConfig(
    groups=(
        ("flac 16 kHz mono", 16000, 1, "flac", 2),
        ("wav 24 kHz mono", 24000, 1, "wav", 1),
        ("wav 24 kHz stereo", 24000, 2, "wav", 1),
        ("wav 44.1 kHz stereo", 44100, 2, "wav", 1),
    ),
    min_s=1.0,
    max_s=2.0,
    repeats=2,
)

SIDES = ("soundfile", "fairseq2")


def speechlike(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    """Gliding 100–150 Hz harmonics under a 4 Hz syllable envelope plus noise; ``(frames, channels)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 125.0 + 25.0 * np.sin(2 * np.pi * (0.2 + 0.1 * rng.random()) * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 11))
    envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 4.0 * t))
    mono = 0.1 * envelope * voiced + 0.01 * rng.standard_normal(t.size)
    # A second channel that is not a copy, so the channel mean is real work.
    return np.stack([mono, 0.7 * mono + 0.01 * rng.standard_normal(t.size)][:channels], axis=1)


def write_files(cfg: AudioBenchConfig, root: Path) -> dict[str, list[Path]]:
    """Write every group's files (16-bit) and return their paths by group name."""
    rng = np.random.default_rng(cfg.seed)
    files: dict[str, list[Path]] = {}
    for g, (name, rate, channels, fmt, count) in enumerate(cfg.groups):
        files[name] = []
        for i in range(count):
            seconds = float(rng.uniform(cfg.min_s, cfg.max_s))
            path = root / f"g{g}-{i:03d}.{fmt}"
            sf.write(path, speechlike(seconds, rate, channels, seed=1000 * g + i), rate, subtype="PCM_16")
            files[name].append(path)
    return files


def soundfile_decode(path: str) -> np.ndarray:
    """The bare soundfile decode: float32 ``(frames, channels)``."""
    return sf.read(path, dtype="float32", always_2d=True)[0]


def fairseq2_decode_fn() -> Callable[[str], torch.Tensor]:
    """The bare fairseq2 decode: ``FileMapper`` + ``AudioDecoder``, float32 ``(frames, channels)``."""
    from fairseq2.data.audio import AudioDecoder
    from fairseq2.data.data_pipeline import FileMapper

    mapper, decoder = FileMapper(), AudioDecoder(keepdim=True, dtype=torch.float32)
    return lambda path: decoder(mapper(path)["data"])["waveform"]


def _pipeline_seconds(paths: list[str], fn: Callable[[str], Any], parallel: int) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) to pull every path through ``read_sequence(paths).map(fn)``."""
    from fairseq2.data.data_pipeline import read_sequence

    pipeline = read_sequence(paths).map(fn, num_parallel_calls=parallel).and_return()
    wall, cpu = time.perf_counter(), time.process_time()
    count = sum(1 for _ in pipeline)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert count == len(paths)
    return wall, cpu


def _audio_seconds(paths: list[Path]) -> float:
    return sum(sf.info(str(p)).duration for p in paths)


def check_equivalence(paths: list[Path], native: AudioFileDecoder) -> dict[str, Any]:
    """Both decoders on every file: raw samples and final 16 kHz waveforms, max |difference|."""
    bare = fairseq2_decode_fn()
    raw_diff, final_diff, same_shapes = 0.0, 0.0, True
    for path in paths:
        a, b = soundfile_decode(str(path)), bare(str(path)).numpy()
        same_shapes &= a.shape == b.shape
        if a.shape == b.shape:
            raw_diff = max(raw_diff, float(np.abs(a - b).max()))
        x, y = read_audio(path, SAMPLE_RATE), native(path)
        same_shapes &= x.shape == y.shape
        if x.shape == y.shape:
            final_diff = max(final_diff, float((x - y).abs().max()))
    return {
        "files": len(paths),
        "raw_max_abs_diff": raw_diff,
        "final_max_abs_diff": final_diff,
        "same_shapes": same_shapes,
    }


def _libsndfile_files() -> list[str]:
    """The libsndfile shared objects mapped into this process (soundfile's bundled one, the system one)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted(
        {line.split()[-1] for line in maps if "sndfile" in line and line.split()[-1].startswith("/")}
    )


def _libsndfile_version() -> str:
    try:
        lib = ctypes.CDLL("libsndfile.so.1")
        lib.sf_version_string.restype = ctypes.c_char_p
        return lib.sf_version_string().decode()
    except (OSError, AttributeError):
        return "unknown"


def measure(cfg: AudioBenchConfig, files: dict[str, list[Path]]) -> dict[str, Any]:
    """Interleaved timings of both sides: whole mix, bare decoders, each group."""
    native = AudioFileDecoder(SAMPLE_RATE)
    full: dict[str, Callable[[str], Any]] = {
        "soundfile": lambda p: read_audio(p, SAMPLE_RATE),
        "fairseq2": native,
    }
    bare: dict[str, Callable[[str], Any]] = {"soundfile": soundfile_decode, "fairseq2": fairseq2_decode_fn()}
    mix = [str(p) for paths in files.values() for p in paths]
    order = np.random.default_rng(cfg.seed).permutation(len(mix))
    mix = [mix[i] for i in order]  # a manifest mixes formats; so does every pass
    for side in SIDES:  # warm-up: page cache, resampling kernels, oneDNN primitives
        _pipeline_seconds(mix, full[side], cfg.parallel)
        _pipeline_seconds(mix, bare[side], cfg.parallel)
    keys = ["mix", "decode", *files]
    seconds: dict[str, dict[str, list[float]]] = {key: {side: [] for side in SIDES} for key in keys}
    cpu: dict[str, dict[str, list[float]]] = {key: {side: [] for side in SIDES} for key in keys}
    threads: set[int] = set()
    for r in range(cfg.repeats):
        sides = SIDES if r % 2 == 0 else tuple(reversed(SIDES))
        for side in sides:
            runs = [("mix", mix, full[side]), ("decode", mix, bare[side])]
            runs += [(name, [str(p) for p in paths], full[side]) for name, paths in files.items()]
            for key, paths, fn in runs:
                wall, used = _pipeline_seconds(paths, fn, cfg.parallel)
                seconds[key][side].append(wall)
                cpu[key][side].append(used)
            threads.add(torch.get_num_threads())
    return {"seconds": seconds, "cpu_seconds": cpu, "threads": sorted(threads)}


def run_audio_bench(quick: bool) -> dict[str, Any]:
    """Write the files, check both decoders agree, time them; the JSON-able result (rows excluded).

    Args:
        quick: toy size (5 files of 1–2 s, 2 repeats) for tests.
    """
    import fairseq2

    cfg = QUICK_AUDIO if quick else AudioBenchConfig()
    started = datetime.now().astimezone()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slamming-audio-bench-") as tmp:
        files = write_files(cfg, Path(tmp))
        every = [p for paths in files.values() for p in paths]
        equivalence = check_equivalence(every, AudioFileDecoder(SAMPLE_RATE))
        measured = measure(cfg, files)
        audio = {name: _audio_seconds(paths) for name, paths in files.items()}
    result: dict[str, Any] = {
        "date": started.strftime("%a %b %d %H:%M:%S %Z %Y"),
        "quick": quick,
        "environment": {
            "machine": machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **versions(),
            "fairseq2": fairseq2.__version__,
            "soundfile": sf.__version__,
            "soundfile_libsndfile": sf.__libsndfile_version__,
            "libsndfile_loaded": _libsndfile_version(),
            "libsndfile_files": _libsndfile_files(),
        },
        "config": {**asdict(cfg), "native_suffixes": list(NATIVE_SUFFIXES)},
        "files": {name: len(paths) for name, paths in files.items()},
        "audio_s": {"mix": sum(audio.values()), "decode": sum(audio.values()), **audio},
        "equivalence": equivalence,
        **measured,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "elapsed_s": time.perf_counter() - t0,
    }
    result["notes"] = _notes(result)
    return result


def _notes(result: dict[str, Any]) -> list[str]:
    notes = []
    load = max(result["load_average"]["before"][0], result["load_average"]["after"][0])
    if load > result["config"]["parallel"] + 0.5:
        notes.append(
            f"load average {load:.2f} above the {result['config']['parallel']} decoding threads: other "
            "processes shared the CPU; absolute rates are depressed, the interleaved ratios less so"
        )
    spread = max(max(v) / min(v) for v in result["seconds"]["mix"].values())
    if spread > 1.25:
        notes.append(
            f"a side's whole-mix pass times spread by {spread:.2f}×: disturbed run, the medians are kept"
        )
    return notes


def _rate(result: dict[str, Any], key: str, side: str, clock: str = "seconds") -> float:
    """Audio seconds per wall second (``clock="seconds"``) or per CPU second (``"cpu_seconds"``), median."""
    return result["audio_s"][key] / statistics.median(result[clock][key][side])


def _ratio(result: dict[str, Any], key: str, clock: str = "seconds") -> float:
    """Median over repeats of fairseq2 ÷ soundfile throughput (= soundfile ÷ fairseq2 seconds)."""
    sec = result[clock][key]
    return statistics.median(s / f for s, f in zip(sec["soundfile"], sec["fairseq2"], strict=True))


def audio_rows(result: dict[str, Any]) -> list[Row]:
    """The table rows of :func:`run_audio_bench`'s result."""
    eq = result["equivalence"]
    rows = []
    for key, what, sf_name, f2_name in (
        ("mix", "mix", "soundfile read_audio", "fairseq2 AudioDecoder path"),
        ("decode", "bare decode", "soundfile.read", "AudioDecoder"),
    ):
        rows += [
            Row(f"{what} × real time (wall), {sf_name}", _rate(result, key, "soundfile"), None, ".0f"),
            Row(f"{what} × real time (wall), {f2_name}", _rate(result, key, "fairseq2"), None, ".0f"),
            Row(f"{what}: fairseq2 ÷ soundfile, wall (median ratio)", _ratio(result, key)),
            Row(
                f"{what} audio s per CPU s, {sf_name}",
                _rate(result, key, "soundfile", "cpu_seconds"),
                None,
                ".0f",
            ),
            Row(f"{what}: fairseq2 ÷ soundfile, CPU time (median ratio)", _ratio(result, key, "cpu_seconds")),
        ]
    for name in result["files"]:
        rows.append(
            Row(f"{name}: × real time (wall), soundfile", _rate(result, name, "soundfile"), None, ".0f")
        )
        rows.append(Row(f"{name}: fairseq2 ÷ soundfile, wall", _ratio(result, name)))
        rows.append(Row(f"{name}: fairseq2 ÷ soundfile, CPU time", _ratio(result, name, "cpu_seconds")))
        rows.append(
            Row(
                f"{name}: audio s per CPU s, fairseq2 path",
                _rate(result, name, "fairseq2", "cpu_seconds"),
                None,
                ".0f",
            )
        )
    rows += [
        Row("max |Δ| decoded samples, AudioDecoder vs soundfile", eq["raw_max_abs_diff"], ("<=", 0.0), ".1e"),
        Row(
            "max |Δ| 16 kHz waveforms, fairseq2 path vs read_audio",
            eq["final_max_abs_diff"],
            ("<=", 0.0),
            ".1e",
        ),
        Row("same frame and channel counts, every file", eq["same_shapes"], ("==", True)),
        Row("one torch thread count throughout", len(result["threads"]) == 1, ("==", True)),
    ]
    return rows


def audio_log_section(result: dict[str, Any], json_path: Any) -> str:
    """The dated Markdown section for docs/perf-log.md."""
    cfg, env, eq = result["config"], result["environment"], result["equivalence"]
    groups = ", ".join(
        f"{count} × {name} ({result['audio_s'][name]:.0f} s)" for name, _, _, _, count in cfg["groups"]
    )
    per_rep = "; ".join(
        f"{key} {side}: " + ", ".join(f"{s:.3f}" for s in result["seconds"][key][side])
        for key in ("mix", "decode")
        for side in SIDES
    )
    rows = audio_rows(result)
    lines = [
        f"## {result['date']} — audio decoding to 16 kHz: soundfile vs fairseq2 AudioDecoder (bench/audio_bench.py)",
        "",
        f"- Machine: {env['machine']} ({env['cpu_capability']}); torch {env['torch']}, fairseq2 {env['fairseq2']}, "
        f"soundfile {env['soundfile']} (bundled libsndfile {env['soundfile_libsndfile']}), libsndfile mapped: "
        f"{', '.join(env['libsndfile_files']) or 'unknown'}; python {env['python']}; "
        f"torch threads {result['threads']}, `map(num_parallel_calls={cfg['parallel']})`.",
        f"- Files: {groups}; {cfg['min_s']:g}–{cfg['max_s']:g} s each, 16-bit, synthetic voiced-speech-like "
        f"signal; {result['audio_s']['mix']:.0f} s of audio in all, read from the page cache after a warm-up pass.",
        f"- Method: whole mix (shuffled), bare decoders and each group through both sides, interleaved × "
        f"{cfg['repeats']} with the order rotating; audio s ÷ wall s and ÷ CPU s (process, all threads); "
        "median of per-repeat ratios.",
        f"- Same work: {eq['files']} files; max |Δ| of decoded samples {eq['raw_max_abs_diff']:.1e}, of the 16 kHz "
        f"waveforms {eq['final_max_abs_diff']:.1e}; equal frame and channel counts: {eq['same_shapes']}.",
        f"- Load average (1 min) before / after: {result['load_average']['before'][0]:.2f} / "
        f"{result['load_average']['after'][0]:.2f}. Wall time {result['elapsed_s']:.0f} s.",
        f"- Per-repeat seconds: {per_rep}.",
        "",
        table(rows),
        "",
    ]
    lines += [f"- Note: {n}" for n in result.get("notes") or []]
    if json_path is not None:
        lines.append(f"- JSON: `{json_path}`")
    return "\n".join(lines) + "\n\n"


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="soundfile vs fairseq2 AudioDecoder, decode + resample")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = run_audio_bench(args.quick)
    out["rows"] = [r.as_dict() for r in audio_rows(out)]
    print(table(audio_rows(out)))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(audio_log_section(out, args.json))
