"""Models: Hugging Face causal LMs over units — build, TWIST-initialise, load, export.

- :mod:`.unit_lm`: :class:`UnitLMBuilder` (from a config or a text LM), attention choice, export.
- :mod:`.loading`: one loader for every model source (.ckpt, export, authors' folder, hub id).
- :mod:`.authors`: the authors' (slamkit) checkpoint folders.
"""

from slamming.exports import lazy_exports

_NAMES = {
    "UnitLMBuilder": ".unit_lm",
    "export_hf": ".unit_lm",
    "LoadedUnitLM": ".loading",
    "load_unit_lm": ".loading",
}
__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
