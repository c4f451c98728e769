"""HuBERT hidden states of one layer, batched without changing any file's result.

The Slam authors (slamkit ``HubertFeatureExtractor``) run the whole ``transformers.HubertModel``
with ``output_hidden_states=True`` on a zero-padded batch with no attention mask and keep
``hidden_states[layer]``. :class:`HubertFeatures` gives the same tensor for a file on its own, while
computing only what that layer needs and keeping batches exact:

* Layer semantics. In HF's encoder ``hidden_states[0]`` is the input of the first transformer layer
  (projected conv features + positional conv embedding, then the encoder layer norm for the
  post-norm "base" encoder; no norm for the pre-norm ``do_stable_layer_norm`` encoder) and
  ``hidden_states[i]`` the output of layer ``i``. The last entry of the pre-norm encoder also has the
  encoder's final layer norm applied. The layers after ``layer`` are dropped; the forward pass below
  calls HF's own modules in HF's order, so the result is exactly ``hidden_states[layer]`` of the full
  model (``tests/speech/test_hubert.py`` checks bit equality for both encoder kinds).
* Padding. Base HuBERT's first conv layer has a ``GroupNorm`` over the whole time axis, so the
  zero padding of a batch changes every frame of the shorter files. Here the conv feature encoder
  runs on each file's exact samples ("group" norm models: files of equal length are stacked, others
  run alone; "layer" norm models: one padded batch, since a frame computed only from real samples
  does not see the padding). Only the conv output is padded; padded frames are zeroed before the
  positional convolution (whose own edge padding is zeros, as for a single file) and masked as
  attention keys. Per-frame layer norms and feed-forwards do not mix frames. A file's features in a
  batch thus equal its features alone up to float summation order (about 1e-6 in float32).
* Edge padding. Like slamkit, every waveform gets 40 zero samples on each side before the conv
  encoder (so a 400-sample receptive field with a 320-sample hop centres frames on the audio), and a
  file of ``n`` samples yields the conv-arithmetic frame count of ``n + 80`` samples.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from slamming.errors import AudioError, ConfigError, SlammingError

__all__ = ["EDGE_PADDING", "HubertFeatures", "conv_output_length"]

EDGE_PADDING = 40
"""Zero samples added to each side of a waveform, as slamkit does before HuBERT."""

SAMPLE_RATE = 16000
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
log = logging.getLogger(__name__)

#: Largest relative error of the bfloat16 positional convolution against float32 on a probe that
#: counts as bfloat16 rounding (measured ~0.3 %); above it the convolution runs in float32.
POSITIONAL_CONV_TOLERANCE = 0.05


def conv_output_length(samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Frames out of a stack of unpadded 1-D convolutions.

    Args:
        samples: input length.
        kernels: kernel size of each layer.
        strides: stride of each layer.

    Returns:
        The output length, 0 when the input is shorter than the receptive field.
    """
    length = samples
    for kernel, stride in zip(kernels, strides, strict=True):
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a local folder (a hub id is ``name`` or ``owner/name``)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _load_model(model: str | os.PathLike[str]) -> torch.nn.Module:
    """``transformers.HubertModel.from_pretrained`` with one-line errors."""
    from transformers import HubertModel

    name = os.fspath(model)
    fix = (
        "point model= at a local folder holding config.json and the weights (e.g. made with "
        "`huggingface-cli download slprl/mhubert-base-25hz --local-dir DIR`), or at a hub id with network access"
    )
    if not Path(name).expanduser().exists() and (isinstance(model, os.PathLike) or _looks_like_path(name)):
        raise SlammingError(f"HuBERT model folder {name} does not exist; {fix}")
    source = str(Path(name).expanduser()) if Path(name).expanduser().exists() else name
    try:
        loaded = HubertModel.from_pretrained(source, attn_implementation="sdpa")
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise SlammingError(f"cannot load HuBERT model {name!r} ({reason}); {fix}") from err
    return loaded


class HubertFeatures:
    """Hidden states of one HuBERT layer for a list of waveforms.

    Args:
        model: local folder or hub id of a ``transformers`` HuBERT checkpoint.
        layer: which ``hidden_states`` entry to return (0 = transformer input, i = output of layer i).
        device: where the model runs.
        dtype: ``"float32"`` or ``"bfloat16"`` (bfloat16 features are not bit-comparable with float32).
        compile: wrap the conv encoder and the transformer in ``torch.compile(dynamic=True)``.
        batch_size: most files per forward pass; files are sorted by length so batches pad little.

    Raises:
        SlammingError: the model cannot be loaded, or ``layer`` is outside ``[0, num_hidden_layers]``.
        ConfigError: an unknown ``dtype`` or a ``batch_size`` below 1.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        layer: int = 11,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
        compile: bool = False,
        batch_size: int = 16,
    ) -> None:
        if dtype not in _DTYPES:
            raise ConfigError(f"HuBERT's dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ConfigError(f"HuBERT's batch_size must be >= 1, got {batch_size}")
        self.model_name = os.fspath(model)
        self.dtype_name = dtype
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        hubert = _load_model(model)
        config = hubert.config
        if not 0 <= layer <= config.num_hidden_layers:
            raise SlammingError(
                f"layer={layer} is outside [0, {config.num_hidden_layers}] for HuBERT model {self.model_name}; "
                "choose a layer the model has"
            )
        self.layer = int(layer)
        self.config = config
        # Keep only the layers that feed hidden_states[layer]; the rest is never computed or stored.
        hubert.encoder.layers = hubert.encoder.layers[: self.layer]
        exact = copy.deepcopy(hubert.encoder.pos_conv_embed) if dtype != "float32" else None
        self.model = hubert.eval().requires_grad_(False).to(device=self.device, dtype=_DTYPES[dtype])
        self._positional = self.model.encoder.pos_conv_embed
        self._float32_positional: torch.nn.Module | None = None
        if exact is not None:
            exact = exact.eval().requires_grad_(False).to(self.device)
            error = _positional_conv_error(self._positional, exact, config.hidden_size, self.device)
            if error > POSITIONAL_CONV_TOLERANCE:
                log.warning(
                    "HuBERT %s: its positional convolution in %s is off by %.0f %% from float32 on %s "
                    "(a oneDNN fault on some AVX-512-bf16/AMX CPUs); running that convolution in float32",
                    self.model_name,
                    dtype,
                    100 * error,
                    self.device,
                )
                self._float32_positional = exact
                self._positional = _in_float32(exact)
        self._stable = bool(config.do_stable_layer_norm)
        self._conv_batchable = config.feat_extract_norm == "layer"
        # A batch norm before the positional conv would turn padded zeros into non-zeros.
        self._maskable = not getattr(config, "conv_pos_batch_norm", False)
        self._conv = self.model.feature_extractor
        self._transformer = self._transform
        if compile:
            self._conv = torch.compile(self._conv, dynamic=True)
            self._transformer = torch.compile(self._transform, dynamic=True)
        self._weights_sha256: str | None = None

    @property
    def frame_rate(self) -> float:
        """Frames per second: 16000 / prod(conv_stride) (25.0 for mHuBERT-base-25Hz, 50.0 for base)."""
        return SAMPLE_RATE / math.prod(self.config.conv_stride)

    @property
    def dim(self) -> int:
        """Feature dimension (``hidden_size``)."""
        return int(self.config.hidden_size)

    @property
    def weights_sha256(self) -> str:
        """sha256 over the names, shapes and bytes of the parameters in use (computed once)."""
        if self._weights_sha256 is None:
            digest = hashlib.sha256()
            tensors = sorted(self.model.state_dict().items())
            if self._float32_positional is not None:  # the float32 copy is what runs
                tensors += sorted(
                    ("float32." + name, tensor)
                    for name, tensor in self._float32_positional.state_dict().items()
                )
            for name, tensor in tensors:
                data = tensor.detach().cpu().contiguous()
                digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
                digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
            self._weights_sha256 = digest.hexdigest()
        return self._weights_sha256

    def num_frames(self, samples: int) -> int:
        """Frames produced for a waveform of ``samples`` samples (after the 40-sample edge padding)."""
        return conv_output_length(
            samples + 2 * EDGE_PADDING, self.config.conv_kernel, self.config.conv_stride
        )

    def _transform(self, features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Conv features ``(B, T, C)`` → ``hidden_states[layer]`` ``(B, T, D)``; ``mask`` marks real frames."""
        encoder = self.model.encoder
        hidden = self.model.feature_projection(features)
        if mask is not None:
            hidden = hidden.masked_fill(~mask[:, :, None], 0.0)
        hidden = hidden + self._positional(hidden)
        if not self._stable:
            hidden = encoder.layer_norm(hidden)
        additive = None
        if mask is not None:
            additive = torch.zeros(mask.shape, dtype=hidden.dtype, device=hidden.device)
            additive = additive.masked_fill(~mask, torch.finfo(hidden.dtype).min)[:, None, None, :]
        for block in encoder.layers:
            hidden = block(hidden, attention_mask=additive)[0]
        if self._stable and self.layer == self.config.num_hidden_layers:
            hidden = encoder.layer_norm(hidden)
        return hidden

    def _conv_features(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each file's conv features ``(T_i, C)``, each computed from its own samples only."""
        out: list[torch.Tensor | None] = [None] * len(wavs)
        if self._conv_batchable:
            padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
            conv = self._conv(padded).transpose(1, 2)
            kernels, strides = self.config.conv_kernel, self.config.conv_stride
            return [conv[i, : conv_output_length(len(w), kernels, strides)] for i, w in enumerate(wavs)]
        groups: dict[int, list[int]] = {}
        for i, wav in enumerate(wavs):
            groups.setdefault(len(wav), []).append(i)
        for members in groups.values():
            conv = self._conv(torch.stack([wavs[i] for i in members])).transpose(1, 2)
            for row, i in enumerate(members):
                out[i] = conv[row]
        return [tensor for tensor in out if tensor is not None]

    def _batch(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features of files padded into one transformer pass."""
        padded = [
            F.pad(w.to(self.device, _DTYPES[self.dtype_name]), (EDGE_PADDING, EDGE_PADDING)) for w in wavs
        ]
        conv = self._conv_features(padded)
        lengths = [len(c) for c in conv]
        features = torch.nn.utils.rnn.pad_sequence(conv, batch_first=True)
        mask = None
        if min(lengths) != max(lengths):
            mask = (
                torch.arange(max(lengths), device=self.device)[None, :]
                < torch.tensor(lengths, device=self.device)[:, None]
            )
        hidden = self._transformer(features, mask)
        return [hidden[i, :n].float() for i, n in enumerate(lengths)]

    def _check(self, wav: torch.Tensor, index: int) -> torch.Tensor:
        tensor = torch.as_tensor(wav)
        if tensor.dim() != 1:
            raise ValueError(f"waveform {index} must be 1-D (samples,), got shape {tuple(tensor.shape)}")
        if self.num_frames(len(tensor)) < 1:
            raise AudioError(
                f"waveform {index} has {len(tensor)} samples, too short for one HuBERT frame "
                f"(needs {self._min_samples()} at 16 kHz); drop or lengthen the clip"
            )
        return tensor

    def _min_samples(self) -> int:
        """Fewest samples that give one frame."""
        receptive = 1
        for kernel, stride in zip(
            reversed(self.config.conv_kernel), reversed(self.config.conv_stride), strict=True
        ):
            receptive = (receptive - 1) * stride + kernel
        return max(receptive - 2 * EDGE_PADDING, 1)

    @torch.inference_mode()
    def __call__(self, wavs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``hidden_states[layer]`` for every waveform.

        Args:
            wavs: 1-D 16 kHz mono waveforms of any lengths.

        Returns:
            One float32 ``(T_i, D)`` tensor per waveform on :attr:`device`, in input order, with
            ``T_i = num_frames(len(wav_i))``. Equal (within float summation order) to running each
            file alone.

        Raises:
            AudioError: a waveform is too short to give a single frame.
        """
        checked = [self._check(wav, i) for i, wav in enumerate(wavs)]
        order = sorted(range(len(checked)), key=lambda i: len(checked[i]), reverse=True)
        results: list[torch.Tensor | None] = [None] * len(checked)
        if self._maskable:
            batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        else:
            by_length: dict[int, list[int]] = {}
            for i in order:
                by_length.setdefault(len(checked[i]), []).append(i)
            batches = [
                members[s : s + self.batch_size]
                for members in by_length.values()
                for s in range(0, len(members), self.batch_size)
            ]
        for batch in batches:
            for i, features in zip(batch, self._batch([checked[i] for i in batch]), strict=True):
                results[i] = features
        return [features for features in results if features is not None]


def _positional_conv_error(
    positional: torch.nn.Module, exact: torch.nn.Module, width: int, device: torch.device
) -> float:
    """Relative error of ``positional`` (the model's positional convolution in its working dtype)
    against ``exact`` (the same weights in float32) on a fixed random probe ``(1, 64, width)``.

    torch 2.9's oneDNN computes some bfloat16 grouped convolutions wrongly on AVX-512-bf16/AMX
    CPUs (a 48-channel, 4-group, kernel-16 convolution off by ~75 %, while 2 groups, kernel 15 or
    HuBERT base's 768 channels in 16 groups with kernel 128 are right; ``docs/perf-log.md``,
    2026-12-04), so the model's own convolution is checked once where it will run."""
    probe = torch.randn(1, 64, width, generator=torch.Generator().manual_seed(0)).to(device)
    dtype = next(positional.parameters()).dtype
    with torch.no_grad():
        want = exact(probe)
        got = positional(probe.to(dtype)).float()
    return ((got - want).norm() / want.norm().clamp_min(1e-12)).item()


def _in_float32(module: torch.nn.Module):
    """``module`` (float32) applied to a tensor of any float dtype, the result in that dtype."""

    def run(hidden: torch.Tensor) -> torch.Tensor:
        return module(hidden.float()).to(hidden.dtype)

    return run
