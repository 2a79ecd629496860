"""Every eval suite on one model: the world benchmarks, lm-eval tasks, VLMEvalKit datasets and custom
suites, written as `results.json` (scores with provenance), `predictions.jsonl` (one line per item),
`report.md` and `report.html` (eval/html_report.py: curves, bars, the answers beside their images).

Called after training (`mmkd.launch._pipeline`), at periodic checkpoints (`eval.every`, `mmkd.trainer`) and
by eval-only (`launch/eval.py`); all of them evaluate a checkpoint loaded into a plain model, so the
same checkpoint always gives the same scores. Each kind of suite is one `Suite` in `SUITES`: when a
run asks for it, what decontamination scans for it, how it is scored.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
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
from mmkd.templates import Templates
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


@dataclass
class Context:
    """What every suite reads: the model, its prompts' templates, the run config, where the world and
    the output are, and the world and custom items as evaluated (cut to eval.max_items, with their
    few-shot examples from the whole benchmark)."""

    model: VLM
    templates: Templates
    cfg: RunConfig
    world_root: Path | None
    out_dir: Path
    world: dict[str, list[BenchItem]]
    custom: dict[str, list[BenchItem]]


@dataclass(frozen=True)
class Suite:
    """One kind of eval suite: whether a run asks for it, the items decontamination scans for it
    ({(suite, benchmark): items}), and how it is scored ({suite name: {benchmark: result}}, and one
    record per item for predictions.jsonl)."""

    enabled: Callable[[RunConfig], bool]
    items: Callable[[Context], dict[tuple[str, str], list[BenchItem]]]
    run: Callable[[Context], tuple[dict[str, dict], list[dict]]]


def _world_run(c: Context) -> tuple[dict[str, dict], list[dict]]:
    e = c.cfg.eval
    priors = PRIOR_SOURCES + (("instruct",) if "instruct" in c.cfg.recipe.sources() else ())
    results, records = evaluate_world(
        c.model, c.templates, c.world_root, c.world, e.batch_size, e.max_new_tokens, c.cfg.seed, priors
    )
    return {"world": results}, records


def _lm_eval_items(c: Context) -> dict[tuple[str, str], list[BenchItem]]:
    from mmkd.eval.lm_eval_suite import task_items  # optional: the [eval] extra

    e = c.cfg.eval
    found = task_items(e.lm_eval_tasks, e.lm_eval_include, c.world_root, c.out_dir, e.max_items)
    return {("lm_eval", task): items for task, items in found.items()}


def _lm_eval_run(c: Context) -> tuple[dict[str, dict], list[dict]]:
    from mmkd.eval.lm_eval_suite import evaluate_lm_eval  # optional: the [eval] extra

    e = c.cfg.eval
    results, records = evaluate_lm_eval(
        c.model,
        c.templates,
        e.lm_eval_tasks,
        e.lm_eval_include,
        c.world_root,
        c.out_dir,
        e.batch_size,
        e.max_items,
    )
    return {"lm_eval": results}, [{"suite": "lm_eval", **r} for r in records]


def _vlmeval_items(c: Context) -> dict[tuple[str, str], list[BenchItem]]:
    from mmkd.eval.vlmeval_suite import data_folder, dataset_items, tsv_path  # optional: [vlmeval]

    folder = data_folder(c.cfg.eval.vlmeval_data)
    tsvs = {name: tsv_path(name, folder) for name in c.cfg.eval.vlmeval_datasets}
    return {("vlmeval", name): dataset_items(path) for name, path in tsvs.items() if path.exists()}


def _vlmeval_run(c: Context) -> tuple[dict[str, dict], list[dict]]:
    from mmkd.eval.vlmeval_suite import evaluate_vlmeval, judge_from  # optional: [vlmeval]

    e = c.cfg.eval
    results, records = evaluate_vlmeval(
        c.model, c.templates, e.vlmeval_datasets, e.vlmeval_data, c.out_dir, judge_from(e), e.max_new_tokens
    )
    return {"vlmeval": results}, records


def _custom_run(c: Context) -> tuple[dict[str, dict], list[dict]]:
    e, suites, records = c.cfg.eval, {}, []
    for name, items in c.custom.items():
        result, recs = evaluate_suite(c.model, c.templates, items, e.batch_size, e.max_new_tokens)
        suites[name] = {name: result}
        records += [{"suite": name, "benchmark": name, **r} for r in recs]
    return suites, records


def _generation_run(c: Context) -> tuple[dict[str, dict], list[dict]]:
    e = c.cfg.eval
    results, records = evaluate_generation(
        c.model,
        c.templates,
        c.model.visual_tokenizer,
        c.cfg.data.world,
        c.out_dir,
        e.generation_prompts,
        e.cfg_scale,
        e.temperature,
        e.top_k,
        c.cfg.seed,
    )
    return {"generation": results}, records


# The suites in the order they run and are reported; a new suite is one entry (and its module).
SUITES = {
    "world": Suite(
        lambda cfg: bool(cfg.eval.abilities),
        lambda c: {("world", a): items for a, items in c.world.items()},
        _world_run,
    ),
    "lm_eval": Suite(lambda cfg: bool(cfg.eval.lm_eval_tasks), _lm_eval_items, _lm_eval_run),
    "vlmeval": Suite(lambda cfg: bool(cfg.eval.vlmeval_datasets), _vlmeval_items, _vlmeval_run),
    "custom": Suite(
        lambda cfg: bool(cfg.eval.custom),
        lambda c: {(name, name): items for name, items in c.custom.items()},
        _custom_run,
    ),
    "generation": Suite(
        lambda cfg: cfg.model.family == "discrete" and bool(cfg.eval.generation_prompts),
        lambda c: {},  # prompts, not items: nothing a training shard could hold
        _generation_run,
    ),
}


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
    ctx = Context(
        model,
        templates,
        cfg,
        world_root,
        out_dir,
        {a: limit(items) for a, items in full.items()},
        {name: limit(items) for name, items in full_custom.items()},
    )
    running = [suite for suite in SUITES.values() if suite.enabled(cfg)]
    out_dir.mkdir(parents=True, exist_ok=True)
    mixture_path = Path(cfg.run_dir) / "mixture.json"
    mixture = json.loads(mixture_path.read_text()) if mixture_path.exists() else None
    contamination = None
    if decontaminate and e.decontamination and mixture:
        benchmarks = {key: items for suite in running for key, items in suite.items(ctx).items()}
        sources = {name: Path(s["path"]) for name, s in mixture["sources"].items()}
        contamination = decontamination.check(sources, benchmarks)
        write_json_atomic(out_dir / "contamination.json", contamination)
    concepts = None
    if decontaminate and e.concept_overlap and mixture:
        captioning = {f"world/{a}": items for a, items in ctx.world.items() if a == "captioning"}
        captioning |= {n: items for n, items in ctx.custom.items() if any(it.references for it in items)}
        sources = {name: Path(s["path"]) for name, s in mixture["sources"].items()}
        concepts = concept_overlap.overlap(sources, captioning, extractor(cfg.build.noun_phrases))
        write_json_atomic(out_dir / "concepts.json", concepts)

    # Few-shot examples come from the whole benchmark, however few of its items are evaluated.
    def shots(items: list[BenchItem], name: str, pool: list[BenchItem]) -> list[BenchItem]:
        drawn = with_shots(items, e.shots, cfg.seed, name, pool)
        return few_shot.fit(drawn, templates, cfg.model.max_seq_len, e.max_new_tokens) if e.shots else drawn

    ctx.world = {a: shots(items, a, full[a]) for a, items in ctx.world.items()}
    ctx.custom = {n: shots(items, n, full_custom[n]) for n, items in ctx.custom.items()}
    suites, records = {}, []
    for suite in running:
        results, recs = suite.run(ctx)
        suites |= results
        records += recs
    dimensions = seed_dimensions.breakdown(records) if "world" in suites else None
    generation_table = (
        image_generation.markdown(suites["generation"], title) if "generation" in suites else ""
    )
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
