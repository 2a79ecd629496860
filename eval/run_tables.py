"""Tables of world runs for the docs, from their committed eval/results.json and eval/noise.json
records (mmkd.eval.doc_tables writes them into the docs): one column per run, or per arm of seeds with
the mean and a t-interval over seeds.
"""

from __future__ import annotations

from typing import Any

from mmkd.eval.decide import Decision, format_ratio, mark_read, relative_noise, signal, snr
from mmkd.eval.report import format_score as _fmt


def _floors(result: dict[str, Any]) -> str:
    return f"{_fmt(result.get('chance'), result['metric'])} | {_fmt(result.get('blind'), result['metric'])}"


def runs_table(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown: each world benchmark's score ± its 95% CI over items in each run ({label:
    eval/results.json}), the fact-recall probe, and the first run's chance and blind scores."""
    first = next(iter(runs.values()))["suites"]["world"]
    lines = [
        "| benchmark | " + " | ".join(runs) + " | chance | blind |",
        "| --- |" + " ---: |" * (len(runs) + 2),
    ]
    for bench in sorted(first):
        cells = []
        for result in runs.values():
            r = result["suites"]["world"][bench]
            cells.append(f"{_fmt(r['score'], r['metric'])} ± {_fmt(r['ci95'], r['metric'])}")
        lines.append(f"| {bench} | " + " | ".join(cells) + f" | {_floors(first[bench])} |")
    return "\n".join(lines + _recall_row([[r] for r in runs.values()]))


# Two-sided 95% Student t quantiles by degrees of freedom (seeds - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def _over_seeds(values: list[float], metric: str) -> str:
    """Mean [95% t-interval over seeds] of one score over an arm's seeds (two or more)."""
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    half = T95[len(values) - 1] * sd / len(values) ** 0.5
    return f"{_fmt(mean, metric)} [{_fmt(mean - half, metric)}, {_fmt(mean + half, metric)}]"


def _header(arms: dict[str, list], first: str, last: list[str]) -> list[str]:
    if min(len(runs) for runs in arms.values()) < 2:
        raise ValueError("an interval over seeds needs two seeds or more in every arm")
    names = [f"{a} ({len(r)} seeds)" for a, r in arms.items()]
    return [f"| {' | '.join([first, *names, *last])} |", "| --- |" + " ---: |" * (len(arms) + len(last))]


def seeds_table(arms: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: each world benchmark's mean over seeds [95% t-interval over seeds] in each arm
    ({label: its seeds' eval/results.json}, two or more each), the probe's mean, chance and blind."""
    lines = _header(arms, "benchmark", ["chance", "blind"])
    first = next(iter(arms.values()))[0]["suites"]["world"]
    for bench in sorted(first):
        metric = first[bench]["metric"]
        cells = [
            _over_seeds([r["suites"]["world"][bench]["score"] for r in runs], metric)
            for runs in arms.values()
        ]
        lines.append(f"| {bench} | " + " | ".join(cells) + f" | {_floors(first[bench])} |")
    return "\n".join(lines + _recall_row(list(arms.values())))


def continuous_seeds_table(arms: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: each world benchmark's continuous scores (eval/continuous.py) as `seeds_table` shows
    its own metric, with p_correct's chance; the arms' runs must all have them."""
    lines = _header(arms, "benchmark (continuous score)", ["chance"])
    first = next(iter(arms.values()))[0]["suites"]["world"]
    for bench in sorted(first):
        for metric, c in first[bench]["continuous"].items():
            cells = [
                _over_seeds(
                    [r["suites"]["world"][bench]["continuous"][metric]["score"] for r in runs], metric
                )
                for runs in arms.values()
            ]
            lines.append(
                f"| {bench} ({metric}) | " + " | ".join(cells) + f" | {_fmt(c.get('chance'), metric)} |"
            )
    return "\n".join(lines)


def snr_table(arms: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: per world benchmark and metric, the arms' within-run noise ({label: its seeds'
    eval/noise.json}), the signal between the arms' means at the last checkpoint and their SNR
    (eval/decide.py's definitions), and which metric of each benchmark has the highest SNR."""
    lines = _header(arms, "benchmark (metric)", ["signal", "SNR", "read on"])
    lines[0] = lines[0].replace(" seeds)", " seeds): noise")
    first = next(iter(arms.values()))[0]["scores"]["world"]
    rows = []
    for bench in sorted(first):
        for metric in first[bench]:
            lists = [[r["scores"]["world"][bench][metric] for r in runs] for runs in arms.values()]
            s = signal([sum(x[-1] for x in arm) / len(arm) for arm in lists])
            pooled = relative_noise([x for arm in lists for x in arm])
            decision = Decision("world", bench, metric, s, pooled, snr(s, pooled), None)
            rows.append(([relative_noise(x) for x in lists], decision))
    mark_read([d for _, d in rows])
    for noises, d in rows:
        cells = [format_ratio(n, 3) for n in noises] + [format_ratio(d.signal, 3), format_ratio(d.snr, 1)]
        lines.append(
            f"| {d.benchmark} ({d.metric}) | " + " | ".join([*cells, "yes" if d.read else ""]) + " |"
        )
    return "\n".join(lines)


def _recall_row(arms: list[list[dict[str, Any]]]) -> list[str]:
    """The fact-recall probe's mean per arm, where every run has it."""
    if not all(r.get("probes") for runs in arms for r in runs):
        return []
    recall = [[r["probes"]["fact_recall"] for r in runs] for runs in arms]
    cells = " | ".join(f"{100 * sum(x['fact_recall'] for x in v) / len(v):.1f}" for v in recall)
    return [f"| fact recall (cloze probe) | {cells} | {100 * recall[0][0]['fact_recall_chance']:.1f} | — |"]
