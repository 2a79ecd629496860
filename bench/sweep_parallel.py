"""A local sweep's jobs side by side against one after the other, on the same runs.

    python bench/sweep_parallel.py                    # two seeds of the tiny model, 300 steps each
    python bench/sweep_parallel.py --jobs 2 --steps 100
    python bench/sweep_parallel.py --data-root data --json bench/results/sweep_parallel.json   # a built world

Sequential: Hydra's basic launcher, each run with every core (`train.threads` = cores). Parallel:
`hydra/launcher=local_parallel` (joblib), `--jobs` runs at once with cores / jobs threads each and no
loader workers. Same seeds, steps and data (a world and its foundations built before either is
timed: in a temporary folder, or found built under `--data-root`); evaluation off. Prints both wall
times and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import write_record

REPO = Path(__file__).resolve().parents[1]


def sweep(runs: Path, data: Path, seeds: str, steps: int, launcher: list[str], threads: int) -> float:
    """Wall seconds of one multirun."""
    shutil.rmtree(runs, ignore_errors=True)
    cmd = [
        sys.executable, str(REPO / "launch/train.py"), "-m", *launcher, "recipe=baseline", "model=tiny",
        f"seed={seeds}", f"train.budget_samples={32 * steps}", "eval.after_train=false",
        f"train.threads={threads}", f"data.root={data}", f"hydra.sweep.dir={runs}",
        f"run_dir={runs}/${{recipe.name}}/seed${{seed}}",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=runs.parent)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--data-root", type=Path, help="a data root holding the built world (default: a new one)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    seeds = ",".join(str(s) for s in range(args.jobs))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data_root.resolve() if args.data_root else tmp / "data"
        sweep(tmp / "warm", data, "0", 1, [], cores)  # builds the world: not part of either figure
        sequential = sweep(tmp / "seq", data, seeds, args.steps, [], cores)
        one_each = [
            "hydra/launcher=local_parallel",
            f"hydra.launcher.n_jobs={args.jobs}",
            "data.num_workers=0",
        ]
        parallel = sweep(tmp / "par", data, seeds, args.steps, one_each, max(1, cores // args.jobs))
    print(f"{args.jobs} runs of {args.steps} steps (tiny model), {cores} cores")
    print(f"one after the other, {cores} threads each: {sequential:.0f} s")
    print(f"side by side, {max(1, cores // args.jobs)} thread(s) each: {parallel:.0f} s")
    print(f"ratio: {sequential / parallel:.2f}x")
    if args.json:
        figures = {"jobs": args.jobs, "steps": args.steps, "sequential_s": sequential, "parallel_s": parallel}
        write_record(args.json, {"command": "python bench/sweep_parallel.py", **figures})


if __name__ == "__main__":
    main()
