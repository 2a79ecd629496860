"""The comparison as one HTML page that opens from disk: training curves, per-benchmark bars with their
95% CIs and chance / blind levels, the score table with deltas and p-values, knowledge-density
histograms (seed 000 Fig. 4), a gallery of what each recipe answered on which image (and the images a
discrete model generated), the mixtures as trained and the config keys in which recipes differ.

Pictures are files in `report_files/` beside the page (matplotlib, Agg backend); nothing is fetched.
`launch/report.py` writes it for many runs, the evaluation of a run for that run alone
(`<run>/eval/report.html`). Every section is optional: what a run directory lacks is left out.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from mmkd.data_builders.sources import world_dir
from mmkd.eval.compare import CELL_NAMES, Row, Run, cells, levels, plot, pyplot
from mmkd.eval.custom import load_suite
from mmkd.eval.decide import (
    AGREEMENT_NAMES,
    DECISION_NAMES,
    Decision,
    ScaleAgreement,
    agreement_cells,
    decision_cells,
)
from mmkd.shards import write_text_atomic

FILES = "report_files"
GALLERY_ITEMS = 4  # per benchmark: items where the recipes answered differently first
CURVES = (("loss", "training loss"), ("lr", "learning rate"), ("tokens_per_s", "tokens/s"))

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
img.plot { max-width: 100%; }
.item { display: inline-block; width: 270px; margin: 0 1em 1em 0; vertical-align: top; }
.item img { width: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
.ok { color: #1a7f37; } .wrong { color: #cf222e; }
"""


def write_html(
    runs: list[Run],
    rows: list[Row],
    baseline: str,
    out: Path,
    title: str,
    found: list[Decision] = (),
    agreement: list[ScaleAgreement] = (),
) -> Path:
    """`out/report.html` and its pictures in `out/report_files/` (replaced as a whole); `found` and
    `agreement` (eval/decide.py) add the signal-and-noise and decision-accuracy tables."""
    files = out / FILES
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir(parents=True)
    by_recipe: dict[str, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: (r.recipe != baseline, r.recipe, r.seed)):
        by_recipe[run.recipe].append(run)
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{len(runs)} runs of {len(by_recipe)} recipes; baseline <b>{escape(baseline)}</b>. Scores in %, "
        "CIDEr as is; 95% CIs by bootstrap over seeds and items.</p>",
        _curves(by_recipe, files),
        _scores(runs, rows, files),
        _decisions(found, agreement),
        _knowledge(runs, files),
        _gallery(by_recipe, files),
        _generation(by_recipe, files),
        _mixtures(by_recipe),
        _config_diff(by_recipe, baseline),
    ]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n"
    )
    path = out / "report.html"
    write_text_atomic(path, page)
    return path


def _img(name: str, alt: str, css: str = "plot") -> str:
    return f'<img class="{css}" src="{FILES}/{escape(name)}" alt="{escape(alt)}">'


def _table(head: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>\n" for r in rows)
    return f"<table><tr>{th}</tr>\n{trs}</table>"


def _curves(by_recipe: dict[str, list[Run]], files: Path) -> str:
    """Loss, learning rate and throughput against the step: one colour per recipe, a line style per seed."""
    logs = {}
    for recipe, runs in by_recipe.items():
        for run in runs:
            path = run.path / "metrics.jsonl"
            if path.exists():
                records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                logs[(recipe, run.seed)] = [r for r in records if "loss" in r]
    if not logs:
        return ""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(15, 4))
    styles = curve_styles(list(logs))
    for ax, (key, label) in zip(axes, CURVES):
        labelled: set[str] = set()
        for (recipe, seed), records in logs.items():
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                steps, values = zip(*points)
                name = None if recipe in labelled else recipe  # one legend entry per recipe
                colour, style = styles[(recipe, seed)]
                ax.plot(steps, values, color=colour, linestyle=style, lw=1, label=name)
                labelled.add(recipe)
        ax.set_xlabel("step")
        ax.set_title(label)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(files / "curves.png", dpi=90)
    plt.close(fig)
    return "<h2>Training</h2>\n" + _img("curves.png", "training curves")


SEED_STYLES = ("-", "--", ":", "-.")


def curve_styles(runs: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, str]]:
    """(recipe, seed) -> (colour, line style): a colour per recipe, a style per seed within it, so
    seeds of one recipe stay apart."""
    recipes = list(dict.fromkeys(recipe for recipe, _ in runs))
    out = {}
    for recipe, seed in runs:
        k = sorted(s for r, s in runs if r == recipe).index(seed)
        out[(recipe, seed)] = (f"C{recipes.index(recipe) % 10}", SEED_STYLES[k % len(SEED_STYLES)])
    return out


def _scores(runs: list[Run], rows: list[Row], files: Path) -> str:
    if not rows:
        return ""
    plot(rows, files / "scores.png", levels(runs))
    parts = ["<h2>Scores</h2>", _img("scores.png", "scores per benchmark with 95% CIs")]
    parts.append(
        "<p>Dashed: chance (generation: random visual ids); dotted: blind (the model without the image), "
        "where measured.</p>"
    )
    for suite in dict.fromkeys(r.suite for r in rows):
        parts += [
            f"<h3>{escape(suite)}</h3>",
            _table(CELL_NAMES, [list(map(escape, cells(r))) for r in rows if r.suite == suite]),
        ]
    return "\n".join(parts)


def _decisions(found: list[Decision], agreement: list[ScaleAgreement]) -> str:
    parts = []
    if found:
        parts += [
            "<h2>Signal, noise and the metric to read</h2>",
            "<p>SNR: the largest distance between recipes' means over the spread across each run's last "
            "checkpoints, both relative to the mean; MDE: the difference a 5% test finds with 80% power "
            "(eval/decide.py).</p>",
            _table(DECISION_NAMES, [list(map(escape, decision_cells(d))) for d in found]),
        ]
    if agreement:
        parts += [
            "<h2>Decision accuracy between scales</h2>",
            _table(AGREEMENT_NAMES, [list(map(escape, agreement_cells(a))) for a in agreement]),
        ]
    return "\n".join(parts)


def _data_root(run: Run) -> Path | None:
    root = run.results.get("config", {}).get("data", {}).get("root")
    return Path(root) if root else None


def _knowledge(runs: list[Run], files: Path) -> str:
    """Histograms of KD per source from the data roots' `launch/build.py +knowledge=true` reports."""
    reports = sorted(
        {p for r in runs if (root := _data_root(r)) for p in root.glob("reports/knowledge-*.json")}
    )
    sources: dict[str, dict[str, int]] = {}
    for path in reports:
        for name, summary in json.loads(path.read_text()).get("sources", {}).items():
            if summary.get("histogram"):
                sources.setdefault(name, summary["histogram"])
    if not sources:
        return ""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    for name, hist in sources.items():
        total = sum(hist.values())
        xs = sorted(int(k) for k in hist)
        ax.step(xs, [hist[str(x)] / total for x in xs], where="mid", label=name)
    ax.set_xlabel("knowledge elements per sample, KD(x)")
    ax.set_ylabel("share of samples")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(files / "knowledge.png", dpi=90)
    plt.close(fig)
    return "<h2>Knowledge density (seed 000 Fig. 4)</h2>\n" + _img("knowledge.png", "KD histograms")


def _predictions(run: Run) -> dict[tuple[str, str], dict[str, dict]]:
    out: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for line in (run.path / run.eval_dir / "predictions.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "question" in r and "prediction" in r:
            out[(r.get("suite", "world"), r.get("benchmark") or r.get("ability", ""))][r["id"]] = r
    return out


def _bench_images(run: Run, benchmark: str, ids: set[str]) -> dict[str, bytes]:
    """The PNG bytes of these world benchmark items, where the run's world is on this machine."""
    data = run.results.get("config", {}).get("data")
    if not data or not (path := world_dir(data) / "bench" / f"{benchmark}.jsonl").exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if item.get("id") in ids and item.get("image"):
            out[item["id"]] = base64.b64decode(item["image"])
    return out


def _suite_images(run: Run, suite: str, ids: set[str]) -> dict[str, bytes]:
    """The PNG bytes of these items of a custom suite (`eval.custom`), where its file is on this
    machine."""
    path = (run.results.get("config", {}).get("eval", {}).get("custom") or {}).get(suite)
    if not path or not Path(path).exists():
        return {}
    return _png({item.id: item.image for item in load_suite(path) if item.id in ids})


def _vlmeval_images(run: Run, dataset: str, ids: set[str]) -> dict[str, bytes]:
    """The PNG bytes of these items of a VLMEvalKit dataset, where its TSV is on this machine (the run's
    eval.vlmeval_data, else $LMUData) and the kit imports; otherwise none."""
    from mmkd.eval.vlmeval_suite import VlmevalError, data_folder, dataset_items, tsv_path

    folder = run.results.get("config", {}).get("eval", {}).get("vlmeval_data", "")
    try:
        path = tsv_path(dataset, data_folder(folder))
    except (VlmevalError, ImportError):
        return {}
    return _png({i.id: i.image for i in dataset_items(path) if i.id in ids} if path.exists() else {})


def _png(images: dict) -> dict[str, bytes]:
    out = {}
    for item_id, image in images.items():
        if image is not None:
            png = io.BytesIO()
            image.save(png, format="PNG")
            out[item_id] = png.getvalue()
    return out


def _natural(item_id: str) -> list:
    """existence-2 before existence-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", item_id)]


def _mark(score: Any, binary: bool) -> str:
    """Right or wrong on a benchmark scored 0/1, the score itself otherwise (CIDEr, ANLS, ...)."""
    if not isinstance(score, float):
        return ""
    if binary:
        return '<span class="ok">✓</span>' if score == 1.0 else '<span class="wrong">✗</span>'
    return f"{score:.2f}"


# suite -> where its items' pictures are read; any other suite is a custom one (lm-eval tasks find none).
IMAGES = {"world": _bench_images, "vlmeval": _vlmeval_images}


def _gallery(by_recipe: dict[str, list[Run]], files: Path) -> str:
    """Per benchmark: items with the image, question, answer and each recipe's prediction (its first
    seed), those where the recipes disagree first."""
    first = {recipe: runs[0] for recipe, runs in by_recipe.items()}
    answers = {recipe: _predictions(run) for recipe, run in first.items()}
    keys = sorted(set.intersection(*(set(a) for a in answers.values()))) if answers else []
    parts = []
    for suite, benchmark in keys:
        per_recipe = {recipe: a[(suite, benchmark)] for recipe, a in answers.items()}
        ids = sorted(set.intersection(*(set(p) for p in per_recipe.values())), key=_natural)
        split = [i for i in ids if len({p[i].get("score") for p in per_recipe.values()}) > 1]
        binary = all(r.get("score") in (0.0, 1.0) for p in per_recipe.values() for r in p.values())
        chosen = (split + [i for i in ids if i not in split])[:GALLERY_ITEMS]
        some = next(iter(first.values()))
        images = IMAGES.get(suite, _suite_images)(some, benchmark, set(chosen))
        items = []
        for i in chosen:
            record = next(iter(per_recipe.values()))[i]
            html = [f"<b>{escape(i)}</b><br>"]
            if i in images:
                name = f"gallery/{suite}-{benchmark}-{i}.png"
                (files / name).parent.mkdir(exist_ok=True)
                (files / name).write_bytes(images[i])
                html.append(_img(name, f"{benchmark} item {i}", css="") + "<br>")
            question = f"Q: {escape(str(record['question']))}<br>" if record["question"] else ""
            html.append(f"{question}answer: <b>{escape(str(record.get('answer')))}</b>")
            html += [
                f"<br>{escape(recipe)}: {escape(str(p[i]['prediction']))} {_mark(p[i].get('score'), binary)}"
                for recipe, p in per_recipe.items()
            ]
            items.append(f'<div class="item">{"".join(html)}</div>')
        parts.append(f"<h3>{escape(suite)} / {escape(benchmark)}</h3>\n" + "\n".join(items))
    return "<h2>What the models answered</h2>\n" + "\n".join(parts) if parts else ""


def _generation(by_recipe: dict[str, list[Run]], files: Path, n: int = 4) -> str:
    """The images a discrete model generated, beside their prompts and the real renders."""
    parts = []
    for recipe, runs in by_recipe.items():
        folder = runs[0].path / runs[0].eval_dir / "generation"
        if not (folder / "prompts.tsv").exists():
            continue
        rows = []
        for line in (folder / "prompts.tsv").read_text().splitlines()[:n]:
            index, prompt = line.split("\t", 1)
            pictures = []
            for png in sorted(folder.glob(f"{index}-*.png")):
                name = f"generation/{recipe}-{png.name}"
                (files / name).parent.mkdir(exist_ok=True)
                shutil.copyfile(png, files / name)
                pictures.append(f"{_img(name, png.stem, css='')}<br>{escape(png.stem.split('-', 1)[1])}")
            rows.append([escape(prompt), *pictures])
        parts.append(f"<h3>{escape(recipe)}</h3>\n" + _table(["prompt", "images"], rows))
    return "<h2>Generated images</h2>\n" + "\n".join(parts) if parts else ""


def _share(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"


def _mixtures(by_recipe: dict[str, list[Run]]) -> str:
    """Each recipe's sources (weight, share trained, manifest hash) and, for a curriculum, its stages."""
    parts = []
    for recipe, runs in by_recipe.items():
        mixture = runs[0].results.get("mixture") or {}
        sources = mixture.get("sources") or {}
        if not sources:
            continue
        realised = mixture.get("realised") or {}
        rows = [
            [
                escape(name),
                _share(s.get("weight")) if s.get("weight") is not None else "by stage",
                _share(realised.get(name, {}).get("sample_share")),
                str(s.get("num_samples", "")),
                f"<code>{escape(str(s.get('content_hash', ''))[:12])}</code>",
                escape(shown_path(s.get("path", ""), (runs[0].results.get("config") or {}).get("data", {}))),
            ]
            for name, s in sorted(sources.items())
        ]
        head = ["source", "weight", "share trained", "samples", "manifest hash", "path"]
        parts.append(f"<h3>{escape(recipe)}</h3>\n" + _table(head, rows))
        stages = [
            [escape(str(st.get("name"))), _share(st.get("fraction")), escape(json.dumps(st.get("mixture")))]
            for st in mixture.get("stages") or []
        ]
        if stages:
            parts.append(_table(["stage", "fraction of the budget", "mixture"], stages))
    return "<h2>Mixtures as trained</h2>\n" + "\n".join(parts) if parts else ""


def shown_path(path: str, data: dict[str, Any]) -> str:
    """A source's path as a committed report shows it: under the run's data root, from the root's own
    name on (no machine's absolute path); elsewhere (the user's own dataset) as given."""
    root = data.get("root")
    if not path or not root:
        return str(path)
    try:
        return str(Path(Path(root).name) / Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_diff(by_recipe: dict[str, list[Run]], baseline: str) -> str:
    """The config keys whose values differ between recipes (first seeds; run_dir and seed left out)."""
    configs = {r: _flat(runs[0].results.get("config") or {}) for r, runs in by_recipe.items()}
    configs = {r: c for r, c in configs.items() if c}
    if len(configs) < 2:
        return ""
    keys = sorted({k for c in configs.values() for k in c} - {"run_dir", "seed"})
    differ = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1]
    rows = [
        [f"<code>{escape(k)}</code>", *(escape(json.dumps(c.get(k))) for c in configs.values())]
        for k in differ
    ]
    return "<h2>Config differences</h2>\n" + _table(["key", *configs], rows)
