"""Compare recipes over their evaluated runs: paper-style tables with 95% CIs, deltas, paired tests.

    python launch/report.py runs=runs out=reports/recipes                   # every run under runs/
    python launch/report.py runs=[runs/baseline,runs/pair_caption_v2] baseline=baseline out=reports/x
    python launch/report.py runs=runs out=reports/4shot eval_dir=eval-final-4shot   # a launch/eval.py folder
    python launch/report.py runs=runs/quarter out=reports/scales large=runs/full   # + decision accuracy

Each run directory holds eval/results.json and eval/predictions.jsonl (written after training or by
launch/eval.py). Every benchmark is reported on its own metric and its continuous scores, with each
one's signal, noise (runs evaluated with eval.noise_checkpoints), SNR, minimum detectable effect and
the metric to read; with `large`, runs of the same recipes at a larger budget or model, also the
decision accuracy of `runs` against them. Writes report.md, report.csv, report.json (the same as
data: launch/doc_tables.py reads it), report.png and report.html (with its pictures in
report_files/: curves, bars, KD histograms, a gallery of answers; it opens from disk) into `out`, and
prints the markdown. Statistics: `eval/compare.py` and `eval/decide.py` (eval/ in the
checkout).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from omegaconf import ListConfig

from mmkd.eval.compare import (
    compare,
    find_runs,
    group_averages,
    markdown,
    noise_by_key,
    sections,
    to_json,
    write_csv,
)
from mmkd.eval.decide import agreement_markdown, decisions, decisions_markdown, scale_agreement
from mmkd.eval.html_report import FILES, write_html
from mmkd.launch._arguments import parse
from mmkd.shards import write_json_atomic

USAGE = (
    "usage: python launch/report.py runs=PATH|[PATH,...] out=DIR [baseline=RECIPE] [eval_dir=NAME] "
    "[large=PATH|[PATH,...]]"
)


def main(argv: list[str] | None = None) -> None:
    """`argv` defaults to the command line: the console script `mmkd-report` calls main()."""
    allowed = ["runs", "out", "baseline", "eval_dir", "large"]
    args = parse(argv, USAGE, __doc__, required=["runs", "out"], allowed=allowed)
    eval_dir, baseline = args.get("eval_dir", "eval"), args.get("baseline", "baseline")
    agreement = []
    try:
        runs = find_runs(_paths(args.runs), eval_dir)
        rows = compare(runs, baseline)
        if "large" in args:
            large_runs = find_runs(_paths(args.large), eval_dir)
            agreement = scale_agreement(rows, compare(large_runs, baseline))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"report error: {e}")
    found = decisions(rows, noise_by_key(runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [markdown(rows, baseline), decisions_markdown(found)]
    if agreement:
        parts.append(agreement_markdown(agreement, f"runs={args.runs}", f"large={args.large}"))
    text = "\n".join([*parts, sections(runs)])
    (out / "report.md").write_text(text)
    write_csv(rows, out / "report.csv")
    summary = to_json(runs, rows, group_averages(runs, baseline), baseline, found, agreement)
    write_json_atomic(out / "report.json", summary)
    write_html(runs, rows, baseline, out, f"Recipe comparison (baseline: {baseline})", found, agreement)
    shutil.copyfile(out / FILES / "scores.png", out / "report.png")  # the page's bars, drawn once
    print(text)
    print(f"{len(runs)} runs -> {out / 'report.md'}, report.csv, report.png, report.html")


def _paths(value: str | ListConfig) -> list[Path]:
    return [Path(p) for p in (value if isinstance(value, ListConfig) else [value])]


if __name__ == "__main__":
    main()
