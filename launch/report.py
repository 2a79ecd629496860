"""Compare recipes over their evaluated runs: paper-style tables with 95% CIs, deltas, paired tests.

    python launch/report.py runs=runs out=reports/recipes                   # every run under runs/
    python launch/report.py runs=[runs/baseline,runs/pair_caption_v2] baseline=baseline out=reports/x
    python launch/report.py runs=runs out=reports/4shot eval_dir=eval-final-4shot   # a launch/eval.py folder

Each run directory holds eval/results.json and eval/predictions.jsonl (written after training or by
launch/eval.py). Writes report.md, report.csv, report.json (the same as data: launch/readme_results.py
reads it), report.png and report.html (with its pictures in report_files/: curves, bars, KD
histograms, a gallery of answers; it opens from disk) into `out`, and prints the markdown.
Statistics: `mmkd/eval/compare.py` (eval/compare.py in the checkout).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from omegaconf import ListConfig

from mmkd.eval.compare import compare, find_runs, group_averages, markdown, sections, to_json, write_csv
from mmkd.eval.html_report import FILES, write_html
from mmkd.launch._arguments import parse
from mmkd.shards import write_json_atomic

USAGE = "usage: python launch/report.py runs=PATH|[PATH,...] out=DIR [baseline=RECIPE] [eval_dir=NAME]"


def main(argv: list[str] | None = None) -> None:
    """`argv` defaults to the command line: the console script `mmkd-report` calls main()."""
    args = parse(
        argv, USAGE, __doc__, required=["runs", "out"], allowed=["runs", "out", "baseline", "eval_dir"]
    )
    paths = [Path(p) for p in (args.runs if isinstance(args.runs, ListConfig) else [args.runs])]
    try:
        runs = find_runs(paths, args.get("eval_dir", "eval"))
        baseline = args.get("baseline", "baseline")
        rows = compare(runs, baseline)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"report error: {e}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, baseline) + sections(runs)
    (out / "report.md").write_text(text)
    write_csv(rows, out / "report.csv")
    write_json_atomic(out / "report.json", to_json(runs, rows, group_averages(runs, baseline), baseline))
    write_html(runs, rows, baseline, out, f"Recipe comparison (baseline: {baseline})")
    shutil.copyfile(out / FILES / "scores.png", out / "report.png")  # the page's bars, drawn once
    print(text)
    print(f"{len(runs)} runs -> {out / 'report.md'}, report.csv, report.png, report.html")


if __name__ == "__main__":
    main()
