#!/usr/bin/env bash
# Build the wheels the GPU check installs offline (bench/gpu_wheels.txt) into bench/wheels/, here,
# where PyPI is reachable; the folder then travels with the checkout (it is not committed). Pillow is
# added for CPython 3.11-3.13 in case the GPU machine lacks it (torch's CUDA wheels do not bring it).
set -euo pipefail
cd "$(dirname "$0")"
rm -rf wheels.tmp && mkdir wheels.tmp
pip wheel --quiet --no-deps --wheel-dir wheels.tmp -r gpu_wheels.txt setuptools==84.2.1
for py in 3.11 3.12 3.13; do
  pip download --quiet --no-deps --only-binary=:all: --python-version "$py" \
    --platform manylinux_2_28_x86_64 --dest wheels.tmp pillow==13.0.0
done
rm -rf wheels && mv wheels.tmp wheels
du -sh wheels && ls wheels
