#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) as one command on a machine with CUDA and this checkout installed:
#   bash bench/gpu_check.sh            # ~5 minutes on one GPU; paste the report into bench/RESULTS.md
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 540 python bench/gpu_check.py
