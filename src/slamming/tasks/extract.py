"""``UnitExtraction``: speech → units as a LightningModule, for ``slamming predict``.

The tokeniser runs in ``predict_step``; a
:class:`~slamming.callbacks.extraction_writer.ExtractionWriter` callback writes what each rank produced and
merges it into one unit corpus. Multi-GPU and multi-node extraction come from Lightning's
strategies (``trainer.devices``, ``trainer.num_nodes``), not from scripts of ours.

The tokeniser is either a saved folder (MFCC or HuBERT + k-means, written by its ``save``) or a
:class:`~slamming.speech.tokenizers.spec.HubertTokenizerSpec` naming model, layer, k-means file and
number of units (``configs/tokenize.yaml``), which is made into a folder on the first run and
checked against that folder on later ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from slamming.speech.tokenizers import HubertTokenizer, HubertTokenizerSpec, load_tokenizer


class UnitExtraction(pl.LightningModule):
    """Encode batches of waveforms into deduplicated units with a saved tokeniser.

    Args:
        tokenizer: folder of a saved tokeniser (``MFCCTokenizer.save`` / ``HubertTokenizer.save``),
            or a HuBERT tokeniser spec (``model``, ``layer``, ``kmeans``, ``num_units``,
            ``trust_pickle``, ``folder``, ...), made into its folder once and reused after that.
        sample_rate: rate of the incoming waveforms (the data module resamples to it).

    ``predict_step`` returns one record per item: ``id``, ``order`` (position of its file in the
    manifest) and ``segment`` (index of the cut of a long recording) for a deterministic merge,
    ``source``, ``units`` (uint16), ``durations`` (int32) and ``seconds``.
    """

    def __init__(self, tokenizer: str | HubertTokenizerSpec, sample_rate: int = 16000) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = tokenizer if isinstance(tokenizer, HubertTokenizerSpec) else None
        if self.spec is not None:
            self.tokenizer = self.spec.materialize()
            self.tokenizer_dir = self.spec.directory
        else:
            self.tokenizer = load_tokenizer(tokenizer)
            self.tokenizer_dir = Path(tokenizer)
        self.sample_rate = int(sample_rate)

    @property
    def identity(self) -> dict[str, Any]:
        """Identity of the tokeniser, recorded in the corpus."""
        return dict(self.tokenizer.identity)

    @property
    def num_units(self) -> int:
        """K of the tokeniser."""
        return int(self.tokenizer.identity["k"])

    def on_predict_start(self) -> None:
        # Loaded on the CPU at construction (the writer needs its identity early); the model and the
        # k-means go to this rank's device for the real work.
        if self.device.type == "cpu":
            return
        if self.spec is not None:  # the spec's model, wherever the folder first recorded it
            self.tokenizer = HubertTokenizer.load(
                self.tokenizer_dir, device=self.device, model=self.spec.model
            )
        else:
            self.tokenizer = load_tokenizer(self.tokenizer_dir, device=self.device)

    @torch.inference_mode()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        waves = batch["waveforms"]
        encoded = self.tokenizer.encode_batch(waves)
        records = []
        for i, (units, durations) in enumerate(encoded):
            records.append(
                {
                    "id": batch["ids"][i],
                    "order": int(batch["orders"][i]),
                    "segment": int(batch["segments"][i]) if "segments" in batch else 0,
                    "source": batch["sources"][i],
                    "units": units,
                    "durations": durations,
                    "seconds": waves[i].numel() / self.sample_rate,
                }
            )
        return records
