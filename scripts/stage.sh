#!/usr/bin/env bash
# Run one stage of `make demo` and add its wall-clock seconds to runs/demo-stages.tsv, which
# scripts/demo_report.py prints as "where the minutes went". Usage: stage.sh NAME COMMAND [ARGS...]
set -euo pipefail
name=$1
shift
start=$(date +%s)
"$@"
mkdir -p runs
printf '%s\t%s\n' "$name" "$(($(date +%s) - start))" >>runs/demo-stages.tsv
