"""One rank of a 2-process gloo group calling ``verify_on_node``, for tests/data/pretrain/test_verified_corpus.py.

Each phase names, per rank, the corpus that rank opens and the local rank it reports (``0`` on both
ranks stands for two nodes of one rank each); the rank writes what each phase gave into ``OUT``::

    python tests/data/pretrain/verified_ddp_script.py RANK PORT OUT PHASES_JSON

``PHASES_JSON`` is a list of ``[[corpus of rank 0, local rank], [corpus of rank 1, local rank]]``;
``OUT`` gets a list of ``{"hashed": n}`` or ``{"error": class name, "message": ...}``, one per phase.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any


def main(rank: int, port: int, out: str, phases: list[list[list[Any]]]) -> None:
    """Join the group, run every phase, write the outcomes."""
    import torch.distributed as dist

    from slamming.data.corpus.format import UnitCorpus
    from slamming.data.corpus.verified import verify_on_node

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=120)
    )
    results: list[dict[str, Any]] = []
    for phase in phases:
        corpus, local_rank = phase[rank]
        try:
            results.append({"hashed": verify_on_node([UnitCorpus(corpus)], local_rank=local_rank)})
        except Exception as e:  # recorded for the test to compare across ranks
            results.append({"error": type(e).__name__, "message": str(e)})
    dist.destroy_process_group()
    with open(out, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))
