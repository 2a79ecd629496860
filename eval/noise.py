"""Noise within a run: how much a benchmark's score moves between a run's last checkpoints.

Two recipes' scores differ by training noise as well as by their data; a benchmark whose score jumps
between neighbouring checkpoints of one run cannot rank recipes that differ by less ("Signal and
Noise", Heineman et al., 2025). `eval.noise_checkpoints=k` evaluates the k - 1 checkpoints before the
evaluated one in its curriculum stage (an instruction stage's scores are not pre-training's), their
results under `<eval dir>/noise/<checkpoint>/` (reused on a rerun), and writes
`<eval dir>/noise.json`: every (suite, benchmark, metric)'s score at each of the k checkpoints, the
continuous scores included. `mmkd.eval.decide` turns it into a relative standard deviation and SNR.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmkd.shards import write_json_atomic

NOISE_FILE = "noise.json"


def checkpoint_scores(results: dict) -> dict[tuple[str, str, str], float]:
    """(suite, benchmark, metric) -> score of one evaluation's results.json, continuous scores included."""
    out = {}
    for suite, benchmarks in results.get("suites", {}).items():
        for name, r in benchmarks.items():
            if not isinstance(r, dict) or not isinstance(r.get("score"), int | float) or "metric" not in r:
                continue
            out[(suite, name, r["metric"])] = float(r["score"])
            for metric, c in (r.get("continuous") or {}).items():
                out[(suite, name, metric)] = float(c["score"])
    return out


def write_noise(path: Path, checkpoints: list[str], steps: list[int], results: list[dict]) -> dict:
    """`noise.json` from the evaluations of `checkpoints` (oldest first): the scores every one of them has."""
    per_checkpoint = [checkpoint_scores(r) for r in results]
    keys = sorted(set.intersection(*(set(s) for s in per_checkpoint)))
    scores: dict[str, dict[str, dict[str, list[float]]]] = {}
    for suite, name, metric in keys:
        scores.setdefault(suite, {}).setdefault(name, {})[metric] = [
            s[(suite, name, metric)] for s in per_checkpoint
        ]
    noise = {"checkpoints": checkpoints, "steps": steps, "scores": scores}
    write_json_atomic(path, noise)
    return noise


def read_noise(eval_dir: Path) -> dict[tuple[str, str, str], list[float]]:
    """(suite, benchmark, metric) -> scores at the run's last checkpoints, from `eval_dir/noise.json`;
    empty when the run was evaluated without `eval.noise_checkpoints`. A malformed file is an error
    naming it."""
    path = eval_dir / NOISE_FILE
    if not path.exists():
        return {}
    try:
        scores = json.loads(path.read_text())["scores"]
        return {
            (suite, name, metric): [float(v) for v in values]
            for suite, benchmarks in scores.items()
            for name, metrics in benchmarks.items()
            for metric, values in metrics.items()
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a noise file written by mmkd ({type(e).__name__}: {e})") from None
