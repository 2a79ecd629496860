"""Compare recipes over runs: per-benchmark means with 95% CIs, deltas to a baseline, paired tests.

The paper reports single runs without error bars (seed 000 Tables 3-10). Here every number says how
sure it is:
- a recipe's score on a benchmark is the mean over its seeds and the benchmark's items; its 95% CI
  comes from a bootstrap that resamples seeds and items together (both are samples: another seed or
  another set of items would give another number). With one seed it is the item bootstrap alone;
- a recipe's delta to the baseline has a CI from the same bootstrap run on both recipes at once
  (the same resampled items, so item difficulty cancels out: a paired comparison);
- two p-values for "this recipe and the baseline score alike": the paired test, a sign-flip
  permutation test on the per-item differences (each averaged over seeds), treats the seeds as
  given; the bootstrap p-value, from the same resampling as the delta's CI, also counts seed
  variance. With few seeds and seed-sensitive benchmarks they disagree, and the second is the one
  that speaks for the recipe rather than for these particular runs.
Each run directory holds `eval/results.json` and `eval/predictions.jsonl` (`mmkd.launch._pipeline.evaluate`).
`launch/report.py` is the command line.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmkd.eval.decide import Decision, ScaleAgreement
from mmkd.eval.noise import read_noise
from mmkd.eval.report import CONTINUOUS_METRICS, UNBOUNDED_METRICS
from mmkd.eval.report import format_score as _fmt
from mmkd.mmgic_template import text_to_image_prompt

BOOTSTRAP = 2000
PERMUTATIONS = 10000


@dataclass
class Run:
    """One evaluated run: its recipe, seed and every item's score per (suite, benchmark)."""

    path: Path
    recipe: str
    seed: int
    metrics: dict[tuple[str, str], str] = field(default_factory=dict)
    items: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    # (suite, benchmark, continuous metric) -> item id -> score (eval/continuous.py)
    continuous: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    # (suite, benchmark, metric) -> the score at each of the run's last checkpoints (eval/noise.py)
    noise: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    concepts: dict[str, float] = field(default_factory=dict)  # benchmark -> share seen in training
    floors: dict[str, float] = field(default_factory=dict)  # generation measure -> random visual ids' score
    dimensions: dict[str, float] = field(default_factory=dict)  # SEED-Bench dimension -> score
    captions: dict[str, float] = field(default_factory=dict)  # what its captions claim (CHAIR, ANA, ...)
    results: dict = field(default_factory=dict)  # results.json as written (config, mixture, chance, blind)
    image_prompt: str | None = None  # the template its generation read (discrete runs), else None
    eval_dir: str = "eval"  # the folder under `path` that holds results.json and predictions.jsonl

    def scored(self) -> dict[tuple[str, str, str], dict[str, float]]:
        """(suite, benchmark, metric) -> item id -> score, for the primary metric and the continuous ones."""
        return {(*k, self.metrics.get(k, "")): v for k, v in self.items.items()} | self.continuous


# caption_quality fields of the world captioning result -> report columns (seed 002 Appendix B).
CAPTION_COLUMNS = {
    "chair_i": "CHAIR_i",
    "chair_s": "CHAIR_s",
    "recall": "recall",
    "ana": "ANA",
    "capscore": "CapScore",
}


@dataclass
class Row:
    """One (suite, benchmark, recipe) line of the report."""

    suite: str
    benchmark: str
    metric: str
    recipe: str
    seeds: list[int]
    n_items: int
    mean: float
    ci: tuple[float, float]
    per_seed: list[float]
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None
    p_value: float | None = None  # paired permutation test over items
    p_bootstrap: float | None = None  # from the seeds-and-items bootstrap of the delta


def load_run(run_dir: Path, eval_dir: str = "eval") -> Run:
    """A run from its eval directory; a missing or malformed file is an error naming it."""
    results_path, predictions = run_dir / eval_dir / "results.json", run_dir / eval_dir / "predictions.jsonl"
    for path in (results_path, predictions):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: is {run_dir} an evaluated run?")
    results = json.loads(results_path.read_text())
    run = Run(run_dir, results["recipe"], int(results["seed"]), results=results, eval_dir=eval_dir)
    run.concepts = {b: e["all"] for b, e in (results.get("concepts") or {}).items()}
    run.dimensions = {d: e["score"] for d, e in (results.get("seed_dimensions") or {}).items() if e}
    generation = results.get("suites", {}).get("generation", {})
    # reader-FD's floor is a distance, not a share: its table is the run's own report.
    run.floors = {m: e["random_ids"] for m, e in generation.items() if "random_ids" in e and m != "reader_fd"}
    if generation:
        config = results.get("config") or {}
        prompts = [config.get(group, {}).get("image_prompt", "") for group in ("eval", "recipe")]
        run.image_prompt = text_to_image_prompt(*prompts)
    quality = results.get("suites", {}).get("world", {}).get("captioning", {}).get("caption_quality")
    run.captions = {CAPTION_COLUMNS[k]: quality[k][0] for k in CAPTION_COLUMNS} if quality else {}
    # Runs evaluated before suites existed hold the world benchmarks as "abilities".
    for suite, benchmarks in results.get("suites", {"world": results.get("abilities", {})}).items():
        for name, result in benchmarks.items():
            run.metrics[(suite, name)] = result["metric"]
    for n, line in enumerate(predictions.read_text().splitlines(), 1):
        record = json.loads(line)
        try:
            key = (record.get("suite", "world"), record.get("benchmark") or record["ability"])
            if record["score"] is not None:  # None: scored only as a whole (some VLMEvalKit sets)
                run.items.setdefault(key, {})[record["id"]] = float(record["score"])
            for metric, value in (record.get("continuous") or {}).items():
                run.continuous.setdefault((*key, metric), {})[record["id"]] = float(value)
        except KeyError as e:
            raise ValueError(f"{predictions}:{n}: record without {e.args[0]!r}") from None
    run.noise = read_noise(run_dir / eval_dir)
    return run


def find_runs(paths: list[Path], eval_dir: str = "eval") -> list[Run]:
    """Every evaluated run under `paths` (a run directory or any folder above run directories)."""
    found = sorted({p.parent.parent for root in paths for p in root.rglob(f"{eval_dir}/results.json")})
    if not found:
        raise FileNotFoundError(f"no {eval_dir}/results.json under {[str(p) for p in paths]}")
    return [load_run(d, eval_dir) for d in found]


def _matrix(per_run: list[dict[str, float]], ids: list[str]) -> np.ndarray:
    """[seeds, items] scores of one recipe on one benchmark (one item -> score dict per seed), items in
    the order of `ids`."""
    return np.array([[scores[i] for i in ids] for scores in per_run], dtype=float)


def _resample(rng: np.random.Generator, m: np.ndarray, items: np.ndarray) -> float:
    seeds = rng.integers(0, m.shape[0], m.shape[0])
    return float(m[seeds][:, items].mean())


def bootstrap_ci(m: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of the mean of a [seeds, items] matrix, resampling seeds and items."""
    rng = np.random.default_rng(seed)
    n = m.shape[1]
    stats = [_resample(rng, m, rng.integers(0, n, n)) for _ in range(BOOTSTRAP)]
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def delta_bootstrap(base: np.ndarray, other: np.ndarray, seed: int = 0) -> tuple[tuple[float, float], float]:
    """95% CI of mean(other) - mean(base) and its two-sided bootstrap p-value: both recipes' seeds
    resampled, the same resampled items for both."""
    rng = np.random.default_rng(seed)
    n = base.shape[1]
    stats = []
    for _ in range(BOOTSTRAP):
        items = rng.integers(0, n, n)
        stats.append(_resample(rng, other, items) - _resample(rng, base, items))
    d = np.array(stats)
    p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))) + 1 / BOOTSTRAP)
    return (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))), p


def paired_p_value(base: np.ndarray, other: np.ndarray, seed: int = 0) -> float:
    """Two-sided sign-flip permutation test on per-item differences (each averaged over seeds)."""
    d = other.mean(0) - base.mean(0)
    if not np.any(d):
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(PERMUTATIONS, d.size))
    null = np.abs((signs * d).mean(1))
    return float((1 + np.sum(null >= abs(d.mean()) - 1e-12)) / (PERMUTATIONS + 1))


def compare(runs: list[Run], baseline: str) -> list[Row]:
    """Rows for every (suite, benchmark, metric) x recipe, deltas and tests against `baseline`: the
    benchmark's own metric first, then its continuous scores.

    Only items that every run of the compared recipes scored count, so all rows of a benchmark
    stand on the same items.
    """
    by_recipe: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_recipe[r.recipe].append(r)
    if baseline not in by_recipe:
        raise ValueError(f"baseline recipe {baseline!r} has no runs; recipes found: {sorted(by_recipe)}")
    tables = {id(r): r.scored() for r in runs}
    rows = []
    keys = {k for t in tables.values() for k in t}
    for key in sorted(keys, key=lambda k: (k[0], k[1], k[2] in CONTINUOUS_METRICS, k[2])):
        having = {name: rs for name, rs in by_recipe.items() if all(key in tables[id(r)] for r in rs)}
        ids = sorted(set.intersection(*(set(tables[id(r)][key]) for rs in having.values() for r in rs)))
        if not ids:
            continue
        base = _matrix([tables[id(r)][key] for r in having[baseline]], ids) if baseline in having else None
        for name in sorted(having, key=lambda n: (n != baseline, n)):
            rs = sorted(having[name], key=lambda r: r.seed)
            m = _matrix([tables[id(r)][key] for r in rs], ids)
            row = Row(
                key[0],
                key[1],
                key[2],
                name,
                [r.seed for r in rs],
                len(ids),
                float(m.mean()),
                bootstrap_ci(m),
                [float(x) for x in m.mean(1)],
            )
            if base is not None and name != baseline:
                row.delta = row.mean - float(base.mean())
                row.delta_ci, row.p_bootstrap = delta_bootstrap(base, m)
                row.p_value = paired_p_value(base, m)
            rows.append(row)
    return rows


def noise_by_key(runs: list[Run]) -> dict[tuple[str, str, str], list[list[float]]]:
    """(suite, benchmark, metric) -> the scores at each run's last checkpoints, one list per run that
    recorded them (eval/noise.py), for `decide.decisions`."""
    out: dict[tuple[str, str, str], list[list[float]]] = defaultdict(list)
    for run in runs:
        for key, scores in run.noise.items():
            out[key].append(scores)
    return out


def averages(rows: list[Row]) -> dict[tuple[str, str], float]:
    """Per (suite, recipe): the mean over its benchmarks scored in [0, 1] (CIDEr is left out), for the
    categories the paper averages (not generation: its measures are facets of one image)."""
    acc: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        primary = r.metric not in UNBOUNDED_METRICS and r.metric not in CONTINUOUS_METRICS
        if primary and group(r.suite, r.benchmark) in GROUPS:
            acc[(r.suite, r.recipe)].append(r.mean)
    return {k: sum(v) / len(v) for k, v in acc.items()}


# The paper's table groups (seed 000 Tables 3-10): general multimodal, general text, then custom suites.
# Generation (the discrete model's) is a suite of its own: reported, not in GROUPS, so not averaged.
SUITE_GROUPS = {
    "world": "general multimodal",
    "vlmeval": "general multimodal",
    "lm_eval": "general text",
    "generation": "text to image, discrete model",
}
TEXT_ONLY = {("world", "knowledge")}  # the world's questions asked without an image
GROUPS = ("general multimodal", "general text", "custom")


def group(suite: str, benchmark: str) -> str:
    """The paper's category of a benchmark: the world's text-only knowledge counts as general text."""
    return "general text" if (suite, benchmark) in TEXT_ONLY else SUITE_GROUPS.get(suite, "custom")


@dataclass
class GroupAverage:
    """A recipe's mean over a category's benchmarks (each weighs the same; CIDEr left out), the way the
    paper's tables end in an Average row, here with a CI and a test against the baseline."""

    group: str
    recipe: str
    benchmarks: list[str]
    mean: float
    ci: tuple[float, float]
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None
    p_bootstrap: float | None = None


def group_averages(runs: list[Run], baseline: str) -> list[GroupAverage]:
    """Per category and recipe, over the benchmarks that every run scored. The bootstrap runs on the
    benchmarks' items pooled, each item weighted by 1 / (its benchmark's size x their number), so a
    resample's mean is the average of benchmark means and seeds are resampled once for all of them."""
    by_recipe: dict[str, list[Run]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: r.seed):
        by_recipe[r.recipe].append(r)
    shared = set.intersection(*(set(r.items) for r in runs))
    ids = {k: sorted(set.intersection(*(set(r.items[k]) for r in runs))) for k in shared}
    keys = {k for k in shared if ids[k] and runs[0].metrics.get(k) not in UNBOUNDED_METRICS}
    out = []
    for name in GROUPS:
        mine = sorted(k for k in keys if group(*k) == name)
        if not mine:
            continue
        total = sum(len(ids[k]) for k in mine)
        pooled = {
            recipe: np.hstack(
                [_matrix([r.items[k] for r in rs], ids[k]) * total / (len(mine) * len(ids[k])) for k in mine]
            )
            for recipe, rs in by_recipe.items()
        }
        for recipe in sorted(pooled, key=lambda n: (n != baseline, n)):
            m = pooled[recipe]
            avg = GroupAverage(name, recipe, [k[1] for k in mine], float(m.mean()), bootstrap_ci(m))
            if recipe != baseline and baseline in pooled:
                avg.delta = avg.mean - float(pooled[baseline].mean())
                avg.delta_ci, avg.p_bootstrap = delta_bootstrap(pooled[baseline], m)
            out.append(avg)
    return out


def _suite_order(suite: str) -> tuple[int, str]:
    return (list(SUITE_GROUPS).index(suite) if suite in SUITE_GROUPS else len(SUITE_GROUPS), suite)


def per_recipe(runs: list[Run], attribute: str, scale: float = 100) -> str:
    """A recipe x name table of a per-run measure (`concepts`, `dimensions`, `captions`), the mean over
    the seeds where it is defined (CapScore is not for a run whose captions assert nothing), times
    `scale`; a dash where no seed defines it."""
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for name, v in getattr(run, attribute).items():
            defined = values.setdefault(run.recipe, {}).setdefault(name, [])
            if not math.isnan(v):
                defined.append(v)
    names = sorted({n for by_name in values.values() for n in by_name})
    if not names:
        return ""
    lines = [f"| recipe | {' | '.join(names)} |", "| --- |" + " ---: |" * len(names)]
    for recipe, by_name in sorted(values.items()):
        cells = [f"{scale * sum(v) / len(v):.1f}" if (v := by_name.get(n)) else "—" for n in names]
        lines.append(f"| {recipe} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def sections(runs: list[Run]) -> str:
    """The SEED-Bench dimensions, the concept overlap (seed 003 Sec. 4.4, C.1), the generation floors
    (discrete runs) and what the models' captions claim (seed 002 Appendix B), means over seeds."""
    out = []
    if table := per_recipe(runs, "dimensions"):
        out += ["## SEED-Bench dimensions on the world (%, mean over seeds)", "", table]
    if table := per_recipe(runs, "concepts"):
        out += ["## Concept overlap: the captioning benchmark's concepts seen in training (%)", "", table]
    if table := per_recipe(runs, "floors"):
        head = "## Generation floor: random visual ids through each run's tokenizer (%, mean over seeds)"
        out += [head, "", table]
    if prompts := sorted({(r.recipe, r.image_prompt) for r in runs if r.image_prompt is not None}):
        # A prompt's newlines print as \n; "" (<bos> text [IMG]) as the template that reads the same.
        lines = [f"| {recipe} | `{p or '<caption><image>'}` |".replace("\n", "\\n") for recipe, p in prompts]
        head = "## Generation prompts: what each recipe's model read before drawing (<caption>: the text)"
        out += [head, "", "| recipe | prompt |\n| --- | --- |\n" + "\n".join(lines) + "\n"]
    if table := per_recipe(runs, "captions", scale=1):
        head = (
            "## What the models' captions claim (world captioning; CHAIR and CapScore in %, mean over seeds)"
        )
        out += [head, "", table]
    return "\n".join(out)


def cells(r: Row) -> list[str]:
    """A row as the report prints it: benchmark (metric), recipe, seeds, items, score [CI], per seed,
    delta [CI], p (items), p (seeds + items)."""
    m = r.metric
    score = f"{_fmt(r.mean, m)} [{_fmt(r.ci[0], m)}, {_fmt(r.ci[1], m)}]"
    seeds = ", ".join(_fmt(s, m) for s in r.per_seed)
    delta, p, p_boot = "—", "—", "—"
    if r.delta is not None and r.delta_ci is not None:
        delta = f"{_fmt(r.delta, m)} [{_fmt(r.delta_ci[0], m)}, {_fmt(r.delta_ci[1], m)}]"
        p, p_boot = f"{r.p_value:.4f}", f"{r.p_bootstrap:.4f}"
    return [
        f"{r.benchmark} ({m})",
        r.recipe,
        str(len(r.seeds)),
        str(r.n_items),
        score,
        seeds,
        delta,
        p,
        p_boot,
    ]


CELL_NAMES = ("benchmark", "recipe", "seeds", "items", "score [95% CI]", "per seed", "Δ vs baseline [95% CI]")
CELL_NAMES += ("p (items)", "p (seeds + items)")


def markdown(rows: list[Row], baseline: str) -> str:
    """One table per suite (general multimodal, general text, custom): recipes as rows within each
    benchmark, then the suite averages."""
    out = [f"# Recipe comparison (baseline: {baseline})", ""]
    avg = averages(rows)
    for suite in sorted({r.suite for r in rows}, key=_suite_order):
        out += [
            f"## {suite} ({SUITE_GROUPS.get(suite, 'custom')})",
            "",
            f"| {' | '.join(CELL_NAMES)} |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        out += [f"| {' | '.join(cells(r))} |" for r in rows if r.suite == suite]
        recipes = sorted({r for (s, r) in avg if s == suite}, key=lambda n: (n != baseline, n))
        if recipes:
            out += ["", "| recipe | average (benchmarks in %, CIDEr left out) |", "| --- | ---: |"]
            out += [f"| {name} | {100 * avg[(suite, name)]:.1f} |" for name in recipes]
        out.append("")
    out.append(
        "Scores in % (CIDEr-D as is). CIs: bootstrap over seeds and items, Δ paired over items. "
        "p (items): sign-flip permutation test on per-item differences, seeds taken as given; "
        "p (seeds + items): from the bootstrap of Δ, seed variance included."
    )
    return "\n".join(out) + "\n"


CSV_COLUMNS = (
    "suite",
    "benchmark",
    "metric",
    "recipe",
    "seeds",
    "items",
    "mean",
    "ci_low",
    "ci_high",
    "per_seed",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "p_value",
    "p_bootstrap",
)


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            d_lo, d_hi = r.delta_ci or (None, None)
            seeds, per_seed = " ".join(map(str, r.seeds)), " ".join(f"{s:.6f}" for s in r.per_seed)
            head = [r.suite, r.benchmark, r.metric, r.recipe, seeds, r.n_items, r.mean, *r.ci]
            w.writerow([*head, per_seed, r.delta, d_lo, d_hi, r.p_value, r.p_bootstrap])


def to_json(
    runs: list[Run],
    rows: list[Row],
    group_rows: list[GroupAverage],
    baseline: str,
    found: list[Decision] = (),
    agreement: list[ScaleAgreement] = (),
) -> dict:
    """The comparison as data (report.json): what a README section or another tool is generated from,
    without the runs. Budgets come from each run's saved config; an infinite SNR (checkpoints that
    agree exactly) is written as the string "inf"."""
    train = [r.results.get("config", {}).get("train", {}) for r in runs]
    return {
        "baseline": baseline,
        "runs": [
            {"recipe": r.recipe, "seed": r.seed} | {k: t.get(k) for k in ("budget_samples", "budget_tokens")}
            for r, t in zip(runs, train)
        ],
        "rows": [asdict(r) for r in rows],
        "averages": [asdict(a) for a in group_rows],
        "levels": [
            {"suite": s, "benchmark": b, "chance": c, "blind": z} for (s, b), (c, z) in levels(runs).items()
        ],
        "decisions": [asdict(d) | {"snr": "inf" if d.snr == math.inf else d.snr} for d in found],
        "decision_accuracy": [asdict(a) for a in agreement],
    }


def pyplot():
    """matplotlib's pyplot drawing to files only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def levels(runs: list[Run]) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """(suite, benchmark) -> (chance, blind) as the evaluation measured them, where it did; a
    generation measure's chance is its floor, the score of random visual ids."""
    out = {}
    for run in runs:
        for suite, benchmarks in run.results.get("suites", {}).items():
            for name, r in benchmarks.items():
                if not isinstance(r, dict):
                    continue
                chance = r.get("random_ids") if suite == "generation" else r.get("chance")
                if chance is not None or r.get("blind") is not None:
                    out.setdefault((suite, name), (chance, r.get("blind")))
    return out


def plot(
    rows: list[Row], path: Path, marks: dict[tuple[str, str], tuple[float | None, float | None]] | None = None
) -> None:
    """One panel per suite: a bar per (benchmark, recipe) with its 95% CI; with `marks` (`levels()`),
    each benchmark's chance (dashed) and blind (dotted) scores across its bars."""
    plt = pyplot()
    rows = [r for r in rows if r.metric not in CONTINUOUS_METRICS]  # a bar per benchmark: its own metric
    suites = sorted({r.suite for r in rows})
    fig, axes = plt.subplots(len(suites), 1, figsize=(12, 4 * len(suites)), squeeze=False)
    for ax, suite in zip(axes[:, 0], suites):
        mine = [r for r in rows if r.suite == suite]
        benchmarks = sorted({r.benchmark for r in mine})
        recipes = list(dict.fromkeys(r.recipe for r in mine))  # the baseline first, as in the tables
        width = 0.8 / len(recipes)
        for k, name in enumerate(recipes):
            xs, ys, err = [], [], [[], []]
            for i, b in enumerate(benchmarks):
                r = next((r for r in mine if r.benchmark == b and r.recipe == name), None)
                if r is not None:
                    xs.append(i + k * width)
                    ys.append(r.mean)
                    err[0].append(r.mean - r.ci[0])
                    err[1].append(r.ci[1] - r.mean)
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=name)
        labelled: set[str] = set()
        for i, b in enumerate(benchmarks):
            span = (i - width / 2, i + 0.8 - width / 2)
            chance_blind = (marks or {}).get((suite, b), (None, None))
            for value, what, style in zip(chance_blind, ("chance", "blind"), ("dashed", "dotted")):
                if value is not None:
                    ax.hlines(
                        value,
                        *span,
                        colors="black",
                        linestyles=style,
                        label=None if what in labelled else what,
                    )
                    labelled.add(what)
        ticks = [i + 0.4 - width / 2 for i in range(len(benchmarks))]
        ax.set_xticks(ticks, benchmarks, rotation=30, ha="right")
        ax.set_title(suite)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
