"""The README's loop end to end through the real entry points, on the micro model and a small world."""

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mmkd.bench_item import load_benchmark
from mmkd.world.benchmarks import ABILITIES
from tests.conftest import REPO, SMALL_SIZES, data_overrides, run_python, torchrun
from tests.html_page import read_page
from tests.test_custom_suites import write_suites


def _run(args, cwd):
    return run_python(args, timeout=600, cwd=cwd)


def test_train_then_eval_then_eval_only(world, tmp_path):
    data, _ = world
    run = tmp_path / "run"
    command = [
        str(REPO / "launch/train.py"),
        "recipe=baseline",
        "model=micro",
        "train=smoke",
        "eval.max_items=8",
        "eval.noise_checkpoints=3",  # the default; kept checkpoints in the instruction stage:
        "train.checkpoint_every=1",
        "train.keep_checkpoints=3",
        f"run_dir={run}",
        *data_overrides(data),
    ]
    stdout = _run(command, tmp_path)
    assert "| existence | accuracy | 8 |" in stdout and "| counting |" in stdout
    for name in (
        "config.yaml",
        "mixture.json",
        "metrics.jsonl",
        "eval/results.json",
        "eval/report.md",
        "eval/predictions.jsonl",
        "checkpoints/final/COMMITTED",
    ):
        assert (run / name).exists(), name
    mixture = json.loads((run / "mixture.json").read_text())
    assert mixture["weight_unit"] == "samples"
    assert {k: v["weight"] for k, v in mixture["sources"].items()} == {
        "caption0": 0.28,
        "vqa0": 0.17,
        "text": 0.40,
        "other": 0.15,
        "instruct": None,  # the default protocol's instruction stage, the last 20% (docs/protocol.md)
    }
    assert [(s["name"], s["fraction"], s["mixture"]) for s in mixture["stages"]][1] == (
        "sft",
        0.2,
        {"instruct": 1},
    )
    assert all(len(v["content_hash"]) == 64 for v in mixture["sources"].values())
    # The mixture as trained: 512 samples (16 steps of 32), each source's sample and token share.
    realised = mixture["realised"]
    assert (
        realised.keys() == mixture["sources"].keys() and sum(r["samples"] for r in realised.values()) == 512
    )
    assert abs(sum(r["token_share"] for r in realised.values()) - 1) < 1e-9
    assert abs(realised["text"]["sample_share"] - 0.8 * 0.40) < 0.1
    results = json.loads((run / "eval/results.json").read_text())["suites"]["world"]
    assert set(results) == set(ABILITIES)
    for r in results.values():
        assert r["n"] == 8 and r["blind"] >= 0 and (r["chance"] is None or 0 <= r["chance"] <= 1)
    assert abs(results["existence"]["chance"] - 0.5) < 1e-9
    assert abs(results["captioning"]["cider_coco"] - results["captioning"]["score"]) < 1e-9
    quality = results["captioning"]["caption_quality"]  # what the model's captions claim, exactly
    assert quality["captions"] == 8 and {"chair_i", "chair_s", "recall", "ana", "capscore"} <= quality.keys()
    assert set(results["existence"]["pope"]) == {"random", "popular", "adversarial"}
    # Continuous scores beside each metric (eval/continuous.py), summarised and per item.
    assert set(results["existence"]["continuous"]) == {"p_correct"}
    assert set(results["ocr"]["continuous"]) == {"nll_token", "bits_per_byte"}
    assert set(results["captioning"]["continuous"]) == {"nll_token"}
    assert 0 < results["counting"]["continuous"]["p_correct"]["score"] < 1
    lines = [json.loads(x) for x in (run / "eval/predictions.jsonl").read_text().splitlines()]
    assert all(0 <= r["continuous"]["p_correct"] <= 1 for r in lines if r["benchmark"] == "attribute")
    assert "| &nbsp;&nbsp;existence | p_correct |" in stdout
    # Noise within the run: the final checkpoint and the two kept before it in the instruction stage.
    noise = json.loads((run / "eval/noise.json").read_text())
    assert noise["checkpoints"] == ["step-00000014", "step-00000015", "final"] and noise["steps"] == [
        14,
        15,
        16,
    ]
    assert noise["scores"]["world"]["existence"]["accuracy"][-1] == results["existence"]["score"]
    assert len(noise["scores"]["world"]["ocr"]["bits_per_byte"]) == 3
    for name in noise["checkpoints"][:-1]:
        assert (run / "eval/noise" / name / "results.json").exists()
    assert "POPE adversarial" in stdout
    assert "seed: 0" in (run / "config.yaml").read_text()
    # Rerun as it was: nothing is trained or evaluated again, and the table is printed as it stands.
    stamps = [(run / f).stat().st_mtime_ns for f in ("checkpoints/final/COMMITTED", "eval/results.json")]
    again = _run(command, tmp_path)
    assert "nothing to train" in again and "already holds this checkpoint's evaluation" in again
    assert "| existence | accuracy | 8 |" in again
    assert stamps == [
        (run / f).stat().st_mtime_ns for f in ("checkpoints/final/COMMITTED", "eval/results.json")
    ]

    assert results == json.loads((run / "eval/results.json").read_text())["suites"]["world"]
    saved = json.loads((run / "eval/results.json").read_text())
    assert saved["mixture"]["sources"].keys() == mixture["sources"].keys() and saved["code"]["version"]
    assert saved["config"]["train"]["budget_samples"] == 512
    recall = saved["probes"]["fact_recall"]  # what the model knows, beside how it answers
    assert (
        recall["facts"] == 24 and 0 <= recall["fact_recall"] <= 1 and 0.1 < recall["fact_recall_chance"] < 0.3
    )
    assert "Fact recall (the encyclopedia's 24 facts" in (run / "eval/report.md").read_text()
    leaks = saved["contamination"]["benchmarks"]
    assert set(leaks) == {f"world/{a}" for a in ABILITIES}
    # Benchmark scenes have held-out compositions: no world item shares an image with training.
    assert all(e["image_overlap"] == 0 and not e["image_examples"] for e in leaks.values())
    assert "Decontamination" in (run / "eval/report.md").read_text()
    # The run's own page: its curves, bars, and what it answered beside each benchmark image.
    page = read_page(run / "eval/report.html")
    assert page.headings == ["Training", "Scores", "What the models answered", "Mixtures as trained"]
    assert {f"report_files/gallery/world-existence-existence-{i}.png" for i in range(4)} <= page.images

    # Eval-only on the final checkpoint reproduces the automatic scores exactly, and adds custom suites.
    write_suites(world[1], tmp_path)
    custom = [f"custom.mine={tmp_path / 'mine.jsonl'}", f"custom.vlm={tmp_path / 'vlm.tsv'}"]
    lm_eval = "lm_eval_tasks=[mmkd_world_knowledge]"
    vlmeval = ["vlmeval_datasets=[vlm]", f"vlmeval_data={tmp_path}"]  # the TSV is in VLMEvalKit's layout
    stdout = _run(
        [
            str(REPO / "launch/eval.py"),
            f"checkpoint={run}",
            "max_items=8",
            *custom,
            lm_eval,
            *vlmeval,
            "noise_checkpoints=2",
        ],
        tmp_path,
    )
    again = json.loads((run / "eval-final/results.json").read_text())["suites"]
    assert again["world"] == results
    # Eval-only measures noise as training did: the same scores at the checkpoint before the final.
    noise_again = json.loads((run / "eval-final/noise.json").read_text())
    assert noise_again["checkpoints"] == noise["checkpoints"][1:]
    world_noise = noise_again["scores"]["world"]
    assert world_noise["spatial"]["p_correct"] == noise["scores"]["world"]["spatial"]["p_correct"][1:]
    assert "mine" in noise_again["scores"] and "lm_eval" not in noise_again["scores"]  # too slow to repeat
    assert again["mine"]["mine"]["n"] == 5 and again["vlm"]["vlm"]["n"] == 3
    assert again["lm_eval"]["mmkd_world_knowledge"]["n"] == 8  # eval.max_items limits lm-eval too
    # The custom suites' pictures were taken from the vqa0 training shards: decontamination says so.
    leaks = json.loads((run / "eval-final/contamination.json").read_text())["benchmarks"]
    assert leaks["mine/mine"]["image_overlap"] == 4 and leaks["vlm/vlm"]["image_overlap"] == 3
    assert leaks["vlmeval/vlm"]["image_overlap"] == 3
    assert again["vlmeval"]["vlm"]["n"] == 3 and "Overall" in again["vlmeval"]["vlm"]["official"]
    assert "(VLMEvalKit's score)" in stdout
    lines = [json.loads(x) for x in (run / "eval-final/predictions.jsonl").read_text().splitlines()]
    mine = {r["id"]: r for r in lines if r["suite"] == "mine"}
    assert {r["metric"] for r in mine.values()} == {"multiple_choice", "exact_match", "anls", "box_iou"}
    assert mine["mc"]["prediction"] in ("ball", "box") and "iou" in mine["box"]
    assert "| mine | mixed | 5 |" in stdout and "| vlm | multiple_choice | 3 |" in stdout
    # The page shows a custom suite's items with their pictures, as the world's.
    pictures = read_page(run / "eval-final/report.html").images
    assert len([i for i in pictures if i.startswith("report_files/gallery/mine-mine-")]) == 4
    # One image and a question, or none for a caption: the answer the benchmarks would read.
    item = load_benchmark(world[1] / "bench" / "ocr.jsonl")[0]
    item.image.save(tmp_path / "sign.png")
    asked = [str(REPO / "launch/ask.py"), f"checkpoint={run}", f"image={tmp_path / 'sign.png'}"]
    answer = _run([*asked, f"question={item.question}"], tmp_path).strip()
    ocr = next(r for r in lines if r["benchmark"] == "ocr" and r["id"] == item.id)
    assert answer == ocr["prediction"]  # the same greedy answer as its evaluation gave
    assert _run(asked, tmp_path).strip()  # a caption
    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad = subprocess.run(
        [sys.executable, *asked[:2], f"image={tmp_path / 'bad.png'}"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "not a readable image" in bad.stderr and "Traceback" not in bad.stderr
    # A second eval-only of the same checkpoint does not silently replace the first.
    again = subprocess.run(
        [sys.executable, str(REPO / "launch/eval.py"), f"checkpoint={run}"], capture_output=True, text=True
    )
    assert again.returncode != 0 and f"{run / 'eval-final'} already holds" in again.stderr
    assert "overwrite=true" in again.stderr
    # Nor does one start into a directory another running evaluation holds (its LOCK, a live process).
    holder = subprocess.Popen(["sleep", "60"])
    try:
        held = run / "eval-held"
        held.mkdir()
        (held / "LOCK").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "since": 0}))
        again = subprocess.run(
            [sys.executable, str(REPO / "launch/eval.py"), f"checkpoint={run}", f"out={held}", "max_items=2"],
            capture_output=True,
            text=True,
        )
    finally:
        holder.kill()
    assert again.returncode != 0 and f"in use by process {holder.pid} on this host" in again.stderr
    assert "give another out=DIR" in again.stderr and not (held / "results.json").exists()


def test_build_writes_detection_annotations_in_coco_format(world, tmp_path):
    data, root = world
    _run([str(REPO / "launch/build.py"), "+detection=true", *data_overrides(data)], tmp_path)
    coco = json.loads((root / "detection-coco" / "instances.json").read_text())
    assert len(coco["images"]) == SMALL_SIZES["detection"]
    assert {c["name"] for c in coco["categories"]} == {"ball", "box", "tent", "star", "kite", "ring"}
    ann = coco["annotations"][0]
    assert set(ann) >= {"id", "image_id", "category_id", "bbox", "area", "attributes"}
    x, y, w, h = ann["bbox"]
    assert w > 0 and h > 0 and x + w <= 48 and y + h <= 48
    ids = {a["id"] for a in coco["annotations"]}
    assert all(r["subject_id"] in ids and r["object_id"] in ids for r in coco["relations"])
    assert all((root / "detection-coco" / "images" / im["file_name"]).exists() for im in coco["images"])
    captions = json.loads((root / "detection-coco" / "captions.json").read_text())["annotations"]
    assert sorted(c["image_id"] for c in captions) == sorted(im["id"] for im in coco["images"])
    assert all(5 <= len(c["caption"].split()) <= 25 for c in captions)  # seed 003 F.4's length filter
    # ... read back through the real detection adapter into a dataset (MMGIC's input).
    assert (root / "detection" / "manifest.json").exists()


def _sweep_seeds(data, tmp_path, *launcher):
    """Two tiny runs (seeds 0 and 1) as a Hydra multirun; returns their final checkpoint dirs."""
    _run(
        [
            str(REPO / "launch/train.py"),
            "-m",
            *launcher,
            "recipe=baseline",
            "seed=0,1",
            "model=micro",
            "train=smoke",
            "train.budget_samples=64",
            "eval.after_train=false",
            *data_overrides(data),
        ],
        tmp_path,
    )
    return [tmp_path / "runs" / "baseline" / f"seed{s}" / "checkpoints" / "final" for s in (0, 1)]


# Two training runs each; the docs tests run the README's multirun sweep on every CI run.
@pytest.mark.slow
def test_multirun_sweep_gives_each_seed_its_own_run_dir(world, tmp_path):
    finals = _sweep_seeds(world[0], tmp_path)
    assert all(f.exists() for f in finals)
    configs = [(f.parent.parent / "config.yaml").read_text() for f in finals]
    assert "seed: 0" in configs[0] and "seed: 1" in configs[1]


@pytest.mark.slow
def test_sweep_through_submitit_and_the_slurm_launcher_config(world, tmp_path):
    """submitit's local executor runs the sweep's jobs as it would on SLURM; the slurm config composes."""
    assert all(f.exists() for f in _sweep_seeds(world[0], tmp_path, "hydra/launcher=submitit_local"))
    slurm = _run([str(REPO / "launch/train.py"), "hydra/launcher=slurm", "--cfg", "hydra"], tmp_path)
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in slurm
    assert "timeout_min: 720" in slurm and "signal_delay_s: 120" in slurm and "max_num_timeout: 3" in slurm


@pytest.mark.slow
def test_a_local_sweep_runs_its_jobs_side_by_side(world, tmp_path):
    """hydra/launcher=local_parallel: joblib runs the seeds as two processes of one thread each."""
    one_thread = ("hydra/launcher=local_parallel", "train.threads=1", "data.num_workers=0")
    assert all(f.exists() for f in _sweep_seeds(world[0], tmp_path, *one_thread))
    config = _run(
        [str(REPO / "launch/train.py"), "hydra/launcher=local_parallel", "--cfg", "hydra"], tmp_path
    )
    assert "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher" in config
    assert "n_jobs: 2" in config


def test_recipe_trains_on_a_dataset_given_by_path(world, tmp_path):
    """caption_only needs Caption1; a dataset written by ShardWriter elsewhere plugs in by path."""
    from itertools import islice

    from mmkd.schema import Sample
    from mmkd.shards import ShardWriter, open_dataset

    data, root = world
    with ShardWriter(tmp_path / "caption1", "caption1", {"builder": "test"}, samples_per_shard=50) as w:
        for s in islice(open_dataset(root / "caption0"), 120):
            w.write(
                Sample(
                    id=s.id.replace("caption0", "caption1"),
                    kind="caption",
                    source="caption1",
                    images=s.images,
                    text=s.text,
                    caption_tag="Caption1",
                )
            )
    run = tmp_path / "run"
    _run(
        [
            str(REPO / "launch/train.py"),
            "recipe=caption_only",
            "model=micro",
            "train=smoke",
            "train.budget_samples=64",
            "eval.after_train=false",
            "train.trace_samples=true",
            f"+data.sources.caption1={tmp_path / 'caption1'}",
            f"run_dir={run}",
            *data_overrides(data),
        ],
        tmp_path,
    )
    mixture = json.loads((run / "mixture.json").read_text())["sources"]
    assert mixture["caption1"]["path"] == str(tmp_path / "caption1") and "vqa0" not in mixture
    trained = (run / "samples.rank0.txt").read_text().split()
    assert any(t.startswith("caption1-") for t in trained) and not any(t.startswith("vqa0-") for t in trained)


def test_pair_caption_v2_builds_its_pair_captions_and_trains_under_torchrun(world, tmp_path):
    """The README main job, small: rank 0 builds pair captions with the world oracle; both ranks train."""
    data, _ = world
    run = tmp_path / "run"
    stdout = _run(
        [
            *torchrun(2),
            str(REPO / "launch/train.py"),
            "recipe=pair_caption_v2",
            "model=micro",
            "train=smoke",
            "train.budget_samples=128",
            "train.trace_samples=true",
            "eval.max_items=4",
            "eval.abilities=[existence]",
            f"run_dir={run}",
            *data_overrides(data),
        ],
        tmp_path,
    )
    assert "| existence | accuracy | 4 |" in stdout
    mixture = json.loads((run / "mixture.json").read_text())["sources"]
    assert set(mixture) == {"pair_caption", "vqa0", "text", "other", "instruct"}
    built = mixture["pair_caption"]["path"]
    assert "/annotated/pair_caption-" in built and mixture["pair_caption"]["kinds"]["pair"] > 0
    trained = [t for r in (0, 1) for t in (run / f"samples.rank{r}.txt").read_text().split()]
    assert any(t.startswith("pair_caption-") for t in trained)
    assert not any(t.startswith("caption0-") for t in trained)


def test_build_cli_builds_what_a_recipe_lacks_and_reports_knowledge_density(world, tmp_path):
    data, _ = world
    stdout = _run(
        [
            str(REPO / "launch/build.py"),
            "recipe=synthetic_vqa",
            "+knowledge=true",
            "build.knowledge_sources=[vqa0,vqa1]",
            *data_overrides(data),
        ],
        tmp_path,
    )
    assert "vqa1: " in stdout and "/annotated/vqa1-" in stdout
    assert "| vqa1 |" in stdout and "ratio to vqa0" in stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "build.log").exists()  # not a run
    table = json.loads((Path(data.root) / "reports" / "knowledge-synthetic_vqa.json").read_text())
    kd = {name: s["mean"] for name, s in table["sources"].items()}
    assert table["reference"] == "vqa0" and kd["vqa1"] > kd["vqa0"] > 0


@pytest.mark.slow  # four build processes at once on 2 cores; test_builders covers shard-parallel builds
def test_a_two_stage_build_runs_in_one_submission_over_four_processes(world, tmp_path):
    """Pair captions need every image's semantic analysis first: four build.shard processes started
    together by submitit's local executor (as on SLURM) wait for each other between the stages and
    write the shards one process writes alone, byte for byte."""
    data, _ = world
    root = tmp_path / "data"  # both builds in one data root: sample provenance names the input path

    def build(*args: str) -> dict[str, str]:
        overrides = [o for o in data_overrides(data) if not o.startswith("data.root=")]
        cmd = [str(REPO / "launch/build.py"), *args, "recipe=pair_caption_v2", "build.unit_size=60"]
        _run([*cmd, f"data.root={root}", *overrides], tmp_path)
        built = {
            f"{d.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
            for d in (root / "annotated").iterdir()
            for f in sorted(d.glob("*.tar")) + sorted(d.glob("part-*.jsonl"))
        }
        assert all((d / "manifest.json").exists() for d in (root / "annotated").iterdir())
        (root / "annotated").rename(root / f"annotated-{len(args)}")
        return built

    alone = build()
    together = build(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.sweep.subdir=build${hydra.job.num}",
        "build.shard=0/4,1/4,2/4,3/4",
        "build.wait_s=600",
    )
    assert len(alone) > 4 and together == alone
