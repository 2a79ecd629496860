"""A README's results section from a committed recipe comparison, so no number is copied by hand
(the `recipe_comparison` generator of mmkd.eval.doc_tables: `python launch/doc_tables.py`).

Reads `<results>/report.json` (written by launch/report.py) and, where present, `<results>/paper.json`
(the paper's Average rows for the same comparisons). What the section says:
- every benchmark's score per recipe, the mean over seeds with its 95% CI, chance and blind beside;
- each category's average (the paper's Average rows) as a delta to the baseline with its CI, the
  paper's delta beside it and the direction: "same" when the CI excludes 0 on the paper's side,
  "opposite" when it excludes 0 on the other, "not resolved" when it holds 0;
- the per-benchmark differences whose bootstrap p-value (seed variance included) is below 0.05.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmkd.eval.report import CONTINUOUS_METRICS, format_score

ALPHA = 0.05


def _signed(v: float, metric: str) -> str:
    return ("+" if v > 0 else "") + format_score(v, metric)


def _interval(lo: float, hi: float, metric: str, fmt=format_score) -> str:
    return f"[{fmt(lo, metric)}, {fmt(hi, metric)}]"


def _delta(d: float, ci: list[float], metric: str) -> str:
    return f"{_signed(d, metric)} {_interval(*ci, metric, _signed)}"


def _budget(runs: list[dict]) -> str:
    budgets = {(r["budget_samples"], r["budget_tokens"]) for r in runs}
    if len(budgets) > 1:
        return "budgets differ between runs"
    samples, tokens = budgets.pop()
    return (
        f"{tokens:,} tokens each" if tokens else f"{samples:,} samples each" if samples else "no budget saved"
    )


def agreement(paper: float, ci: list[float]) -> str:
    """Whether our CI of a delta points the way the paper's delta (a single run, no CI) does."""
    if ci[0] <= 0 <= ci[1]:
        return "not resolved"
    return "same" if (ci[0] > 0) == (paper > 0) else "opposite"


def paper_deltas(paper: dict, group: str, baseline: str) -> dict[str, tuple[float, str]]:
    """recipe -> (its average minus its table's baseline, the table) for one category."""
    out = {}
    for table, averages in paper.get(group, {}).items():
        for recipe, value in averages.items():
            if recipe != baseline:
                out[recipe] = (value - averages[baseline], table)
    return out


def section(report: dict, paper: dict | None, results: str) -> str:
    """The markdown between the markers (without them)."""
    baseline = report["baseline"]
    primary = [r for r in report["rows"] if r["metric"] not in CONTINUOUS_METRICS]  # each on its own metric
    recipes = list(dict.fromkeys(r["recipe"] for r in primary))
    seeds = sorted({r["seed"] for r in report["runs"]})
    budget = _budget(report["runs"])
    out = [
        f"{len(recipes)} recipes x seeds {', '.join(map(str, seeds))} ({len(report['runs'])} runs, "
        f"{budget}); every benchmark with its p-values, the curves and the answers: "
        f"[{results}/report.md]({results}/report.md) and `{results}/report.html`. "
        "Scores in % (CIDEr-D as is), mean over seeds [95% CI]:",
        "",
        f"| benchmark | {' | '.join(recipes)} | chance | blind |",
        "| --- |" + " ---: |" * (len(recipes) + 2),
    ]
    levels = {(x["suite"], x["benchmark"]): (x["chance"], x["blind"]) for x in report["levels"]}
    rows = {(r["suite"], r["benchmark"], r["recipe"]): r for r in primary}
    for suite, bench in dict.fromkeys((r["suite"], r["benchmark"]) for r in primary):
        cells = []
        for recipe in recipes:
            r = rows.get((suite, bench, recipe))
            cells.append(
                f"{format_score(r['mean'], r['metric'])} {_interval(*r['ci'], r['metric'])}" if r else "—"
            )
        metric = next(r["metric"] for k, r in rows.items() if k[:2] == (suite, bench))
        chance, blind = (format_score(v, metric) for v in levels.get((suite, bench), (None, None)))
        out.append(f"| {bench} | {' | '.join(cells)} | {chance} | {blind} |")
    averages = {(a["group"], a["recipe"]): a for a in report["averages"]}
    groups = list(dict.fromkeys(a["group"] for a in report["averages"]))
    for g in groups:
        cells = [f"{100 * a['mean']:.1f}" if (a := averages.get((g, r))) else "—" for r in recipes]
        out.append(f"| **{g} average** | {' | '.join(cells)} | | |")
    out += [
        "",
        f"Each category's average against {baseline} (Δ in points [95% CI], p with seed variance):",
        "",
    ]
    head = ["recipe"]
    for g in groups:
        head += [f"{g} Δ", "p"] + (["paper Δ", "direction"] if paper else [])
    out += [f"| {' | '.join(head)} |", "| --- |" + " ---: |" * (len(head) - 1)]
    by_paper = {g: paper_deltas(paper or {}, g, baseline) for g in groups}
    for recipe in recipes[1:]:
        cells = [recipe]
        for g in groups:
            a = averages.get((g, recipe))
            if a is None or a["delta"] is None:
                cells += ["—", "—"] + (["—", "—"] if paper else [])
                continue
            cells += [_delta(a["delta"], a["delta_ci"], "accuracy"), f"{a['p_bootstrap']:.3f}"]
            if paper:
                theirs = by_paper[g].get(recipe)
                cells += (
                    [f"{100 * theirs[0]:+.2f} ({theirs[1]})", agreement(theirs[0], a["delta_ci"])]
                    if theirs
                    else ["—", "—"]
                )
        out.append(f"| {' | '.join(cells)} |")
    if paper:
        out += ["", paper["source"]]
    out += ["", f"Per-benchmark differences from {baseline} that hold (p with seed variance < {ALPHA}):", ""]
    for recipe in recipes[1:]:
        held = [
            r
            for r in primary
            if r["recipe"] == recipe and r["p_bootstrap"] is not None and r["p_bootstrap"] < ALPHA
        ]
        said = "; ".join(f"{r['benchmark']} {_delta(r['delta'], r['delta_ci'], r['metric'])}" for r in held)
        out.append(f"- {recipe}: {said or 'none'}")
    return "\n".join(out)


def load(results: Path) -> tuple[dict, dict | None]:
    """report.json and paper.json (None where absent) of a results folder; a missing report is an
    error naming the command that writes it."""
    report = results / "report.json"
    if not report.exists():
        raise FileNotFoundError(f"{report} does not exist: write it with launch/report.py out={results}")
    paper = results / "paper.json"
    return json.loads(report.read_text()), json.loads(paper.read_text()) if paper.exists() else None
