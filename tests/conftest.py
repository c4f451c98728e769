"""Shared fixtures: small real unit corpora and CLI config writing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from slamming.data.corpus.writer import CorpusWriter

#: Identity of the made-up tokeniser of the test corpora.
TEST_IDENTITY = {"kind": "test", "k": 20, "frame_rate": 25, "dedup": True, "settings_hash": "t0"}
TINY_BACKBONE = {
    "class_path": "slamming.models.UnitLMBuilder",
    "init_args": {
        "config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        },
        "rope_theta": 10000.0,
    },
}


def markov_documents(n: int, seed: int, k: int = 20) -> list[np.ndarray]:
    """Documents from a fixed sparse Markov chain over k units, so a model can learn them."""
    rng = np.random.default_rng(seed)
    table = np.random.default_rng(1234).integers(0, k, size=(k, 2))
    docs = []
    for _ in range(n):
        length = int(rng.integers(5, 60))
        u = [int(rng.integers(0, k))]
        for _ in range(length - 1):
            u.append(int(table[u[-1], rng.integers(0, 2)]))
        docs.append(np.asarray(u, dtype=np.int64))
    return docs


def write_corpus(path: Path, docs: list[np.ndarray], identity: dict[str, Any] | None = None) -> Path:
    identity = identity or TEST_IDENTITY
    with CorpusWriter(path, tokenizer=identity, num_units=identity["k"]) as writer:
        for i, d in enumerate(docs):
            writer.add(d, durations=np.ones(len(d), dtype=np.int64), text=f"doc {i}", source=f"doc-{i}.wav")
    return path


@pytest.fixture(scope="session")
def unit_corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return {
        "train": write_corpus(root / "train", markov_documents(400, seed=0)),
        "val": write_corpus(root / "val", markov_documents(60, seed=1)),
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and "class_path" not in value:
            _merge(base[key], value)
        else:
            base[key] = value


def fit_config(tmp_path: Path, unit_corpora: dict[str, Path], **overrides: Any) -> Path:
    """Write a tiny pretraining config and return its path; ``overrides`` are merged into it."""
    cfg: dict[str, Any] = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 12,
            "log_every_n_steps": 1,
            "val_check_interval": 6,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "deterministic": True,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "t"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "save_last": True,
                        "every_n_train_steps": 4,
                        "save_top_k": -1,
                        "filename": "{step}",
                    },
                }
            ],
        },
        "model": {
            "class_path": "slamming.tasks.NextUnitPretraining",
            "init_args": {"backbone": TINY_BACKBONE, "lr": 3e-3, "min_lr": 3e-4, "warmup_ratio": 0.1},
        },
        "data": {
            "class_path": "slamming.data.UnitDataModule",
            "init_args": {
                "train": [str(unit_corpora["train"])],
                "val": [str(unit_corpora["val"])],
                "context_length": 64,
                "batch_size": 4,
            },
        },
        "budget": {"max_gpu_hours": 1.0},
    }
    _merge(cfg, overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def speech_fit_config(root: Path, name: str = "syn", **overrides: Any) -> Path:
    """Write a tiny pretraining config on espeak-ng story speech (MFCC units) and return its path.

    Defaults: 24 + 6 stories, k-means on 12, K = 32, context 64, batch 4, 6 steps, validation every 3;
    the run lands in ``root/runs/<name>/version_N`` and the corpora in ``root/cache``. ``overrides``
    are merged into the config (nested dicts key by key).
    """
    cfg: dict[str, Any] = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 6,
            "log_every_n_steps": 1,
            "val_check_interval": 3,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root / "runs"), "name": name},
            },
        },
        "model": {
            "class_path": "slamming.tasks.NextUnitPretraining",
            "init_args": {"backbone": TINY_BACKBONE},
        },
        "data": {
            "class_path": "slamming.data.SyntheticSpeechDataModule",
            "init_args": {
                "cache_dir": str(root / "cache"),
                "num_train_stories": 24,
                "num_val_stories": 6,
                "fit_stories": 12,
                "num_units": 32,
                "progress": False,
                "context_length": 64,
                "batch_size": 4,
            },
        },
    }
    _merge(cfg, overrides)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


#: Test modules that take minutes, longest first (seconds alone on a 2-core AVX2 CPU, 2026-12-03):
#: `make test` hands whole modules to parallel workers in collection order (``--dist loadscope
#: --no-loadscope-reorder``), so these start first and the short modules fill in around them,
#: rather than a long one starting last and running alone at the end.
LONG_MODULES = (
    "tests/callbacks/test_budget_ledger.py",  # ~230: killed and resumed fits, two-process DDP
    "tests/test_bench.py",  # ~190: the quick benchmarks as subprocesses
    "tests/callbacks/test_benchmark_eval_ddp.py",  # ~105: two-process DDP
    "tests/speech/tokenizers/test_phone_consistency.py",  # ~100: speaks 272 stories, fits MFCC k-means
    "tests/tasks/test_dpo.py",  # ~100
    "tests/tasks/test_extract.py",  # ~85
    "tests/data/test_cache_locks.py",  # ~70: two processes building one cache
    "tests/tasks/test_nonfinite.py",  # ~65
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:  # noqa: ARG001
    rank = {module: i for i, module in enumerate(LONG_MODULES)}
    # A stable sort: the other modules, and the tests within each module, keep their order.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    # Tests share 2 cores; more threads only add contention.
    torch.set_num_threads(1)
