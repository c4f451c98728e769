"""Callbacks: the compute budget, throughput/MFU logging, in-training evaluation, unit writing.

- :class:`ComputeBudget` (:mod:`.budget`): GPU-hour and token budgets that stop every rank together.
- :func:`schedule_horizon` (:mod:`.schedule_sizing`): the step where a budget-sized LR schedule ends.
- :class:`Throughput` (:mod:`.throughput`): tokens/s and MFU, and the summary line at the end of fit.
- :class:`BenchmarkEvaluation` (:mod:`.benchmark_eval`): pair benchmarks scored during training.
- :class:`ExtractionWriter` (:mod:`.extraction_writer`): ``slamming predict`` extraction into a unit corpus.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "ComputeBudget": ".budget",
    "schedule_horizon": ".schedule_sizing",
    "Throughput": ".throughput",
    "BenchmarkEvaluation": ".benchmark_eval",
    "ExtractionWriter": ".extraction_writer",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
