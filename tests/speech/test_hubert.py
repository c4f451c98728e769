"""HuBERT features: exact hidden_states[layer] of the full model, padding-invariant batches, errors."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import HubertConfig, HubertModel

import slamming.speech.hubert as hubert_module
from slamming.errors import AudioError, SlammingError
from slamming.speech.hubert import EDGE_PADDING, HubertFeatures, _positional_conv_error, conv_output_length

LAYERS = 4


def tiny_hubert(directory: Path, stable: bool = False, seed: int = 0) -> Path:
    """Save a random 4-layer HuBERT (hidden 48, strides 5·4·4 = 80 → 200 Hz) and return its folder.

    ``stable=False`` is the base-model layout (group-norm conv encoder, post-norm transformer);
    ``stable=True`` the large-model one (layer-norm conv encoder, pre-norm transformer).
    """
    torch.manual_seed(seed)
    config = HubertConfig(
        hidden_size=48,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=96,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if stable else "group",
        do_stable_layer_norm=stable,
    )
    HubertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=[False, True], ids=["base-group-norm", "stable-layer-norm"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hubert(tmp_path_factory.mktemp("hubert"), stable=request.param)


def reference_hidden_states(model_dir: Path, wav: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What slamkit computes for one file: the full model, 40 zeros each side, all hidden states."""
    model = HubertModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        out = model(F.pad(wav, (EDGE_PADDING, EDGE_PADDING))[None], output_hidden_states=True)
    return tuple(h[0] for h in out.hidden_states)


def random_wavs(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(600, 6000, (count,), generator=generator)
    return [torch.randn(int(n), generator=generator) * 0.3 for n in lengths]


def test_every_layer_equals_full_model_hidden_states(model_dir: Path) -> None:
    wav = random_wavs(1, seed=1)[0]
    full = reference_hidden_states(model_dir, wav)
    assert len(full) == LAYERS + 1
    for layer in range(LAYERS + 1):
        features = HubertFeatures(model_dir, layer=layer)
        (out,) = features([wav])
        assert len(features.model.encoder.layers) == layer  # only the layers needed are kept
        assert out.dtype == torch.float32
        assert torch.equal(out, full[layer]), f"layer {layer} differs"


def test_batch_of_16_equals_each_file_alone(model_dir: Path) -> None:
    features = HubertFeatures(model_dir, layer=3, batch_size=16)
    wavs = random_wavs(16, seed=2)
    assert len({len(w) for w in wavs}) == 16
    batched = features(wavs)
    for wav, out in zip(wavs, batched, strict=True):
        (alone,) = features([wav])
        assert out.shape == (features.num_frames(len(wav)), 48)
        assert torch.allclose(out, alone, atol=1e-5, rtol=0)
    # Input order is kept although batches are formed longest first.
    assert [len(o) for o in batched] == [features.num_frames(len(w)) for w in wavs]


def test_batch_size_does_not_change_features(model_dir: Path) -> None:
    wavs = random_wavs(7, seed=3)
    big = HubertFeatures(model_dir, layer=2, batch_size=16)(wavs)
    small = HubertFeatures(model_dir, layer=2, batch_size=3)(wavs)
    for a, b in zip(big, small, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_unmasked_zero_padding_would_change_base_features(tmp_path: Path) -> None:
    """Why batching is done with care: slamkit-style padding without a mask moves the features."""
    model_dir = tiny_hubert(tmp_path, stable=False)
    short, long = random_wavs(2, seed=4)
    short, long = (short, long) if len(short) < len(long) else (long, short)
    model = HubertModel.from_pretrained(model_dir).eval()
    batch = torch.nn.utils.rnn.pad_sequence([long, short], batch_first=True)
    with torch.inference_mode():
        naive = model(F.pad(batch, (EDGE_PADDING, EDGE_PADDING)), output_hidden_states=True).hidden_states[3]
    (alone,) = HubertFeatures(model_dir, layer=3)([short])
    gap = (naive[1, : len(alone)] - alone).abs().max().item()
    assert gap > 1e-2


def test_frame_arithmetic_and_rate(model_dir: Path) -> None:
    features = HubertFeatures(model_dir, layer=1)
    assert features.frame_rate == 200.0
    assert features.dim == 48
    # 1 s of audio + 80 edge samples: ((16080 - 10) // 5 + 1 = 3215, (3215 - 8) // 4 + 1 = 802,
    # (802 - 4) // 4 + 1 = 200.
    assert features.num_frames(16000) == 200
    assert conv_output_length(9, (10,), (5,)) == 0
    (out,) = features([torch.zeros(16000)])
    assert out.shape == (200, 48)


def test_too_short_and_bad_shapes(model_dir: Path) -> None:
    features = HubertFeatures(model_dir, layer=1)
    # Receptive field: ((4 - 1) * 4 + 8 - 1) * 5 + 10 = 105 samples, 80 of them edge padding.
    assert features.num_frames(25) == 1 and features.num_frames(24) == 0
    with pytest.raises(AudioError, match="too short for one HuBERT frame.*needs 25"):
        features([torch.zeros(24)])
    with pytest.raises(ValueError, match="must be 1-D"):
        features([torch.zeros(2, 3000)])
    assert features([]) == []


def test_model_and_layer_errors(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(SlammingError, match="does not exist.*local folder"):
        HubertFeatures(tmp_path / "missing", layer=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SlammingError, match="cannot load HuBERT model.*local folder"):
        HubertFeatures(empty, layer=1)
    with pytest.raises(SlammingError, match=r"layer=5 is outside \[0, 4\]"):
        HubertFeatures(model_dir, layer=5)
    with pytest.raises(ValueError, match="dtype"):
        HubertFeatures(model_dir, layer=1, dtype="float16")


def test_weights_hash_tracks_the_weights_in_use(tmp_path: Path) -> None:
    first = HubertFeatures(tiny_hubert(tmp_path / "a", seed=0), layer=2)
    same = HubertFeatures(tiny_hubert(tmp_path / "b", seed=0), layer=2)
    other = HubertFeatures(tiny_hubert(tmp_path / "c", seed=1), layer=2)
    deeper = HubertFeatures(tmp_path / "a", layer=3)
    assert len(first.weights_sha256) == 64
    assert first.weights_sha256 == same.weights_sha256
    assert len({first.weights_sha256, other.weights_sha256, deeper.weights_sha256}) == 3


def test_bfloat16_runs_close_to_float32(tmp_path: Path) -> None:
    model_dir = tiny_hubert(tmp_path, stable=False)
    wav = random_wavs(1, seed=5)[0]
    (full,) = HubertFeatures(model_dir, layer=2)([wav])
    (half,) = HubertFeatures(model_dir, layer=2, dtype="bfloat16")([wav])
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert 0 < (half - full).abs().max().item() < 0.25


class _Doubled(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return 2 * self.inner(hidden)


def test_positional_conv_error_measures_the_working_dtype_against_float32(tmp_path: Path) -> None:
    positional = HubertModel.from_pretrained(tiny_hubert(tmp_path)).encoder.pos_conv_embed.eval()
    assert _positional_conv_error(positional, positional, 48, torch.device("cpu")) == 0.0
    doubled = _Doubled(copy.deepcopy(positional))  # off by exactly its own size
    error = _positional_conv_error(doubled, positional, 48, torch.device("cpu"))
    assert error == pytest.approx(1.0, abs=1e-4)


def test_a_faulty_bfloat16_positional_conv_runs_in_float32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the probe finds the bf16 convolution off (forced here with a negative tolerance, as a
    oneDNN fault does on some AVX-512-bf16/AMX CPUs), the convolution runs in float32: one warning,
    features within bf16 rounding of float32, and a weights digest that says so."""
    model_dir = tiny_hubert(tmp_path, stable=False)
    wav = random_wavs(1, seed=5)[0]
    (full,) = HubertFeatures(model_dir, layer=2)([wav])
    monkeypatch.setattr(hubert_module, "POSITIONAL_CONV_TOLERANCE", 1e9)
    trusted = HubertFeatures(model_dir, layer=2, dtype="bfloat16")
    monkeypatch.setattr(hubert_module, "POSITIONAL_CONV_TOLERANCE", -1.0)
    with caplog.at_level(logging.WARNING, logger="slamming.speech.hubert"):
        guarded = HubertFeatures(model_dir, layer=2, dtype="bfloat16")
    assert [r.getMessage() for r in caplog.records if "running that convolution in float32" in r.getMessage()]
    (half,) = guarded([wav])
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert ((half - full).norm() / full.norm()).item() < 0.03
    assert guarded.weights_sha256 != trusted.weights_sha256
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="slamming.speech.hubert"):
        HubertFeatures(model_dir, layer=2)  # float32: nothing to probe
    assert not caplog.records
