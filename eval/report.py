"""The benchmark table of one run: score with its 95% CI beside chance and the blind baseline."""

from __future__ import annotations

from typing import Any

# Metrics not on a [0, 1] scale: printed as they are and left out of averages. CIDEr-D, the
# discrete model's prompt gain (nats per visual code, eval/image_generation.py) and the continuous
# scores' negative log-likelihoods (eval/continuous.py).
UNBOUNDED_METRICS = frozenset({"cider", "prompt_gain", "nll_token", "bits_per_byte"})
# The continuous scores beside a benchmark's own metric (eval/continuous.py); never averaged with it.
CONTINUOUS_METRICS = frozenset({"p_correct", "nll_token", "bits_per_byte"})


def format_score(v: float | None, metric: str) -> str:
    """A score as the tables print it: unbounded metrics as they are, everything else in %; None as
    a dash."""
    if v is None:
        return "—"
    return f"{v:.3f}" if metric in UNBOUNDED_METRICS else f"{100 * v:.1f}"


def markdown_table(results: dict[str, dict[str, Any]], title: str) -> str:
    """One row per ability. 'beats both' means the CI's lower end is above chance and blind."""
    lines = [
        f"### {title}",
        "",
        "| ability | metric | n | score ± 95% CI | chance | blind | beats both |",
        "| --- | --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    for ability, r in results.items():
        m = r["metric"]
        ci = format_score(r["ci95"], m)
        if r["blind"] is None:  # custom suites: no training prior to be blind with
            beats = "—"
        else:
            beats = "yes" if r["score"] - r["ci95"] > max(r["blind"], r["chance"] or 0.0) else "no"
        score, chance, blind = (format_score(r[k], m) for k in ("score", "chance", "blind"))
        lines.append(f"| {ability} | {m} | {r['n']} | {score} ± {ci} | {chance} | {blind} | {beats} |")
        for name, c in r.get("continuous", {}).items():
            score, ci, chance = (format_score(c.get(k), name) for k in ("score", "ci95", "chance"))
            lines.append(f"| &nbsp;&nbsp;{ability} | {name} | | {score} ± {ci} | {chance} | | |")
        for name, v in r.get("breakdown", {}).items():
            lines.append(f"| &nbsp;&nbsp;{ability}/{name} | {m} | | {format_score(v, m)} | | | |")
        if "cider_coco" in r:
            lines.append(f"| &nbsp;&nbsp;{ability} (pycocoevalcap CIDEr) | | | {r['cider_coco']:.3f} | | | |")
        if "skipped" in r:
            lines.append(f"| &nbsp;&nbsp;{ability}: skipped, {r['skipped']} | | | | | | |")
        for name, v in r.get("official", {}).items():
            lines.append(f"| &nbsp;&nbsp;{ability} {name} (VLMEvalKit's score) | | | {v:.2f} | | | |")
        for split, v in r.get("pope", {}).items():
            label = f"F1 (yes {100 * v['yes_ratio']:.0f}%)"
            lines.append(f"| &nbsp;&nbsp;POPE {split} | {label} | | {format_score(v['f1'], m)} | | | |")
    lines.append("")
    lines.append(
        "Accuracy and exact match in %, captioning in CIDEr-D. Blind: the most frequent training "
        "answer for the question's type, without looking at the image. Continuous scores under each "
        "ability: p_correct, the probability on the correct option normalised over the options (%); "
        "nll_token (nats per token) and bits_per_byte of the correct answer or the reference captions, "
        "lower is better."
    )
    return "\n".join(lines) + "\n"
