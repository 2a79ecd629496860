"""Signal, noise, SNR, the minimum detectable effect and decision accuracy: the arithmetic on
hand-computed cases, then end to end through launch/report.py on planted runs, where a benchmark whose
score jumps between checkpoints must get the low SNR and the report must read it on the steadier metric."""

import json
import math

import numpy as np
import pytest

from mmkd.checkpoint import last_checkpoints
from mmkd.eval.compare import compare, find_runs, noise_by_key
from mmkd.eval.decide import (
    Decision,
    decision_accuracy,
    decisions,
    mark_read,
    minimum_detectable_effect,
    relative_noise,
    scale_agreement,
    signal,
    snr,
)
from mmkd.eval.doc_tables import regenerate
from tests.conftest import REPO, run_python

ITEMS = 300
MEANS = {"low": 0.4, "mid": 0.5, "high": 0.6}


def test_signal_noise_and_snr_by_hand():
    assert signal([0.4, 0.5, 0.6]) == pytest.approx(0.2 / 0.5)
    assert signal([0.5]) is None and signal([0.0, 0.0]) is None  # one recipe, or a zero mean
    # stdev(0.50, 0.52, 0.48) = 0.02, stdev(0.6, 0.6, 0.6) = 0; mean of all six scores 0.55.
    noise = relative_noise([[0.50, 0.52, 0.48], [0.6, 0.6, 0.6]])
    assert noise == pytest.approx(0.01 / 0.55)
    assert relative_noise([[0.5]]) is None and relative_noise([]) is None  # no run of two checkpoints
    assert snr(0.4, noise) == pytest.approx(0.4 / (0.01 / 0.55)) == pytest.approx(22.0)
    assert snr(0.4, 0.0) == math.inf and snr(0.0, 0.0) is None and snr(None, 0.1) is None


def test_minimum_detectable_effect_and_decision_accuracy_by_hand():
    # (1.95996 + 0.84162) x sqrt(2) x median(0.01, 0.02, 0.03)
    assert minimum_detectable_effect([0.01, 0.03, 0.02]) == pytest.approx(
        2.80158 * math.sqrt(2) * 0.02, rel=1e-5
    )
    assert minimum_detectable_effect([]) is None
    assert minimum_detectable_effect([0.0, 0.0, 0.01]) is None  # most recipes at a floor: not estimable
    small, large = {"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 3.0, "c": 2.0}
    assert decision_accuracy(small, large) == (pytest.approx(2 / 3), 3)  # a<b, a<c agree; b<c flips
    assert decision_accuracy({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}) == (0.5, 1)  # a tie: one half
    assert decision_accuracy(small | {"d": 9.0}, large) == (pytest.approx(2 / 3), 3)  # pairs in both only
    assert decision_accuracy({"a": 1.0}, {"a": 2.0}) == (None, 0)


def test_a_metric_at_its_floor_is_not_read_whatever_its_snr():
    """One right answer among thousands reads as a large relative signal over a tiny mean; its MDE is
    not estimable (every other run scored 0 on every item), so the benchmark is read on the metric
    that can resolve a difference, and on none where no metric can."""
    floor = Decision("world", "ocr", "exact_match", 6.0, 1.7, 3.5, None)
    steady = Decision("world", "ocr", "bits_per_byte", 0.01, 0.013, 0.9, 0.04)
    alone = Decision("world", "kii", "exact_match", 6.0, 1.7, 3.5, None)
    mark_read([floor, steady, alone], require_mde=True)
    assert (floor.read, steady.read, alone.read) == (False, True, False)
    assert mark_read([floor, steady])[0].read  # tables without per-item errors (no MDE) read on SNR


def _plant(root, recipe, seed, rng, jitter):
    """A run in the evaluation's format: two benchmarks whose item scores average MEANS[recipe]
    (`steady` and `noisy`), each with p_correct beside accuracy, and noise.json over 3 checkpoints
    where `noisy`'s accuracy jumps by +-`jitter` and everything else by +-0.002."""
    run = root / f"{recipe}-s{seed}"
    (run / "eval").mkdir(parents=True)
    mean = MEANS[recipe]
    records, scores = [], {}
    for bench in ("steady", "noisy"):
        hits = (rng.random(ITEMS) < mean).astype(float)
        probs = np.clip(mean + rng.normal(0, 0.05, ITEMS), 0, 1)
        records += [
            {
                "suite": "world",
                "benchmark": bench,
                "id": f"{bench}-{i}",
                "score": float(h),
                "continuous": {"p_correct": float(p)},
            }
            for i, (h, p) in enumerate(zip(hits, probs))
        ]
        wobble = jitter if bench == "noisy" else 0.002
        scores[bench] = {
            "accuracy": [mean - wobble, mean + wobble, mean],
            "p_correct": [mean - 0.002, mean + 0.002, mean],
        }
    (run / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    suites = {"world": {b: {"metric": "accuracy"} for b in ("steady", "noisy")}}
    (run / "eval" / "results.json").write_text(json.dumps({"recipe": recipe, "seed": seed, "suites": suites}))
    noise = {"checkpoints": ["step-8", "step-12", "final"], "steps": [8, 12, 16], "scores": {"world": scores}}
    (run / "eval" / "noise.json").write_text(json.dumps(noise))


@pytest.fixture(scope="module")
def scales(tmp_path_factory):
    small, large = tmp_path_factory.mktemp("small"), tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(0)
    for recipe in MEANS:
        for seed in range(2):
            _plant(small, recipe, seed, rng, jitter=0.15)
            _plant(large, recipe, seed, rng, jitter=0.15)
    return small, large


def test_a_planted_noisy_benchmark_gets_a_low_snr_and_is_read_on_its_steady_metric(scales):
    small, _ = scales
    runs = find_runs([small])
    rows = compare(runs, "low")
    found = {(d.benchmark, d.metric): d for d in decisions(rows, noise_by_key(runs))}
    assert set(found) == {(b, m) for b in ("steady", "noisy") for m in ("accuracy", "p_correct")}
    steady, noisy = found[("steady", "accuracy")], found[("noisy", "accuracy")]
    assert steady.signal == pytest.approx(noisy.signal, abs=0.1) and steady.signal > 0.3  # same recipes
    assert noisy.noise == pytest.approx(0.15 / 0.5, rel=0.01)  # stdev(-j, +j, 0) = j, over the mean 0.5
    assert steady.snr > 50 * noisy.snr and noisy.snr < 2
    assert found[("noisy", "p_correct")].read and not noisy.read  # read where the recipes separate
    # The MDE from the recipes' own bootstrap CIs (seeds and items), in the score's units.
    errors = sorted(
        (r.ci[1] - r.ci[0]) / 3.92 for r in rows if (r.benchmark, r.metric) == ("steady", "accuracy")
    )
    assert (
        steady.mde == pytest.approx(2.8016 * math.sqrt(2) * errors[1], rel=1e-3) and 0.05 < steady.mde < 0.2
    )


def test_report_cli_prints_snr_and_decision_accuracy_between_two_scales(scales, tmp_path):
    small, large = scales
    out = tmp_path / "report"
    stdout = run_python(
        [str(REPO / "launch/report.py"), f"runs={small}", f"large={large}", f"out={out}", "baseline=low"]
    )
    assert "## Signal, noise and the metric to read" in stdout
    text = (out / "report.md").read_text()
    assert "| noisy (p_correct) | high | 2 | 300 |" in text  # the continuous score has rows of its own
    line = next(x for x in text.splitlines() if x.startswith("| world/noisy | p_correct |"))
    assert line.endswith("| yes |")
    assert "## Decision accuracy: " in text and "| world/steady | accuracy | 3 | 100% |" in text
    report = json.loads((out / "report.json").read_text())
    read = sorted((d["benchmark"], d["metric"]) for d in report["decisions"] if d["read"])
    assert [b for b, _ in read] == ["noisy", "steady"] and ("noisy", "p_correct") in read  # one per benchmark
    assert all(a["accuracy"] == 1.0 and a["pairs"] == 3 for a in report["decision_accuracy"])
    assert "Signal, noise and the metric to read" in (out / "report.html").read_text()
    # A README section from this report reads each benchmark on its own metric, once.
    begin = "<!-- generated from report by recipe_comparison: -->"
    section = regenerate(f"{begin}\n<!-- end of the section generated from report -->\n", tmp_path)
    assert len([x for x in section.splitlines() if x.startswith("| noisy |")]) == 1
    assert "p_correct" not in section
    # ... and a doc's decisions table from it is the report's own, row for row.
    table = regenerate(
        "<!-- generated from report by decisions: -->\n<!-- end of the section generated from report -->\n",
        tmp_path,
    )
    snr_section = text.split("## Signal, noise and the metric to read")[1].split("## Decision accuracy")[0]
    rows = [x for x in snr_section.splitlines() if x.startswith("| world/")]
    assert rows and all(row in table for row in rows)


def test_decision_accuracy_sees_a_flipped_order(scales):
    small, large = scales
    rows = compare(find_runs([small]), "low")
    flipped = compare(find_runs([large]), "low")
    for r in flipped:  # at the larger scale, mid now beats high on noisy's accuracy
        if (r.benchmark, r.metric, r.recipe) == ("noisy", "accuracy", "mid"):
            r.mean = 0.9
    agreement = {(a.benchmark, a.metric): a for a in scale_agreement(rows, flipped)}
    assert agreement[("noisy", "accuracy")].accuracy == pytest.approx(2 / 3)
    assert agreement[("steady", "accuracy")].accuracy == 1.0


def test_noise_reads_the_last_checkpoints_of_the_evaluated_ones_stage(tmp_path):
    """The checkpoints before the final one in its stage: the pre-training stage's end and its periodic
    checkpoints are not instruction-stage noise; one per step, `final` where it shares one."""
    for name, step, stage in [
        ("step-00000008", 8, "all"),
        ("step-00000013", 13, "all"),  # the pre-training stage's end (pinned)
        ("step-00000014", 14, "sft"),
        ("step-00000015", 15, "sft"),
        ("step-00000016", 16, "sft"),
        ("final", 16, "sft"),
        ("step-00000017", 17, "sft"),  # uncommitted: a save that did not finish
    ]:
        (tmp_path / name).mkdir()
        meta = {"step": step, "stage": stage, "config": {}, "tokenizer": ""}
        (tmp_path / name / "meta.json").write_text(json.dumps(meta))
        if step != 17:
            (tmp_path / name / "COMMITTED").write_text(f"{step}\n")
    names = [p.name for p in last_checkpoints(tmp_path / "final", 3)]
    assert names == ["step-00000014", "step-00000015", "final"]
    assert [p.name for p in last_checkpoints(tmp_path / "final", 9)] == names
    assert [p.name for p in last_checkpoints(tmp_path / "step-00000013", 3)] == [
        "step-00000008",
        "step-00000013",
    ]
