"""Tasks: one LightningModule per objective, with its pure losses and schedules.

- :class:`NextUnitPretraining` (:mod:`.pretrain`), :class:`DPOAlignment` (:mod:`.dpo`),
  :class:`PairEvaluation` (:mod:`.evaluate`), :class:`UnitGeneration` (:mod:`.generate`),
  :class:`UnitExtraction` (:mod:`.extract`); the shared optimiser/schedule/budget plumbing of the
  training stages is :class:`UnitLMStage` (:mod:`.stage`).
- :mod:`.losses`: next-unit and DPO losses; :mod:`.schedules`: learning-rate schedules;
  :mod:`.preference`: the concatenated chosen/rejected forward; :mod:`.reference`: the DPO reference
  log-prob cache.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "NextUnitPretraining": ".pretrain",
    "DPOAlignment": ".dpo",
    "PairEvaluation": ".evaluate",
    "UnitGeneration": ".generate",
    "UnitExtraction": ".extract",
    "UnitLMStage": ".stage",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
