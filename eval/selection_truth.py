"""How well each SCALE stage agrees with the world pool's planted truth (seed 004 on the world).

- image: Spearman correlation of sharpness with blur severity and of the noise estimate with the
  planted noise (over the samples with that defect and the clean ones, severity 0 for clean);
- text: how many of the questions that lost their object the completeness rating flags (<= 2), and
  how many of those it flags were planted (recall, precision);
- tasks: accuracy of the predicted sub-task and the confusion (true -> predicted) of the errors;
- multimodal: the same recall and precision for mismatched images and wrong answers by relevance <= 2;
- selections: the share of each defect in the pool and among the kept samples.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mmkd.data_builders.engine import read_records
from mmkd.shards import open_dataset


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tied = x == v
        r[tied] = r[tied].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _flags(flagged: set[str], planted: set[str]) -> dict[str, float]:
    hit = len(flagged & planted)
    return {
        "planted": len(planted),
        "flagged": len(flagged),
        "recall": hit / len(planted) if planted else float("nan"),
        "precision": hit / len(flagged) if flagged else float("nan"),
    }


def agreement(pool: Path, stages: dict[str, Path], selections: dict[str, Path]) -> dict[str, Any]:
    truth = {s.id: s.metadata for s in open_dataset(pool).iter(images=False)}
    kind = {i: m["defect"]["kind"] for i, m in truth.items()}
    severity = {i: m["defect"].get("severity", 0.0) for i, m in truth.items()}
    uni = {r["id"]: r for r in read_records(stages["unimodal"])}
    out: dict[str, Any] = {}
    image = {}
    for defect, measure in (("blur", "sharpness"), ("noise", "noise_sigma")):
        ids = [i for i in uni if kind[i] in ("none", defect)]
        image[defect] = spearman([uni[i][measure] for i in ids], [severity[i] for i in ids])
    out["image"] = image
    out["text"] = _flags(
        {i for i, r in uni.items() if r["completeness"] <= 2}, {i for i in uni if kind[i] == "incomplete"}
    )
    tasks = {r["id"]: r for r in read_records(stages["tasks"])}
    wrong = Counter(
        f"{truth[i]['subtask']} -> {r['subtask']}"
        for i, r in tasks.items()
        if r["subtask"] != truth[i]["subtask"]
    )
    out["tasks"] = {
        "accuracy": sum(r["subtask"] == truth[i]["subtask"] for i, r in tasks.items()) / len(tasks),
        "confusion": dict(wrong.most_common()),
    }
    mm = {r["id"]: r for r in read_records(stages["multimodal"])}
    out["multimodal"] = _flags(
        {i for i, r in mm.items() if r["relevance"] <= 2},
        {i for i in mm if kind[i] in ("mismatch", "wrong_answer")},
    )
    pool_share = Counter(kind.values())
    out["selections"] = {"pool": {k: v / len(kind) for k, v in sorted(pool_share.items())}}
    for name, path in selections.items():
        kept = Counter(kind[s.id] for s in open_dataset(path).iter(images=False))
        total = sum(kept.values())
        out["selections"][name] = {k: kept.get(k, 0) / total for k in sorted(pool_share)}
    return out


# Columns of the truth table: the pool, then each selection as the doc names it.
COLUMNS = {
    "pool": "pool",
    "scale": "SCALE",
    "scale_random": "random",
    "scale_iqa": "IQA",
    "scale_tqa": "TQA",
    "scale_it": "I+T",
}
ROWS = {
    "none": "clean samples kept",
    "wrong_answer": "wrong answers kept",
    "mismatch": "mismatched images kept",
    "incomplete": "incomplete questions kept",
    "blur": "blurred images kept",
    "noise": "noisy images kept",
    "dark": "dark images kept",
}


def table(truth: dict[str, Any]) -> str:
    """Markdown: each defect's share in the pool and in every selection of `truth` (`agreement`'s
    record), then the stages' agreement with the planted truth."""
    shown = [c for c in COLUMNS if c in truth["selections"]]
    lines = ["| | " + " | ".join(COLUMNS[c] for c in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for key, name in ROWS.items():
        cells = [f"{100 * truth['selections'][c].get(key, 0.0):.1f}%" for c in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text, mm, image = truth["text"], truth["multimodal"], truth["image"]
    lines += [
        "",
        f"Image quality against the planted levels: Spearman {image['blur']:+.2f} (sharpness, blur) and "
        f"{image['noise']:+.2f} (noise estimate, noise). Incomplete questions flagged by completeness <= 2: "
        f"recall {text['recall']:.2f}, precision {text['precision']:.2f} ({text['planted']} planted). "
        f"Mismatched images and wrong answers flagged by relevance <= 2: recall {mm['recall']:.2f}, "
        f"precision {mm['precision']:.2f} ({mm['planted']} planted). Task prediction accuracy "
        f"{truth['tasks']['accuracy']:.2f}.",
    ]
    return "\n".join(lines)
