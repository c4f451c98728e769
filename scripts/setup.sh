#!/usr/bin/env bash
# Set up slamming on a fresh machine: system packages, a virtual environment, the pinned Python set.
# Idempotent: a second run only checks. Used by `make setup` (and so by `make test`, CI) and by
# `make demo` as `setup.sh --runtime`: the packages slamming runs on (requirements/lock.txt), without
# the development ones (requirements/dev.txt: test tools, scikit-learn, scipy, matplotlib, Jupyter,
# Piper), which transformers, torchmetrics and Lightning import whenever they are installed — about
# a third of every `slamming` command's start-up on a slow CPU (docs/perf-log.md, 2026-12-03 15:46).
set -euo pipefail
level=dev
case "${1:-}" in
  "") ;;
  --runtime) level=runtime ;;
  *) echo "setup: unknown option ${1}; use no option (everything, for tests) or --runtime (what slamming runs on)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# System packages: libsndfile1 (fairseq2's audio I/O) and espeak-ng (offline synthetic speech).
missing=()
# grep reads all of ldconfig's output (no -q): under pipefail, a grep that stops at the first match
# can leave ldconfig to die of SIGPIPE, and the library would look missing.
ldconfig -p 2>/dev/null | grep 'libsndfile\.so\.1' >/dev/null || missing+=(libsndfile1)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${missing[*]}. Install them first, e.g. 'sudo apt-get install ${missing[*]}' (Debian/Ubuntu) or 'brew install libsndfile espeak-ng' (macOS)." >&2
    exit 1
  fi
fi

# The code uses Python 3.11 features (datetime.UTC); say so before installing anything into a venv.
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: slamming needs Python >= 3.11; $PYTHON is $("$PYTHON" -V 2>&1). Set PYTHON=python3.11 (or newer) and rerun." >&2
  exit 1
fi

# The stamp records what was installed: "runtime <hash>" or "dev <hash>"; a dev set serves a runtime
# request too.
stamp="$VENV/.slamming-installed"
runtime_hash=$(cat pyproject.toml requirements/lock.txt | sha256sum | cut -c1-16)
dev_hash=$(cat pyproject.toml requirements/lock.txt requirements/dev.txt | sha256sum | cut -c1-16)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" = "dev $dev_hash" ] || { [ $level = runtime ] && [ "$have" = "runtime $runtime_hash" ]; }; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
requirements=(-r requirements/lock.txt)
[ $level = dev ] && requirements+=(-r requirements/dev.txt)
echo "setup: installing the pinned Python packages ($level) into $VENV (about 4 GB of downloads the first time)"
# uv (from PyPI) downloads and unpacks the ~4 GB in parallel: 41 s against ~5 min for pip on a 2-core
# machine (docs/perf-log.md). Where uv cannot be installed, pip does the same job; SLAMMING_PIP=1
# forces pip.
if [ "${SLAMMING_PIP:-0}" != 1 ] && "$VENV/bin/python" -m pip install -q uv==0.13.9 2>/dev/null; then
  install=("$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python")
else
  "$VENV/bin/python" -m pip install -q --upgrade pip
  install=("$VENV/bin/python" -m pip install -q)
fi
"${install[@]}" "${requirements[@]}"
"${install[@]}" --no-deps -e .
"$VENV/bin/python" -m pip check
if [ $level = dev ]; then echo "dev $dev_hash" > "$stamp"; else echo "runtime $runtime_hash" > "$stamp"; fi
echo "setup: done"
