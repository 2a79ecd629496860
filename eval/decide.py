"""Whether a comparison can decide: signal-to-noise, the minimum detectable effect, decision accuracy.

Definitions ("Signal and Noise", Heineman et al., 2025; DataDecide, Magnusson et al., 2025):
- signal: the largest distance between two recipes' mean scores, over the mean of those scores;
- noise: a run's standard deviation over its last checkpoints (eval/noise.py; sample standard
  deviation), averaged over the runs that measured it, over the mean of those checkpoint scores;
- SNR = signal / noise; per benchmark, the metric to read is the one with the highest SNR among those
  with an estimable MDE (below);
- minimum detectable effect (MDE): the difference between two recipes that a two-sided test at 5%
  finds with 80% power, (z_0.975 + z_0.8) x sqrt(2) x the typical standard error of a recipe's mean
  (from its bootstrap CI over seeds and items), so a doc can say "not resolved" with a number;
- decision accuracy: over the pairs of recipes run at two scales (budgets or models), the share
  ordered alike by a benchmark and metric at both; a pair tied at either scale counts one half.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist, median, stdev

from mmkd.eval.report import format_score

Z_TEST = NormalDist().inv_cdf(0.975)  # two-sided 5%
Z_POWER = NormalDist().inv_cdf(0.8)  # 80% power


def signal(means: list[float]) -> float | None:
    """Max pairwise distance between the means over their mean; None for fewer than two or a zero mean."""
    centre = sum(means) / len(means) if means else 0.0
    if len(means) < 2 or centre == 0:
        return None
    return (max(means) - min(means)) / abs(centre)


def relative_noise(checkpoint_scores: list[list[float]]) -> float | None:
    """Mean over runs of the standard deviation across each run's last checkpoints, over the mean of
    those scores; None without a run of two or more checkpoints, or with a zero mean."""
    runs = [s for s in checkpoint_scores if len(s) >= 2]
    centre = sum(sum(s) for s in runs) / sum(len(s) for s in runs) if runs else 0.0
    if not runs or centre == 0:
        return None
    return sum(stdev(s) for s in runs) / len(runs) / abs(centre)


def snr(signal_value: float | None, noise_value: float | None) -> float | None:
    """Signal over noise; infinite where the checkpoints agree exactly and recipes differ."""
    if signal_value is None or noise_value is None:
        return None
    if noise_value == 0:
        return math.inf if signal_value > 0 else None
    return signal_value / noise_value


def minimum_detectable_effect(standard_errors: list[float]) -> float | None:
    """(z_0.975 + z_0.8) x sqrt(2) x the median standard error of the recipes' means; None where the
    recipes' scores did not vary at all (a benchmark at its floor: every item 0), which estimates no
    error rather than a zero one."""
    if not standard_errors or median(standard_errors) == 0:
        return None
    return (Z_TEST + Z_POWER) * math.sqrt(2) * median(standard_errors)


def decision_accuracy(small: dict[str, float], large: dict[str, float]) -> tuple[float | None, int]:
    """(share of the recipe pairs in both that the two scales order alike, number of pairs)."""
    common = sorted(set(small) & set(large))
    agree = []
    for a, b in combinations(common, 2):
        s, g = small[a] - small[b], large[a] - large[b]
        agree.append(0.5 if s == 0 or g == 0 else float((s > 0) == (g > 0)))
    return (sum(agree) / len(agree) if agree else None), len(agree)


@dataclass
class Decision:
    """One (suite, benchmark, metric) of a comparison: can it separate the recipes compared?"""

    suite: str
    benchmark: str
    metric: str
    signal: float | None
    noise: float | None
    snr: float | None
    mde: float | None
    read: bool = False  # the benchmark's metric to read (`mark_read`)


def decisions(rows: list, noise: dict[tuple[str, str, str], list[list[float]]]) -> list[Decision]:
    """Per (suite, benchmark, metric) of the comparison's rows (`compare.Row`): signal over the recipes'
    means, noise from the runs' last checkpoints (`noise`: key -> one score list per run), SNR and the
    MDE; then, per benchmark, the metric to read marked."""
    by_key: dict[tuple[str, str, str], list] = defaultdict(list)
    for r in rows:
        by_key[(r.suite, r.benchmark, r.metric)].append(r)
    out = []
    for key, mine in by_key.items():
        s = signal([r.mean for r in mine])
        n = relative_noise(noise.get(key, []))
        errors = [(r.ci[1] - r.ci[0]) / (2 * Z_TEST) for r in mine]
        out.append(Decision(*key, s, n, snr(s, n), minimum_detectable_effect(errors)))
    return mark_read(out, require_mde=True)


def mark_read(found: list[Decision], require_mde: bool = False) -> list[Decision]:
    """`found` with, per (suite, benchmark), the metric of the highest SNR marked as the one to read;
    with `require_mde`, among those whose MDE is estimable: a metric at its floor (one right answer
    in 3,600 reads as a large relative signal) cannot resolve a difference, whatever its SNR."""
    best: dict[tuple[str, str], Decision] = {}
    for d in found:
        key = (d.suite, d.benchmark)
        eligible = d.snr is not None and (d.mde is not None or not require_mde)
        if eligible and (key not in best or d.snr > best[key].snr):
            best[key] = d
    for d in best.values():
        d.read = True
    return found


@dataclass
class ScaleAgreement:
    """Decision accuracy of one (suite, benchmark, metric) between a small and a large scale."""

    suite: str
    benchmark: str
    metric: str
    pairs: int
    accuracy: float | None


def scale_agreement(small_rows: list, large_rows: list) -> list[ScaleAgreement]:
    """Per (suite, benchmark, metric) in both comparisons, the decision accuracy of the small runs'
    recipe means against the large runs'."""

    def means(rows: list) -> dict[tuple[str, str, str], dict[str, float]]:
        out: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        for r in rows:
            out[(r.suite, r.benchmark, r.metric)][r.recipe] = r.mean
        return out

    small, large = means(small_rows), means(large_rows)
    out = []
    for key in [k for k in small if k in large]:
        accuracy, pairs = decision_accuracy(small[key], large[key])
        out.append(ScaleAgreement(*key, pairs, accuracy))
    return out


DECISION_NAMES = ("benchmark", "metric", "signal", "noise", "SNR", "MDE", "read on")
AGREEMENT_NAMES = ("benchmark", "metric", "recipe pairs", "decision accuracy")


def format_ratio(v: float | None, digits: int) -> str:
    return "—" if v is None else "∞" if math.isinf(v) else f"{v:.{digits}f}"


def decision_cells(d: Decision) -> list[str]:
    """A decision as the tables print it: signal and noise relative to the mean score, the MDE in the
    metric's unit (points of % or as is)."""
    return [
        f"{d.suite}/{d.benchmark}",
        d.metric,
        format_ratio(d.signal, 3),
        format_ratio(d.noise, 3),
        format_ratio(d.snr, 1),
        format_score(d.mde, d.metric),
        "yes" if d.read else "",
    ]


def agreement_cells(a: ScaleAgreement) -> list[str]:
    accuracy = "—" if a.accuracy is None else f"{100 * a.accuracy:.0f}%"
    return [f"{a.suite}/{a.benchmark}", a.metric, str(a.pairs), accuracy]


def _markdown_table(head: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(head)} |", "| --- | --- |" + " ---: |" * (len(head) - 2)] + [
        f"| {' | '.join(r)} |" for r in rows
    ]


def decisions_table(found: list[Decision]) -> str:
    """The decisions as one markdown table (DECISION_NAMES' columns)."""
    return "\n".join(_markdown_table(DECISION_NAMES, [decision_cells(d) for d in found]))


def agreement_table(found: list[ScaleAgreement]) -> str:
    """The decision accuracies as one markdown table (AGREEMENT_NAMES' columns)."""
    return "\n".join(_markdown_table(AGREEMENT_NAMES, [agreement_cells(a) for a in found]))


def agreement_from_report(report: dict) -> list[ScaleAgreement]:
    """The decision accuracies a report.json of two scales holds (launch/report.py large=...)."""
    return [ScaleAgreement(**a) for a in report.get("decision_accuracy", [])]


def from_report(report: dict) -> list[Decision]:
    """The decisions a report.json holds (launch/report.py; an infinite SNR is written "inf")."""
    return [
        Decision(**(d | {"snr": math.inf if d["snr"] == "inf" else d["snr"]}))
        for d in report.get("decisions", [])
    ]


def decisions_markdown(found: list[Decision]) -> str:
    """The comparison's signal, noise, SNR, MDE and metric to read, one row per benchmark and metric."""
    out = [
        "## Signal, noise and the metric to read",
        "",
        "Signal: the largest distance between two recipes' means over their mean; noise: the standard "
        "deviation over each run's last checkpoints (eval.noise_checkpoints) over their mean; SNR: their "
        "ratio (— where runs recorded no noise or one recipe is compared). MDE: the difference a "
        "two-sided 5% test finds with 80% power at these seeds and items. Read each benchmark on the "
        "metric with the highest SNR.",
        "",
        decisions_table(found),
    ]
    return "\n".join(out) + "\n"


def agreement_markdown(found: list[ScaleAgreement], small: str, large: str) -> str:
    """Decision accuracy per benchmark and metric between the runs at two scales."""
    out = [
        f"## Decision accuracy: {small} against {large}",
        "",
        "The share of recipe pairs that both scales order alike (a tie at either counts one half).",
        "",
        agreement_table(found),
    ]
    return "\n".join(out) + "\n"
