#!/usr/bin/env bash
# Set up slamming on a fresh machine: system packages, a virtual environment, the pinned Python set.
# Idempotent: a second run only checks. Used by `make setup` (and so by `make demo`, `make test`, CI).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# System packages: libsndfile1 (fairseq2's audio I/O) and espeak-ng (offline synthetic speech).
missing=()
ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so\.1' || missing+=(libsndfile1)
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

stamp="$VENV/.slamming-installed"
want=$(cat pyproject.toml requirements/lock.txt requirements/dev.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "setup: installing the pinned Python packages into $VENV (about 4 GB of downloads the first time)"
# uv (from PyPI) downloads and unpacks the ~4 GB in parallel: 41 s against ~5 min for pip on a 2-core
# machine (docs/perf-log.md). Where uv cannot be installed, pip does the same job; SLAMMING_PIP=1
# forces pip.
if [ "${SLAMMING_PIP:-0}" != 1 ] && "$VENV/bin/python" -m pip install -q uv==0.13.9 2>/dev/null; then
  install=("$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python")
else
  "$VENV/bin/python" -m pip install -q --upgrade pip
  install=("$VENV/bin/python" -m pip install -q)
fi
"${install[@]}" -r requirements/lock.txt -r requirements/dev.txt
"${install[@]}" --no-deps -e .
"$VENV/bin/python" -m pip check
echo "$want" > "$stamp"
echo "setup: done"
