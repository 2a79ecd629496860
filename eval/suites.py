"""Every eval suite on one model: the world benchmarks, lm-eval tasks, VLMEvalKit datasets and custom
suites, written as `results.json` (scores with provenance), `predictions.jsonl` (one line per item),
`report.md` and `report.html` (eval/html_report.py: curves, bars, the answers beside their images).

Called after training (`mmkd.launch.pipeline`), at periodic checkpoints (`eval.every`, `mmkd.trainer`) and
by eval-only (`launch/eval.py`); all of them evaluate a checkpoint loaded into a plain model, so the
same checkpoint always gives the same scores.
"""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import torch

import mmkd
from mmkd.bench_item import BenchItem, load_benchmark
from mmkd.checkpoint import last_checkpoints, load_checkpoint, read_meta
from mmkd.config import RunConfig
from mmkd.data_builders.noun_phrases import extractor
from mmkd.eval import concept_overlap, decontamination, few_shot, image_generation, seed_dimensions
from mmkd.eval.compare import compare, load_run
from mmkd.eval.custom import evaluate_suite, load_suite
from mmkd.eval.few_shot import with_shots
from mmkd.eval.html_report import write_html
from mmkd.eval.image_generation import evaluate_generation
from mmkd.eval.noise import NOISE_FILE, write_noise
from mmkd.eval.report import markdown_table
from mmkd.eval.world_bench import PRIOR_SOURCES, evaluate_world
from mmkd.foundations.text import fact_recall
from mmkd.materialize import materialize
from mmkd.model import VLM
from mmkd.model.build import model_on_meta
from mmkd.model.visual_tokenizer import VisualTokenizer
from mmkd.shards import write_json_atomic
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import templates_for


@functools.cache
def code_version() -> dict:
    """The package version and, in a git checkout, the commit and whether files differ from it.

    Taken once, when this module is first imported (below): a long run records the code it runs,
    not what the checkout holds by the time it evaluates."""
    repo = Path(mmkd.__file__).resolve().parents[1]
    out = {"version": mmkd.__version__, "git": None, "dirty": None}
    if (repo / ".git").exists():
        git = ["git", "-C", str(repo)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
        if head.returncode == 0:
            out |= {"git": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    return out


code_version()


def evaluate(
    model: VLM,
    cfg: RunConfig,
    tokenizer: Tokenizer,
    world_root: Path | None,
    out_dir: Path,
    title: str,
    decontaminate: bool = True,
) -> dict:
    """The eval suites on `model`: `results.json` (scores, resolved config, the mixture's manifest
    hashes, code version), `predictions.jsonl` (one line per item), `report.md` and `report.html` in
    `out_dir`; first, with `eval.decontamination`, `contamination.json` (eval items found in the
    training shards)."""
    templates = templates_for(cfg, tokenizer)
    e = cfg.eval

    def limit(items: list[BenchItem]) -> list[BenchItem]:
        return items[: e.max_items] if e.max_items else items

    full = {a: load_benchmark(world_root / "bench" / f"{a}.jsonl") for a in e.abilities}
    full_custom = {name: load_suite(path) for name, path in e.custom.items()}
    world = {a: limit(items) for a, items in full.items()}
    custom = {name: limit(items) for name, items in full_custom.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    mixture_path = Path(cfg.run_dir) / "mixture.json"
    mixture = json.loads(mixture_path.read_text()) if mixture_path.exists() else None
    contamination = None
    if decontaminate and e.decontamination and mixture:
        benchmarks = {("world", a): items for a, items in world.items()}
        benchmarks |= {(name, name): items for name, items in custom.items()}
        if e.vlmeval_datasets:
            from mmkd.eval.vlmeval_suite import data_folder, dataset_items, tsv_path

            folder = data_folder(e.vlmeval_data)
            tsvs = {name: tsv_path(name, folder) for name in e.vlmeval_datasets}
            benchmarks |= {("vlmeval", n): dataset_items(p) for n, p in tsvs.items() if p.exists()}
        if e.lm_eval_tasks:
            from mmkd.eval.lm_eval_suite import task_items

            lm_items = task_items(e.lm_eval_tasks, e.lm_eval_include, world_root, out_dir, e.max_items)
            benchmarks |= {("lm_eval", task): items for task, items in lm_items.items()}
        sources = {name: Path(s["path"]) for name, s in mixture["sources"].items()}
        contamination = decontamination.check(sources, benchmarks)
        write_json_atomic(out_dir / "contamination.json", contamination)
    concepts = None
    if decontaminate and e.concept_overlap and mixture:
        captioning = {f"world/{a}": items for a, items in world.items() if a == "captioning"}
        captioning |= {n: items for n, items in custom.items() if any(it.references for it in items)}
        sources = {name: Path(s["path"]) for name, s in mixture["sources"].items()}
        concepts = concept_overlap.overlap(sources, captioning, extractor(cfg.build.noun_phrases))
        write_json_atomic(out_dir / "concepts.json", concepts)
    suites, records = {}, []
    dimensions = None

    # Few-shot examples come from the whole benchmark, however few of its items are evaluated.
    def shots(items: list[BenchItem], name: str, pool: list[BenchItem]) -> list[BenchItem]:
        drawn = with_shots(items, e.shots, cfg.seed, name, pool)
        return few_shot.fit(drawn, templates, cfg.model.max_seq_len, e.max_new_tokens) if e.shots else drawn

    world = {a: shots(items, a, full[a]) for a, items in world.items()}
    custom = {n: shots(items, n, full_custom[n]) for n, items in custom.items()}
    if world:
        priors = PRIOR_SOURCES + (("instruct",) if "instruct" in cfg.recipe.sources() else ())
        suites["world"], records = evaluate_world(
            model, templates, world_root, world, e.batch_size, e.max_new_tokens, cfg.seed, priors
        )
        dimensions = seed_dimensions.breakdown(records)
    if e.lm_eval_tasks:
        from mmkd.eval.lm_eval_suite import evaluate_lm_eval  # optional: the [eval] extra

        suites["lm_eval"], recs = evaluate_lm_eval(
            model,
            templates,
            e.lm_eval_tasks,
            e.lm_eval_include,
            world_root,
            out_dir,
            e.batch_size,
            e.max_items,
        )
        records += [{"suite": "lm_eval", **r} for r in recs]
    if e.vlmeval_datasets:
        from mmkd.eval.vlmeval_suite import evaluate_vlmeval, judge_from  # optional: [vlmeval]

        suites["vlmeval"], recs = evaluate_vlmeval(
            model, templates, e.vlmeval_datasets, e.vlmeval_data, out_dir, judge_from(e), e.max_new_tokens
        )
        records += recs
    for name, items in custom.items():
        result, recs = evaluate_suite(model, templates, items, e.batch_size, e.max_new_tokens)
        suites[name] = {name: result}
        records += [{"suite": name, "benchmark": name, **r} for r in recs]
    generation_table = ""
    if cfg.model.family == "discrete" and e.generation_prompts:
        suites["generation"], recs = evaluate_generation(
            model,
            templates,
            model.visual_tokenizer,
            cfg.data.world,
            out_dir,
            e.generation_prompts,
            e.cfg_scale,
            e.temperature,
            e.top_k,
            cfg.seed,
        )
        records += recs
        generation_table = image_generation.markdown(suites["generation"], title)
    probes = None
    if "knowledge" in e.abilities:  # what the model knows, beside how it answers the questions
        device = next(model.parameters()).device
        probes = {"fact_recall": fact_recall(lambda ids: model(ids), tokenizer, device)}
    tmp = out_dir / "predictions.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(out_dir / "predictions.jsonl")
    write_json_atomic(
        out_dir / "results.json",
        {
            "recipe": cfg.recipe.name,
            "seed": cfg.seed,
            "model": cfg.model.name,
            "suites": suites,
            "probes": probes,
            "mixture": mixture,
            "contamination": contamination,
            "concepts": concepts,
            "seed_dimensions": dimensions,
            "code": code_version(),
            "config": asdict(cfg),
        },
    )
    tables = [markdown_table(r, f"{title}: {name}") for name, r in suites.items() if name != "generation"]
    tables += [seed_dimensions.markdown(dimensions)] if dimensions else []
    if probes:
        r = probes["fact_recall"]
        tables.append(
            f"Fact recall (the encyclopedia's {r['facts']} facts as cloze statements, no question format): "
            f"{100 * r['fact_recall']:.1f}% (chance {100 * r['fact_recall_chance']:.1f}%)\n"
        )
    tables += [generation_table] if generation_table else []
    tables += [decontamination.markdown(contamination)] if contamination else []
    tables += [concept_overlap.markdown(concepts)] if concepts else []
    (out_dir / "report.md").write_text("\n".join(tables))
    if e.html:
        run = load_run(out_dir.parent, out_dir.name)
        write_html([run], compare([run], run.recipe), run.recipe, out_dir, title)
    return suites


def evaluate_checkpoint(
    checkpoint: Path,
    cfg: RunConfig,
    tokenizer: Tokenizer,
    world_root: Path | None,
    out_dir: Path,
    title: str,
    decontaminate: bool = True,
    device: torch.device | None = None,
) -> dict:
    """The suites on a committed checkpoint, loaded into a plain model on `device` (default: CPU) in
    this process alone."""
    model = load_model(checkpoint, cfg, tokenizer, device)
    return evaluate(model, cfg, tokenizer, world_root, out_dir, title, decontaminate)


def load_model(
    checkpoint: Path, cfg: RunConfig, tokenizer: Tokenizer, device: torch.device | None = None
) -> VLM:
    """A committed checkpoint's weights in a plain model on `device` (default: CPU), ready to answer."""
    model = model_on_meta(cfg.model, tokenizer.image_id)
    materialize(model, device or torch.device("cpu"), seed=None)  # the weights come from the checkpoint
    load_checkpoint(checkpoint, model)
    if cfg.model.family == "discrete":  # prompts' pictures become visual ids through its tokenizer
        model.attach_visual_tokenizer(VisualTokenizer.from_pretrained(cfg.model.visual_tokenizer))
    model.eval()
    return model


def evaluate_noise(
    checkpoint: Path,
    cfg: RunConfig,
    tokenizer: Tokenizer,
    world_root: Path | None,
    out_dir: Path,
    device: torch.device | None = None,
) -> dict | None:
    """`out_dir/noise.json` (eval/noise.py): `out_dir` holds the evaluation of `checkpoint`; the
    `eval.noise_checkpoints` - 1 checkpoints before it in its stage are evaluated into
    `out_dir/noise/<name>/` with the same benchmarks (the world's and custom suites: lm-eval, VLMEvalKit
    and image generation are too slow to repeat), each reused when a rerun finds it. None, with a line
    saying so, when the stage kept no checkpoint before it."""
    k = cfg.eval.noise_checkpoints
    checkpoints = last_checkpoints(checkpoint, k)
    if len(checkpoints) < 2:
        print(
            f"noise: {checkpoint.parent} holds no checkpoint before {checkpoint.name} in its stage; no "
            "noise.json (a smaller train.checkpoint_every keeps some)"
        )
        return None
    if len(checkpoints) < k:
        print(f"noise: {len(checkpoints)} checkpoints of the {k} asked (fewer kept in the stage)")
    light = replace(
        cfg, eval=replace(cfg.eval, html=False, generation_prompts=0, lm_eval_tasks=[], vlmeval_datasets=[])
    )
    results = []
    for ckpt in checkpoints[:-1]:
        where = out_dir / "noise" / ckpt.name
        if not (where / "results.json").exists():
            title = f"{cfg.recipe.name} (seed {cfg.seed}, {ckpt.name})"
            evaluate_checkpoint(ckpt, light, tokenizer, world_root, where, title, False, device)
        results.append(json.loads((where / "results.json").read_text()))
    results.append(json.loads((out_dir / "results.json").read_text()))
    steps = [int(read_meta(c)["step"]) for c in checkpoints]
    return write_noise(out_dir / NOISE_FILE, [c.name for c in checkpoints], steps, results)
