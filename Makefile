# slamming: `make demo` sets up and trains the embedded default; `make test` sets up and tests.
VENV ?= .venv
BIN := $(VENV)/bin
export VENV

.PHONY: setup demo test test-slow lint bench gpu-check gpu-wheels clean-demo

setup:
	@bash scripts/setup.sh

# Each stage's wall-clock seconds go to runs/demo-stages.tsv; the report prints where the minutes went.
STAGE := bash scripts/stage.sh
demo:
	@mkdir -p runs && rm -f runs/demo-stages.tsv
	@$(STAGE) setup bash scripts/setup.sh --runtime
	$(STAGE) pretraining $(BIN)/slamming fit --config configs/tiny/pretrain.yaml
	$(STAGE) dpo $(BIN)/slamming fit --config configs/tiny/dpo.yaml
	$(STAGE) "evaluation (pretrained)" $(BIN)/slamming test --config configs/tiny/eval.yaml
	$(STAGE) "evaluation (after DPO)" $(BIN)/slamming test --config configs/tiny/eval.yaml --model.init_args.model 'runs/tiny-dpo/version_*/hf_model'
	$(BIN)/python scripts/demo_report.py

# Tests run in one process per core (pytest-xdist, at most 4; the tests themselves use one torch thread
# each), a test module on one worker so that its module fixtures (a trained recogniser, a spoken corpus)
# are built once, the longest modules first (tests/conftest.py, LONG_MODULES).
# `make test PYTEST_WORKERS=0` runs them all in one process.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder

test-slow: setup
	@bash scripts/setup_slow.sh
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_layout.py src

bench: setup
	$(BIN)/python bench/run.py

# Runs on a GPU machine with its own torch and transformers: the rest of what `slamming fit` needs
# comes from .gpu-wheels (made here by `make gpu-wheels`, carried there), installed when missing.
GPU_WHEELS := lightning==2.6.6 lightning-utilities==0.15.3 torchmetrics==1.9.0 jsonargparse==4.53.0 \
	docstring-parser typeshed-client tensorboardX protobuf soundfile
gpu-wheels: setup
	$(BIN)/pip download --no-deps --only-binary :all: --dest .gpu-wheels $(GPU_WHEELS)

gpu-check:
	python3 scripts/gpu_check.py

clean-demo:
	rm -rf runs/tiny runs/tiny-dpo runs/tiny-eval data/synthetic data/preference data/reference data/benchmarks/embedded data/benchmarks/units
