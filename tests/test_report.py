"""Recipe comparison on planted results: CIs cover the planted means, the paired test finds a planted
difference and none where there is none; the CLI writes markdown, CSV and a PNG."""

import base64
import copy
import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mmkd.data_builders.sources import world_dir
from mmkd.eval.compare import compare, find_runs, group_averages, levels, paired_p_value
from mmkd.eval.doc_tables import regenerate
from mmkd.eval.html_report import curve_styles
from mmkd.eval.readme_results import agreement
from tests.conftest import REPO, run_python
from tests.html_page import read_page

ITEMS = 400
EFFECT = 0.10


DATA = {"root": "", "world": {"image_size": 48}, "sizes": {"caption0": 10}}  # a saved config's `data`


def _plant_data(root):
    """What the HTML report reads from a run's data root: a world benchmark with its images and a
    knowledge-density report (launch/build.py +knowledge=true), in their real formats."""
    data = DATA | {"root": str(root / "data")}
    bench = world_dir(data) / "bench"
    bench.mkdir(parents=True)
    png = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 30, 30)).save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()
    items = [
        {"id": f"counting-{i}", "question": "How many?", "answer": "2", "image": image} for i in range(ITEMS)
    ]
    (bench / "counting.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    kd = {
        "sources": {
            "caption0": {"n": 3, "histogram": {"2": 1, "5": 2}},
            "vqa0": {"n": 2, "histogram": {"1": 2}},
        }
    }
    (root / "data" / "reports").mkdir()
    (root / "data" / "reports" / "knowledge-baseline.json").write_text(json.dumps(kd))
    return data


def _plant(root, recipe, seed, probs, rng, data):
    """A run directory in the pipeline's format whose item scores are Bernoulli(probs)."""
    run = root / f"{recipe}-s{seed}"
    (run / "eval").mkdir(parents=True)
    hits = (rng.random(ITEMS) < probs).astype(float)
    records = [
        {
            "suite": "world",
            "benchmark": "counting",
            "id": f"counting-{i}",
            "question": "How many?",
            "answer": "2",
            "prediction": "2" if h else "3",
            "score": float(h),
        }
        for i, h in enumerate(hits)
    ]
    metrics = [{"step": k, "loss": 5.0 / k, "lr": 1e-3, "tokens_per_s": 100.0 + seed} for k in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    records += [  # a caption metric on another scale: reported, not averaged
        {"suite": "world", "benchmark": "captioning", "id": f"cap-{i}", "score": float(rng.random() * 0.5)}
        for i in range(50)
    ]
    records += [  # other suites: a text task, a custom suite, a dataset scored only as a whole
        {"suite": "lm_eval", "benchmark": "mmlu_pro", "id": f"q{i}", "score": float(i % 2)} for i in range(10)
    ]
    records += [{"suite": "mine", "benchmark": "mine", "id": f"m{i}", "score": 1.0} for i in range(5)]
    gain = {"baseline": 0.05, "better": 0.08, "same": 0.05}[recipe]
    records += [  # a discrete run's generation: a share, and the prompt gain in nats per code
        {"suite": "generation", "benchmark": m, "id": f"generation-{i:05d}", "score": v}
        for i in range(20)
        for m, v in (("object_p", float(i % 4 == 0)), ("prompt_gain", gain + 0.02 * (i % 2)))
    ]
    records += [{"suite": "vlmeval", "benchmark": "MMBench", "id": f"v{i}", "score": None} for i in range(5)]
    (run / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    suites = {
        "world": {"counting": {"metric": "accuracy"}, "captioning": {"metric": "cider"}},
        "lm_eval": {"mmlu_pro": {"metric": "acc"}},
        "mine": {"mine": {"metric": "exact_match"}},
        "vlmeval": {"MMBench": {"metric": "vlmeval"}},
        "generation": {
            "object_p": {"metric": "object_p", "random_ids": 0.1},
            "prompt_gain": {"metric": "prompt_gain"},
            "reader_fd": {"metric": "reader_fd", "random_ids": 20.0},
        },
    }
    chair_i = {"baseline": 10.0, "better": 4.0, "same": 10.0}[recipe] + seed  # what its captions claim
    quality = {k: [v, v - 1, v + 1] for k, v in (("chair_i", chair_i), ("chair_s", 20.0), ("recall", 50.0))}
    silent = (recipe, seed) == ("same", 0)  # its captions assert nothing: CapScore is undefined
    capscore = [float("nan") if silent else 90.0] * 3
    suites["world"]["captioning"]["caption_quality"] = quality | {"ana": [3.0] * 3, "capscore": capscore}
    suites["world"]["counting"] |= {"chance": 0.25, "blind": 0.3}
    results = {"recipe": recipe, "seed": seed, "suites": suites}
    weight = {"baseline": 0.5, "better": 0.7, "same": 0.5}[recipe]
    results["config"] = {"seed": seed, "data": data, "recipe": {"mixture": {"caption0": weight}}}
    # How generation was prompted: the recipe's documents (better), eval's override (same), plain.
    results["config"]["recipe"]["image_prompt"] = "ic" if recipe == "better" else ""
    results["config"]["eval"] = {"image_prompt": "mmgic" if recipe == "same" else ""}
    results["config"]["train"] = {"budget_samples": 1000, "budget_tokens": 0}
    caption0 = f"{data['root']}/world-x/caption0"  # under the data root: shown from the root's name on
    source = {"weight": weight, "num_samples": 10, "content_hash": "ab" * 32, "path": caption0}
    results["mixture"] = {"sources": {"caption0": source}, "realised": {"caption0": {"sample_share": weight}}}
    if recipe == "same":  # a curriculum: no weight per source, a mixture per stage
        source["weight"] = None
        results["mixture"]["stages"] = [
            {"name": "warm", "fraction": 0.5, "mixture": {"caption0": 1.0}},
            {"name": "mixed", "fraction": 0.5, "mixture": {"caption0": 0.5}},
        ]
    share = {"baseline": 0.5, "better": 0.75, "same": 0.5}[recipe] + 0.01 * seed  # concept overlap
    results["concepts"] = {"world/captioning": {"concepts": 40, "by_source": {}, "all": share}}
    results["seed_dimensions"] = {"Instance Counting": {"n": ITEMS, "score": float(hits.mean()), "ci95": 0.0}}
    results["seed_dimensions"]["Instance Interaction"] = None
    (run / "eval" / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = _plant_data(tmp_path_factory.mktemp("world"))
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, ITEMS)  # per-item difficulty, shared by the recipes
    probs = {"baseline": base, "better": base + EFFECT, "same": base}
    for recipe, p in probs.items():
        for seed in range(3):
            _plant(root, recipe, seed, p, rng, data)
    return root, {k: float(v.mean()) for k, v in probs.items()}


def test_cis_cover_the_planted_means_and_the_paired_test_finds_the_planted_difference(planted):
    root, means = planted
    rows = {(r.benchmark, r.recipe): r for r in compare(find_runs([root]), "baseline")}
    for recipe, mean in means.items():
        r = rows[("counting", recipe)]
        assert r.seeds == [0, 1, 2] and r.n_items == ITEMS
        assert r.ci[0] < mean < r.ci[1], (recipe, r.ci, mean)
    better, same = rows[("counting", "better")], rows[("counting", "same")]
    assert better.delta_ci[0] < EFFECT < better.delta_ci[1] and better.delta_ci[0] > 0
    assert better.p_value < 0.001 and better.p_bootstrap < 0.01
    assert same.delta_ci[0] < 0 < same.delta_ci[1] and same.p_value > 0.05 and same.p_bootstrap > 0.05
    assert rows[("counting", "baseline")].delta is None


def test_category_averages_weigh_benchmarks_alike_and_find_the_planted_difference(planted):
    root, _ = planted
    runs = find_runs([root])
    averages = {(a.group, a.recipe): a for a in group_averages(runs, "baseline")}
    # CIDEr is left out, MMBench has no per-item scores: counting alone is the multimodal average.
    assert {g for g, _ in averages} == {"general multimodal", "general text", "custom"}
    mm = averages[("general multimodal", "better")]
    rows = {(r.benchmark, r.recipe): r for r in compare(runs, "baseline")}
    assert mm.benchmarks == ["counting"] and mm.mean == pytest.approx(rows[("counting", "better")].mean)
    assert mm.delta_ci[0] > 0 and mm.p_bootstrap < 0.01
    same = averages[("general multimodal", "same")]
    assert same.delta_ci[0] < 0 < same.delta_ci[1]
    assert averages[("general multimodal", "baseline")].delta is None
    assert averages[("custom", "better")].benchmarks == ["mine"]  # generation is not averaged
    assert levels(runs)[("generation", "object_p")] == (0.1, None)  # its floor stands for chance
    # The world's text-only knowledge questions count as general text, beside an lm-eval task.
    knowledge = copy.deepcopy(runs[0])
    knowledge.items[("world", "knowledge")] = {"k1": 1.0, "k2": 1.0}
    text = group_averages([knowledge], runs[0].recipe)[1]
    assert sorted(text.benchmarks) == ["knowledge", "mmlu_pro"]
    assert text.mean == pytest.approx((1.0 + 0.5) / 2)  # 2 items and 10 weigh alike (pooled: 7 / 12)


def test_agreement_with_the_paper_reads_the_ci():
    assert agreement(0.01, [0.02, 0.1]) == "same" and agreement(-0.01, [-0.1, -0.02]) == "same"
    assert agreement(0.01, [-0.1, -0.02]) == "opposite" and agreement(0.01, [-0.1, 0.02]) == "not resolved"


def test_paired_test_uses_the_pairing():
    """Item difficulty varies far more than the effect: only a paired test can see it."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 1, 300)
    base, other = difficulty[None], (difficulty + 0.02)[None]
    assert paired_p_value(base, other) < 0.001
    assert paired_p_value(base, base) == 1.0


def test_report_cli_writes_markdown_csv_and_png(planted, tmp_path):
    root, _ = planted
    out = tmp_path / "report"
    stdout = run_python([str(REPO / "launch/report.py"), f"runs={root}", f"out={out}"])
    assert "| counting (accuracy) | better | 3 | 400 |" in stdout and "9 runs ->" in stdout
    text = (out / "report.md").read_text()
    assert "| baseline | " in text and "average" in text
    # The paper's order: general multimodal, general text, custom; MMBench has no per-item scores.
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    # Generation (a discrete model's) is reported beside them and not averaged.
    assert headings[:4] == [
        "## world (general multimodal)",
        "## lm_eval (general text)",
        "## generation (text to image, discrete model)",
        "## mine (custom)",
    ]
    generation = text.split(headings[2])[1].split(headings[3])[0]
    assert "average" not in generation and "| object_p (object_p) | better | 3 | 20 | 25.0 [" in generation
    gain = rows_of(generation, "| prompt_gain (prompt_gain) | better |")[0]  # nats per code, not %
    assert "| 3 | 20 | 0.090 [" in gain and "| 0.030 [" in gain
    # Seed 003's per-dimension breakdown and concept overlap, means over the three seeds.
    assert headings[4:] == [
        "## Signal, noise and the metric to read",  # no run recorded noise.json: SNR is a dash (test_decide)
        "## SEED-Bench dimensions on the world (%, mean over seeds)",
        "## Concept overlap: the captioning benchmark's concepts seen in training (%)",
        "## Generation floor: random visual ids through each run's tokenizer (%, mean over seeds)",
        "## Generation prompts: what each recipe's model read before drawing (<caption>: the text)",
        "## What the models' captions claim (world captioning; CHAIR and CapScore in %, mean over seeds)",
    ]
    assert "| better | 76.0 |" in text and "| baseline | 51.0 |" in text
    assert "| recipe | ANA | CHAIR_i | CHAIR_s | CapScore | recall |" in text
    assert "| better | 3.0 | 5.0 | 20.0 | 90.0 | 50.0 |" in text
    assert "| same | 3.0 | 11.0 | 20.0 | 90.0 | 50.0 |" in text  # over the seeds that define CapScore
    assert "| recipe | object_p |\n| --- | ---: |\n| baseline | 10.0 |" in text  # reader-FD is no share
    prompts = "| baseline | `<caption><image>` |\n| better | `Caption: <caption>\\nImage: <image>` |\n"
    assert prompts + "| same | `# Detailed Analysis of Objects in the Image\\n\\nCaption: <caption>" in text
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert {(r["benchmark"], r["recipe"]) for r in rows} == {
        (b, r)
        for b in ("counting", "captioning", "mmlu_pro", "mine", "object_p", "prompt_gain")
        for r in ("baseline", "better", "same")
    }
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # report.json -> a README section, with the paper's averages beside ours.
    paper = {"source": "Paper: Table 9.", "general multimodal": {"Table 9": {"baseline": 0.5, "better": 0.6}}}
    (out / "paper.json").write_text(json.dumps(paper))
    readme = tmp_path / "README.md"
    begin = (
        f"<!-- generated from {out.name} by recipe_comparison: python launch/doc_tables.py rewrites it -->"
    )
    readme.write_text(f"# x\n{begin}\nSTALE\n<!-- end of the section generated from {out.name} -->\ntail\n")
    text = regenerate(readme.read_text(), tmp_path)
    assert "STALE" not in text and text.startswith("# x\n") and text.endswith("-->\ntail\n")
    assert "| benchmark | baseline | better | same | chance | blind |" in text
    assert "3 recipes x seeds 0, 1, 2 (9 runs, 1,000 samples each)" in text
    counting = rows_of(text, "| counting |")[0].split(" | ")
    assert counting[-2:] == ["25.0", "30.0 |"]  # chance and blind
    better = rows_of(text, "| better |")[0]
    assert "+10.00 (Table 9) | same |" in better and "Paper: Table 9." in text
    held = rows_of(text, "- better: ")[0]
    assert "counting +" in held and "prompt_gain +0.030 [" in held and "- same: none" in text


def rows_of(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def test_report_names_a_missing_baseline_and_an_unevaluated_folder(planted, tmp_path):
    root, _ = planted
    with pytest.raises(ValueError, match="baseline recipe 'nope' has no runs; recipes found"):
        compare(find_runs([root]), "nope")
    with pytest.raises(FileNotFoundError, match=r"no eval/results\.json under"):
        find_runs([tmp_path])


def test_report_html_holds_every_section_and_every_picture_it_names(planted, tmp_path):
    root, _ = planted
    out = tmp_path / "report"
    run_python([str(REPO / "launch/report.py"), f"runs={root}", f"out={out}", "baseline=baseline"])
    page = read_page(out / "report.html")
    assert page.headings == [
        "Training",
        "Scores",
        "Signal, noise and the metric to read",
        "Knowledge density (seed 000 Fig. 4)",
        "What the models answered",
        "Mixtures as trained",
        "Config differences",
    ]
    assert {"report_files/curves.png", "report_files/scores.png", "report_files/knowledge.png"} <= page.images
    # The gallery: counting items where the recipes answered differently first, each with its image.
    gallery = sorted(i for i in page.images if i.startswith("report_files/gallery/"))
    assert len(gallery) == 4 and all(
        i.startswith("report_files/gallery/world-counting-counting-") for i in gallery
    )
    assert "better: 2 ✓" in page.text or "better: 3 ✗" in page.text
    # Deltas and both p-values as in the markdown; the mixture and the config key the recipes differ in.
    assert "counting (accuracy)" in page.text and "p (seeds + items)" in page.text
    assert "abababababab" in page.text and "recipe.mixture.caption0" in page.text
    assert "caption0 by stage" in page.text and "mixed 0.500" in page.text  # the curriculum's stages
    assert "data/world-x/caption0" in page.text and "pytest-of" not in page.text  # no machine's path
    # Seeds of one recipe share its colour and differ in line style.
    styles = curve_styles([("baseline", 2), ("better", 0), ("baseline", 0), ("baseline", 1)])
    assert styles[("baseline", 0)] == ("C0", "-") and styles[("baseline", 2)] == ("C0", ":")
    assert styles[("better", 0)] == ("C1", "-")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium: apt-get install chromium")
def test_the_report_page_loads_in_a_browser_with_every_picture(planted, tmp_path):
    root, _ = planted
    out = tmp_path / "report"
    run_python([str(REPO / "launch/report.py"), f"runs={root}", f"out={out}"])
    check = [str(REPO / "bench/report_in_browser.py"), str(out / "report.html")]
    result = json.loads(run_python([*check, "--screenshot", str(tmp_path / "shot.png")]))
    assert result["images"] == 7 and result["broken"] == [] and result["console"] == []
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "report_files" / "curves.png").unlink()  # a picture gone: the browser check says which
    with pytest.raises(AssertionError, match=r"broken pictures \['report_files/curves\.png'\]"):
        run_python(check)
