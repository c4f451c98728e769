"""``ExtractionWriter``: write extracted units per rank, restartably, then merge them into one corpus.

Every rank buffers the records of ``predict_step`` and writes them in small *parts* — each a complete
unit corpus, written atomically by :class:`~slamming.data.corpus.writer.CorpusWriter` — under
``<output>.parts/``. A part is never written twice and never half-written, so after a crash a rerun
reads the ids already in the parts, tells the data module to skip them, and continues. When every rank
is done, rank 0 merges all parts in manifest order into ``output`` (so the corpus is the same token
for token whatever the number of ranks or interruptions) and removes the parts.

A part is named after the rank that writes it (``rankRRRR-…``, and ``.rankRRRR-….tmp-…`` while it is
being written). At the start a rank removes only the unfinished parts that no rank of this run can
be writing: its own (it has written nothing yet) and those of ranks the run does not have; another
rank's unfinished part is left alone (it may be in progress) until the merge, which runs once every
rank is done and removes the whole parts folder.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from tqdm.auto import tqdm

from slamming.atomic import write_text_atomic
from slamming.data.corpus.format import UnitCorpus
from slamming.data.corpus.writer import CorpusWriter
from slamming.errors import CorpusError

#: The hidden name of a part being written (``CorpusWriter``'s temporary sibling of ``rankRRRR-…``).
_UNFINISHED_PART = re.compile(r"\.rank(?P<rank>\d+)-.*\.tmp-\d+-\d+-[0-9a-f]+")


def _records_of(part: UnitCorpus) -> list[dict[str, Any]]:
    return [json.loads(part.source(i)) for i in range(len(part))]


class ExtractionWriter(BasePredictionWriter):
    """Prediction writer that turns ``UnitExtraction`` records into a unit corpus.

    Args:
        output: the corpus directory to create.
        part_size: records per part file (smaller parts lose less work to a crash).
        overwrite: replace an existing corpus at ``output`` (never anything else).
        progress: show a progress bar on rank 0 with items, audio hours and the real-time factor
            (the rank's own share; with several ranks the total is about world_size times that).
    """

    def __init__(
        self, output: str, part_size: int = 256, overwrite: bool = False, progress: bool = True
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.parts_dir = self.output.with_name(self.output.name + ".parts")
        self.part_size = int(part_size)
        self.overwrite = overwrite
        self._buffer: list[dict[str, Any]] = []
        self._empty: list[tuple[str, str]] = []
        self._identity: dict[str, Any] | None = None
        self._num_units = 0
        self.resumed_ids: set[str] = set()
        self.progress = progress
        self._bar: tqdm | None = None
        self._seconds = 0.0
        self._started = 0.0

    # -- start: what is already done ------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        if (self.output / "meta.json").exists() and not self.overwrite:
            raise CorpusError(f"{self.output} already holds a corpus; pass overwrite=true to replace it")
        self._identity = dict(pl_module.identity)
        self._num_units = int(pl_module.num_units)
        done: set[str] = set()
        self.remove_interrupted_parts(trainer.global_rank, trainer.world_size)
        if self.parts_dir.is_dir():
            for part in sorted(p for p in self.parts_dir.iterdir() if p.is_dir()):
                if part.name.startswith("."):  # being written by another rank, or left by a crash
                    continue
                corpus = UnitCorpus(part)
                if corpus.tokenizer != self._identity:
                    raise CorpusError(
                        f"{part} was made by another tokeniser than this run's; delete {self.parts_dir} to start over"
                    )
                done.update(r["id"] for r in _records_of(corpus))
        self.resumed_ids = done
        if done:
            rank_zero_info(f"resuming extraction into {self.output}: {len(done)} items already done, skipped")
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "skip_ids"):
            datamodule.skip_ids = set(done)

    def remove_interrupted_parts(self, rank: int, world_size: int) -> list[Path]:
        """Remove the unfinished parts that no rank of this run can be writing now.

        An unfinished part is a hidden folder ``.rankRRRR-….tmp-…``. Rank ``rank`` has written nothing
        yet when it calls this, so its own are from an interrupted run, and so are those of ranks
        ``>= world_size``; those of the other ranks may be in progress and are kept (the merge
        removes whatever is left once every rank is done).

        Args:
            rank: this process's global rank.
            world_size: the number of ranks of this run.

        Returns:
            The parts removed.
        """
        if not self.parts_dir.is_dir():
            return []
        removed = []
        for part in sorted(self.parts_dir.iterdir()):
            found = _UNFINISHED_PART.fullmatch(part.name)
            if found and (int(found["rank"]) == rank or int(found["rank"]) >= world_size):
                shutil.rmtree(part, ignore_errors=True)
                removed.append(part)
        return removed

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seconds, self._started = 0.0, time.perf_counter()
        if self.progress and trainer.is_global_zero:
            entries = getattr(trainer.datamodule, "entries", None)
            total = (
                None
                if entries is None
                else max(len(entries) - len(self.resumed_ids), 0) // trainer.world_size
            )
            self._bar = tqdm(total=total, desc="Tokenising", unit="file", dynamic_ncols=True)

    # -- per batch ---------------------------------------------------------------------------------
    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # Audio in which the tokeniser finds no unit (silence, for a phone recogniser) is listed with
        # the bad files, not written: a corpus holds no empty documents.
        for r in prediction:
            if len(r["units"]) == 0:
                self._empty.append((r["source"], f"no unit: the tokeniser found no speech in item {r['id']}"))
        self._buffer.extend(r for r in prediction if len(r["units"]) > 0)
        if self._bar is not None:
            self._seconds += sum(r["seconds"] for r in prediction)
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            self._bar.update(len({r["id"].split("#")[0] for r in prediction}))
            self._bar.set_postfix(hours=f"{self._seconds / 3600:.2f}", rtf=f"{self._seconds / elapsed:.0f}x")
        if len(self._buffer) >= self.part_size:
            self._flush(trainer.global_rank)

    def _flush(self, rank: int) -> None:
        if not self._buffer:
            return
        assert self._identity is not None
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        name = f"rank{rank:04d}-{min(r['order'] for r in self._buffer):012d}-{secrets.token_hex(3)}"
        with CorpusWriter(
            self.parts_dir / name, tokenizer=self._identity, num_units=self._num_units
        ) as writer:
            for r in self._buffer:
                meta = {k: r[k] for k in ("id", "order", "segment", "source", "seconds")}
                writer.add(r["units"], durations=r["durations"], source=json.dumps(meta))
        self._buffer = []

    # -- end: merge --------------------------------------------------------------------------------
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._flush(trainer.global_rank)
        bad = list(getattr(trainer.datamodule, "bad_files", None) or []) + self._empty
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(  # read by rank 0 after the barrier: never half-written
            self.parts_dir / f"bad-rank{trainer.global_rank:04d}.json",
            json.dumps([[str(path), str(reason)] for path, reason in bad]),
        )
        trainer.strategy.barrier("unit-writer-parts")
        if trainer.is_global_zero:
            self.merge()
        trainer.strategy.barrier("unit-writer-merged")

    def merge(self) -> Path:
        """Merge every part into :attr:`output` in manifest order, then remove the parts."""
        entries: list[tuple[int, int, str, UnitCorpus, int]] = []
        bad: dict[str, str] = {}
        for report in sorted(self.parts_dir.glob("bad-rank*.json")):
            bad.update(dict(json.loads(report.read_text())))
        if self.parts_dir.is_dir():
            for part in sorted(
                p for p in self.parts_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
            ):
                corpus = UnitCorpus(part)
                for i, record in enumerate(_records_of(corpus)):
                    entries.append((record["order"], record.get("segment", 0), record["id"], corpus, i))
        if not entries:
            raise CorpusError(f"no audio was tokenised for {self.output}: every input was skipped or bad")
        entries.sort(key=lambda e: (e[0], e[1], e[2]))  # manifest order, then the cuts of a file
        assert self._identity is not None
        seconds = 0.0
        with CorpusWriter(
            self.output, tokenizer=self._identity, num_units=self._num_units, overwrite=self.overwrite
        ) as writer:
            seen: set[str] = set()
            for _, _, item_id, corpus, i in entries:
                if item_id in seen:  # the same item done twice (e.g. a rank restarted): keep one
                    continue
                seen.add(item_id)
                record = json.loads(corpus.source(i))
                seconds += float(record.get("seconds", 0.0))
                writer.add(
                    np.asarray(corpus.document(i)),
                    durations=corpus.durations(i),
                    source=record["source"] if "#" not in item_id else item_id,
                )
        # Beside the corpus files (not part of its checksummed content): what was left out, and why.
        (self.output / "bad_files.json").write_text(json.dumps(bad, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        rank_zero_info(f"wrote {self.output}: {len(seen)} items, {seconds / 3600:.2f} h of audio")
        if bad:
            listed = "; ".join(f"{path}: {reason}" for path, reason in sorted(bad.items()))
            rank_zero_info(
                f"skipped {len(bad)} bad file(s), listed in {self.output / 'bad_files.json'}: {listed}"
            )
        return self.output
