"""Preference triples for DPO: the authors' tokenisation of a triple, batches, and the data module.

Triples come from sources (:mod:`slamming.data.preference.sources`: preference corpora or the
authors' preference jsonl). :func:`preference_example` turns a triple into the two
sequences DPO scores, exactly as slamkit's ``tokenize_row`` does (reference/slam-recipe.md §2.2):
the prompt is ``<S> u…`` without a closing ``<S>``, each completion is ``u… <S>``; the prompt is cut
from the left, the completions from the right. :func:`collate_preferences` pads a batch into the
inputs of :func:`slamming.tasks.preference.concatenated_logprobs`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from slamming.data.corpus.verified import verify_on_node
from slamming.data.preference.corpus import PreferenceCorpus
from slamming.data.preference.sources import JsonlPreferences, PreferenceSource, existing_source, open_source
from slamming.data.sampling.resumable import ResumableDataModule, path_list
from slamming.errors import CorpusError, SlammingError, TokenizerMismatchError
from slamming.speech.tokenizers import check_identity, recorded_identity
from slamming.vocab import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID, UNIT_OFFSET

#: Bumped whenever :func:`preference_example` or :func:`collate_preferences` change what a batch
#: holds, so reference log-probs cached for the old batches are not reused.
COLLATE_VERSION = 1


def preference_example(
    prompt_units: Sequence[int] | np.ndarray,
    chosen_units: Sequence[int] | np.ndarray,
    rejected_units: Sequence[int] | np.ndarray,
    context_length: int,
    max_prompt_length: int,
    index: int = 0,
) -> dict[str, Any]:
    """One triple as the chosen and rejected model inputs (slamkit's ``tokenize_row``).

    The prompt ids ``<S> u+2…`` keep ``<S>`` and the last units when longer than
    ``max_prompt_length``; each completion ``u+2… <S>`` is cut from the right so that prompt plus
    completion fit in ``context_length`` ids (a cut completion loses its closing ``<S>``, as the
    authors'). Of the sequence ``s`` = prompt + completion the model reads ``s[:-1]``, and
    ``labels[t] = s[t + 1]`` for the completion's targets, ``IGNORE_INDEX`` on the prompt.

    Returns:
        ``{"index", "chosen": {"input_ids", "labels"}, "rejected": {...}}``, int64 arrays.
    """
    if not 1 <= max_prompt_length < context_length:
        raise SlammingError(
            f"data.max_prompt_length={max_prompt_length} must be in [1, data.context_length={context_length})"
        )
    units = np.asarray(prompt_units, dtype=np.int64)
    units = units[max(0, len(units) - (max_prompt_length - 1)) :]  # <S> takes one of the prompt's ids
    prompt = np.concatenate([[BOS_ID], units + UNIT_OFFSET])
    room = context_length - len(prompt)
    out: dict[str, Any] = {"index": int(index)}
    for name, side in (("chosen", chosen_units), ("rejected", rejected_units)):
        completion = np.concatenate([np.asarray(side, dtype=np.int64) + UNIT_OFFSET, [EOS_ID]])[:room]
        sequence = np.concatenate([prompt, completion])
        labels = np.full(len(sequence) - 1, IGNORE_INDEX, dtype=np.int64)
        labels[len(prompt) - 1 :] = sequence[len(prompt) :]
        out[name] = {"input_ids": sequence[:-1], "labels": labels}
    return out


def collate_preferences(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Right-pad examples of :func:`preference_example`; each side to its own longest row."""
    batch: dict[str, Any] = {"index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long)}
    for name in ("chosen", "rejected"):
        rows = [it[name] for it in items]
        length = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.as_tensor(r["input_ids"])
            mask[i, :n] = 1
            labels[i, :n] = torch.as_tensor(r["labels"])
        batch[name] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return batch


class PreferenceDataset(Dataset):
    """Examples of one split: its sources concatenated; an example's ``index`` is its split position.

    Items are either a split position (``int``) or ``(epoch, k)`` from a
    :class:`~slamming.data.sampling.resumable.ResumableSampler`,
    which with ``shuffle`` maps to the ``k``-th position of epoch ``epoch``'s seeded permutation (so
    workers holding a copy of the dataset agree on the order).
    """

    def __init__(
        self,
        sources: Sequence[PreferenceSource],
        context_length: int,
        max_prompt_length: int,
        seed: int = 0,
        shuffle: bool = False,
    ) -> None:
        self.sources = list(sources)
        self.starts = np.zeros(len(self.sources) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in self.sources], out=self.starts[1:])
        self.context_length, self.max_prompt_length = int(context_length), int(max_prompt_length)
        self.seed, self.shuffle = int(seed), shuffle

    def __len__(self) -> int:
        return int(self.starts[-1])

    @functools.lru_cache(maxsize=2)  # noqa: B019 - a dataset lives as long as its orders
    def order(self, epoch: int) -> np.ndarray:
        """Split positions in the order of ``epoch``."""
        if not self.shuffle:
            return np.arange(len(self), dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index = int(self.order(int(item[0]))[int(item[1])]) if isinstance(item, tuple) else int(item)
        which = int(np.searchsorted(self.starts, index, side="right")) - 1
        prompt, chosen, rejected = self.sources[which].triple(index - int(self.starts[which]))
        return preference_example(
            prompt, chosen, rejected, self.context_length, self.max_prompt_length, index=index
        )

    def truncation_report(self, split: str) -> str:
        """One line: how many prompts are cut from the left and completions from the right."""
        lengths = np.concatenate([s.lengths() for s in self.sources])
        prompt_ids = np.minimum(lengths[:, 0] + 1, self.max_prompt_length)
        cut_prompts = int((lengths[:, 0] + 1 > self.max_prompt_length).sum())
        cut_completions = int((prompt_ids[:, None] + lengths[:, 1:] + 1 > self.context_length).sum())
        n = len(lengths)
        return (
            f"{split}: {cut_prompts} of {n} prompts "
            f"{'is' if cut_prompts == 1 else 'are'} longer than max_prompt_length={self.max_prompt_length} "
            f"ids and {'is' if cut_prompts == 1 else 'are'} cut from the left; {cut_completions} of {2 * n} "
            f"completions {'is' if cut_completions == 1 else 'are'} cut from the right at the context "
            f"({self.context_length} ids)"
        )


class PreferenceDataModule(ResumableDataModule):
    """Batches of preference triples for DPO, in a seeded, rank-sharded, resumable order.

    Training order: a permutation of all training triples per epoch, from ``(seed, epoch)``; rank
    ``r`` of ``W`` takes every ``W``-th (the tail is dropped so every rank runs the same number of
    steps); the global position (epoch, triples consumed by all ranks) and the world size are
    stored in checkpoints, so a resumed run, on any number of ranks, continues the uninterrupted
    order. Validation: the validation triples in order, sharded the same
    way (with several ranks the last ``< W`` triples are left out, as in training). A batch's
    ``index`` holds each triple's position in its split (the sources concatenated), the key of the
    reference log-probs that :meth:`reference_loader` serves for precomputing.

    Args:
        train: Preference corpus directories and/or the authors' ``.jsonl`` files, concatenated.
        val: The same for validation (optional).
        num_units: K of the tokeniser; needed for ``.jsonl`` sources unless a corpus of the run
            records it, and checked against every corpus.
        context_length: Most ids of prompt plus completion (the model context).
        max_prompt_length: Most prompt ids (``<S>`` included); default ``context_length // 2``.
        batch_size: Triples per micro-batch (per device).
        num_workers: Data-loader worker processes.
        seed: Seed of the training order.
        verify_checksums: Verify every corpus file's sha256 when a split is first opened, on local rank
            0 of each node, when the files changed since their last successful verification
            (:mod:`slamming.data.corpus.verified`).
        pin_memory: Pin batches for faster host-to-GPU copies (only when training on CUDA).
        tokenizer_dir: The saved tokeniser folder that made the units of the ``.jsonl`` sources,
            which do not record it. Its identity is then theirs and is compared in full with the
            corpora's and the model's; without it a ``.jsonl`` source's tokeniser is not known and
            only its K is checked (it takes the identity of the run's corpora, if any).
    """

    collate = collate_preferences
    batch_key = "index"

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        num_units: int | None = None,
        context_length: int = 1024,
        max_prompt_length: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 0,
        verify_checksums: bool = True,
        pin_memory: bool = True,
        tokenizer_dir: str | None = None,
    ) -> None:
        super().__init__()
        self._sources_tokenizer_dir = None if tokenizer_dir is None else Path(tokenizer_dir)
        self.train_paths = path_list(train)
        self.val_paths = path_list(val)
        if not self.train_paths:
            raise SlammingError("data.train: give at least one preference corpus directory or .jsonl file")
        self.context_length = int(context_length)
        self.max_prompt_length = (
            self.context_length // 2 if max_prompt_length is None else int(max_prompt_length)
        )
        if not 1 <= self.max_prompt_length < self.context_length:
            raise SlammingError(
                f"data.max_prompt_length={self.max_prompt_length} must be at least 1 and less than "
                f"data.context_length={self.context_length}, to leave room for the completions"
            )
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.verify_checksums, self.pin_memory = verify_checksums, pin_memory
        self._num_units: int | None = None if num_units is None else int(num_units)
        self._identity: dict[str, Any] | None = None
        self._jsonl_identity: dict[str, Any] | None = None  # named by tokenizer_dir
        self._identity_read = False
        self._sets: dict[str, PreferenceDataset] = {}
        if self._ready_to_open():
            self._read_identity()

    # -- sources -------------------------------------------------------------------------------------
    def _read_identity(self) -> None:
        """Check that every source exists and that all share K and the tokeniser (cheap: no data read)."""
        first: PreferenceCorpus | None = None
        jsonl = None
        for p in self.train_paths + self.val_paths:
            if existing_source(p).suffix == ".jsonl":
                jsonl = jsonl or p
                continue
            corpus = PreferenceCorpus(p)
            for side, units in corpus.sides.items():
                # Each side's meta.json bounds its ids by its own K (checked on open): that K must be
                # the corpus's, which is compared with the model's.
                if units.num_units != corpus.num_units:
                    raise CorpusError(
                        f"{units.path} holds units of K={units.num_units} but {p} records K={corpus.num_units}: "
                        f"the {side} side does not belong to this preference corpus; rebuild it"
                    )
            if self._num_units is not None and corpus.num_units != self._num_units:
                source = f"data.num_units={self._num_units}" if first is None else f"{first.path}"
                raise CorpusError(
                    f"{p} holds units of K={corpus.num_units} but {source} has K={self._num_units}: "
                    "all preference sources of a run must come from the same tokeniser"
                )
            if first is None:
                first, self._num_units = corpus, corpus.num_units
            else:
                check_identity(first.tokenizer, corpus.tokenizer, what=f"{p} (vs {first.path})")
        if jsonl is not None and self._num_units is None:
            raise SlammingError(
                f"data.num_units: give K for the units of {Path(jsonl).name} "
                "(500 for the authors' HuBERT-25 tokeniser)"
            )
        named = self._named_identity()
        if named is not None and first is not None:
            check_identity(
                first.tokenizer,
                named,
                what=f"data.tokenizer_dir {self._sources_tokenizer_dir} (vs {first.path})",
            )
        self._jsonl_identity = named
        self._identity = first.tokenizer if first is not None else named
        self._identity_read = True

    def _named_identity(self) -> dict[str, Any] | None:
        """The identity of ``tokenizer_dir``, checked against K; None when not given."""
        folder = self._sources_tokenizer_dir
        if folder is None:
            return None
        identity = recorded_identity(folder)
        k = identity.get("k")
        if self._num_units is not None and k is not None and k != self._num_units:
            raise TokenizerMismatchError(
                f"data.tokenizer_dir {folder} has k={k} but the preference data has K={self._num_units}: "
                "give the tokeniser folder that made the units"
            )
        return identity

    @property
    def num_units(self) -> int | None:
        """K of the sources' tokeniser (the model's vocabulary is K + 2); None while not known yet."""
        if not self._identity_read and self._ready_to_open():
            self._read_identity()
        return self._num_units

    @property
    def tokenizer(self) -> dict[str, Any] | None:
        """Identity of the tokeniser of the sources: the corpora's, else ``tokenizer_dir``'s; None for
        ``.jsonl``-only runs without ``tokenizer_dir`` (not known) or before building."""
        if not self._identity_read and self._ready_to_open():
            self._read_identity()
        return self._identity

    def _paths(self, split: str) -> list[str]:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        return self.train_paths if split == "train" else self.val_paths

    def _split(self, split: str) -> PreferenceDataset:
        """The dataset of ``split``, opened (and verified) on first use."""
        if split not in self._sets:
            paths = self._paths(split)
            if not paths:
                raise SlammingError(f"data.{split}: no preference sources are configured for this split")
            if not self._identity_read:
                self._read_identity()
            sources = [open_source(p, self._num_units, self._jsonl_identity) for p in paths]
            if self.verify_checksums:
                # A corpus's sides are hashed by local rank 0 of each node, and only when changed since
                # their last verification; other sources verify themselves (a jsonl was read whole).
                sides = [c for s in sources if isinstance(s, PreferenceCorpus) for c in s.sides.values()]
                verify_on_node(sides, local_rank=getattr(self.trainer, "local_rank", 0))
                for source in sources:
                    if not isinstance(source, PreferenceCorpus):
                        source.verify()
            for source in sources:
                if isinstance(source, JsonlPreferences):
                    rank_zero_info(source.summary)
            dataset = PreferenceDataset(
                sources, self.context_length, self.max_prompt_length, self.seed, shuffle=split == "train"
            )
            rank_zero_info(dataset.truncation_report(split))
            self._sets[split] = dataset
        return self._sets[split]

    def num_triples(self, split: str) -> int:
        """Triples of ``"train"`` or ``"val"``."""
        return len(self._split(split))

    def data_fingerprint(self, split: str) -> str:
        """A sha256 naming the batches of ``split``: sources, lengths and the collate version."""
        digest = hashlib.sha256()
        for source in self._split(split).sources:
            digest.update(source.fingerprint.encode())
        digest.update(f"|{self.context_length}|{self.max_prompt_length}|v{COLLATE_VERSION}".encode())
        return digest.hexdigest()

    # -- Lightning hooks -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._split("train")
        if self.val_paths and stage in (None, "fit", "validate"):
            self._split("val")

    def train_dataloader(self) -> DataLoader:
        dataset = self._split("train")
        _, world = self._rank_world()
        if len(dataset) < world:
            raise CorpusError(
                f"{self.train_paths}: {len(dataset)} training triples for {world} ranks; "
                "add data or use fewer devices"
            )
        # The sampler's (epoch, k) items are what PreferenceDataset takes.
        return self._train_loader(dataset)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_paths:
            return []
        return self._val_loader(self._split("val"))

    def reference_loader(self, split: str, batch_size: int) -> DataLoader:
        """Every triple of ``split`` in order, unsharded (for precomputing reference log-probs)."""
        return self._loader(self._split(split), None, int(batch_size))

    def state_dict(self) -> dict[str, Any]:
        triples = len(self._sets["train"]) if "train" in self._sets else None
        return {**self._position_state(), "seed": self.seed, "train_triples": triples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # ``train_triples`` (also in checkpoints made before the world size was saved) is the size of
        # the training order; the base compares it when the training loader is made, since the
        # sources may not be open yet, and restarts the order if the data changed.
        items = state_dict.get("train_triples", state_dict.get("epoch_items"))
        self._load_position({**state_dict, "epoch_items": items})
