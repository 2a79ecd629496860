#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) as one command on a machine with CUDA PyTorch, transformers and
# peft but no internet: installs this checkout and bench/wheels/ (made by bench/gpu_wheels.sh) offline,
# without touching torch, then runs every part within 8 minutes; the report goes to $OUT/gpu_check.md
# (or stdout) line by line, so a cut-short run still reports what it measured.
#   bash bench/gpu_check.sh                 # all parts; or: bash bench/gpu_check.sh --parts dense
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -d bench/wheels ]]; then
  pip install --quiet --no-index --find-links bench/wheels -r bench/gpu_wheels.txt "pillow>=10.1"
fi
pip install --quiet --no-index --find-links bench/wheels --no-deps .
timeout 470 python bench/gpu_check.py "$@"
