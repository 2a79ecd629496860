"""Seconds of the README's smoke command (`launch/train.py recipe=baseline model=micro train=smoke`)
on a fresh data root, the way a new install meets it: the first run builds the smoke world (its own,
small), trains 16 steps and evaluates; the second finds the world built.

    python bench/smoke_run.py [--runs 2] [--json PATH]
    python bench/smoke_run.py --json bench/results/smoke_run.json   # the record bench/RESULTS.md shows

Each run is a subprocess with its own interpreter start, as a user's command is; nothing is cached
between invocations of this script (a temporary data root each time).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import write_record

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["launch/train.py", "recipe=baseline", "model=micro", "train=smoke"]


def timed_run(data_root: Path, run_dir: Path) -> float:
    """Wall seconds of one smoke command, checked to have written its evaluation."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *COMMAND, f"data.root={data_root}", f"run_dir={run_dir}"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    if not (run_dir / "eval" / "results.json").exists():
        raise SystemExit(f"smoke run {run_dir} wrote no eval/results.json")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs in a row on the same data root (>= 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs={args.runs}: must be >= 1")
    with tempfile.TemporaryDirectory(prefix="mmkd-smoke-") as tmp:
        seconds = [timed_run(Path(tmp) / "data", Path(tmp) / f"run{i}") for i in range(args.runs)]
    print(f"command: python {' '.join(COMMAND)}")
    for i, s in enumerate(seconds):
        print(f"run {i + 1} ({'builds the smoke world' if i == 0 else 'world built'}): {s:.1f} s")
    if args.json:
        write_record(args.json, {"command": "python " + " ".join(COMMAND), "seconds": seconds})


if __name__ == "__main__":
    main()
