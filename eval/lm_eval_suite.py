"""lm-eval text tasks on our language model (`eval.lm_eval_tasks`), as the paper's text benchmarks.

Our checkpoint is wrapped as an lm-eval `LM` (`MmkdLM`): prompts start with BOS and are tokenised as
in training (`mmkd.templates`), so "Question: ...\\nAnswer:" plus " answer" scores what training
taught. Task names are lm-eval's (`mmlu_pro`, `gpqa_diamond`, ...): their data must be in the
Hugging Face datasets cache or reachable. `mmkd_world_knowledge` is generated here from the world's
knowledge benchmark (a local task YAML over a JSONL file), and `eval.lm_eval_include` adds a folder of
your own task YAMLs. Install with `pip install -e ".[eval]"`. The exported decoder
(`launch/export.py format=llama`) also runs under lm-eval's own `hf` and `vllm` models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

try:
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager, get_task_dict
except ModuleNotFoundError as e:
    raise ModuleNotFoundError(f'eval.lm_eval_tasks needs lm-eval ({e}): pip install -e ".[eval]"') from e

from mmkd.bench_item import BenchItem
from mmkd.eval.continuous import continuous_summary, option_probability
from mmkd.eval.inference import greedy, model_device
from mmkd.metrics import mean_ci95
from mmkd.model import VLM
from mmkd.templates import Templates

WORLD_TASK = "mmkd_world_knowledge"

_WORLD_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _registry(tasks: list[str], folders: list[str]) -> TaskManager:
    """A task manager that knows `tasks`: the local folders alone when they define each of them as a
    task, else with lm-eval's built-in registry too (~15k YAML files: ~10 s to index, per call)."""
    if folders:
        local = TaskManager(include_path=folders, include_defaults=False)
        if set(tasks) <= set(local.all_subtasks):
            return local
    return TaskManager(include_path=folders or None)


def check_tasks(tasks: list[str], include: str) -> None:
    """Before training: every task name resolves (lm-eval's registry, the include folder, ours)."""
    wanted = [t for t in tasks if t != WORLD_TASK]
    known = set(_registry(wanted, [include] if include else []).all_tasks) if wanted else set()
    unknown = [t for t in wanted if t not in known]
    if unknown:
        where = f"lm-eval's registry or {include}" if include else "lm-eval's registry"
        raise ValueError(f"eval.lm_eval_tasks: unknown tasks {unknown} (not in {where})")


class MmkdLM(LM):
    """Our VLM as an lm-eval language model (text only): BOS first, tokenised as in training."""

    def __init__(self, model: VLM, templates: Templates, batch_size: int) -> None:
        super().__init__()
        self.model, self.batch_size = model.eval(), batch_size
        self.tok, self.max_len = templates.tok, model.cfg.max_seq_len
        self.model_device = model_device(model)  # lm-eval's LM owns `device` (a read-only property)

    def _scores(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum log-prob of the continuation, whether greedy decoding gives it) per pair."""
        out = []
        for start in tqdm(range(0, len(pairs), self.batch_size), desc="lm-eval", leave=False):
            chunk = pairs[start : start + self.batch_size]
            seqs = [(c + x)[-self.max_len :] for c, x in chunk]  # over-long contexts lose their start
            ids = torch.full((len(seqs), max(map(len, seqs))), self.tok.pad_id)
            for b, seq in enumerate(seqs):
                ids[b, : len(seq)] = torch.tensor(seq)
            with torch.no_grad():
                logp = self.model(ids.to(self.model_device)).float().log_softmax(-1)  # [B, T, V]
            for b, (seq, (_, cont)) in enumerate(zip(seqs, chunk)):
                n = min(len(cont), len(seq) - 1)
                rows = logp[b, len(seq) - n - 1 : len(seq) - 1]  # the positions predicting `cont`
                target = torch.tensor(seq[len(seq) - n :], device=self.model_device)
                greedy = bool((rows.argmax(-1) == target).all())
                out.append((float(rows.gather(-1, target[:, None]).sum()), greedy))
        return out

    def _context(self, text: str) -> list[int]:
        return [self.tok.bos_id] + (self.tok.encode(text) if text else [])

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self._scores([(self._context(r.args[0]), self.tok.encode(r.args[1])) for r in requests])

    def loglikelihood_rolling(self, requests) -> list[float]:
        out = []
        for r in requests:
            ids, step = self.tok.encode(r.args[0]), self.max_len - 1
            windows = [([self.tok.bos_id], ids[i : i + step]) for i in range(0, len(ids), step)]
            out.append(sum(score for score, _ in self._scores(windows)))  # disjoint windows
        return out

    def generate_until(self, requests) -> list[str]:
        out = []
        for r in tqdm(requests, desc="lm-eval generate", leave=False):
            context, kwargs = r.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else until

            def stop(new: list[int], until: list[str] = until) -> bool:
                return new[-1] == self.tok.eos_id or any(u in self.tok.decode(new) for u in until)

            context_ids = self._context(context)[-self.max_len :]
            max_new = int(kwargs.get("max_gen_toks", 64))
            (new,) = greedy(self.model, [context_ids], None, max_new, self.tok.pad_id, stop)
            text = self.tok.decode(new[:-1] if new and new[-1] == self.tok.eos_id else new)
            for u in until:
                text = text.split(u)[0]
            out.append(text)
        return out


def world_task(world_root: Path, out_dir: Path) -> Path:
    """The world's knowledge benchmark as a local lm-eval task; returns the folder of its YAML."""
    folder = out_dir / "lm_eval_tasks"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{WORLD_TASK}.jsonl"
    rows = [json.loads(line) for line in (world_root / "bench" / "knowledge.jsonl").read_text().splitlines()]
    docs = [
        {
            "id": r["id"],
            "question": r["question"],
            "choices": r["options"],
            "label": r["options"].index(r["answer"]),
        }
        for r in rows
    ]
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / f"{WORLD_TASK}.yaml").write_text(_WORLD_YAML.format(task=WORLD_TASK, data=data))
    return folder


def _task_manager(tasks: list[str], include: str, world_root: Path | None, out_dir: Path) -> TaskManager:
    """The user's task folder, and the world's task where the run has a world."""
    world = [str(world_task(world_root, out_dir))] if world_root is not None else []
    return _registry(tasks, world + ([include] if include else []))


def task_items(
    tasks: list[str], include: str, world_root: Path | None, out_dir: Path, limit: int = 0
) -> dict[str, list[BenchItem]]:
    """Each task's evaluated documents as text items (prompt and target), for decontamination.

    Groups (mmlu_pro, ...) are opened into their subtasks; a multiple-choice target is the text of
    the right choice. `limit` keeps the documents that evaluation keeps (lm-eval's `limit`).
    """
    out: dict[str, list[BenchItem]] = {}

    def walk(node: dict) -> None:
        for task in node.values():
            if isinstance(task, dict):
                walk(task)
                continue
            items = []
            for n, doc in enumerate(list(task.eval_docs)[: limit or None]):
                target = task.doc_to_target(doc)
                if task.OUTPUT_TYPE == "multiple_choice" and isinstance(target, int):
                    target = task.doc_to_choice(doc)[target]
                text = str(task.doc_to_text(doc))
                items.append(BenchItem(str(doc.get("id", n)), "lm_eval", "", text, str(target)))
            out[task.config.task] = items

    walk(get_task_dict(tasks, _task_manager(tasks, include, world_root, out_dir)))
    return out


def evaluate_lm_eval(
    model: VLM,
    templates: Templates,
    tasks: list[str],
    include: str,
    world_root: Path | None,
    out_dir: Path,
    batch_size: int,
    limit: int = 0,
) -> tuple[dict[str, Any], list[dict]]:
    """Per task: lm-eval's first metric over the items (with a 95% half-width) and per-item records."""
    results = lm_eval.simple_evaluate(
        model=MmkdLM(model, templates, batch_size),
        tasks=tasks,
        task_manager=_task_manager(tasks, include, world_root, out_dir),
        limit=limit or None,
        log_samples=True,
        bootstrap_iters=0,
    )
    suite, records = {}, []
    for task in tasks:
        scores = results["results"][task]
        metric = next(k.split(",")[0] for k in scores if k.endswith(",none") and "stderr" not in k)
        samples = results["samples"][task]
        values = [float(s[metric]) for s in samples]
        score, ci = mean_ci95(values)  # from the items, as for every other suite
        suite[task] = {
            "metric": metric,
            "n": len(values),
            "score": score,
            "ci95": ci,
            "chance": None,
            "blind": None,
        }
        continuous = [_p_correct(s) for s in samples]
        if samples and all(c is not None for c in continuous):  # a multiple-choice task
            chance = sum(1 / len(s["filtered_resps"]) for s in samples) / len(samples)
            suite[task]["continuous"] = continuous_summary([{"p_correct": c} for c in continuous], chance)
        records += [
            {"benchmark": task, "id": str(s["doc"].get("id", s["doc_id"])), "score": float(s[metric])}
            | ({"continuous": {"p_correct": c}} if c is not None else {})
            for s, c in zip(samples, continuous)
        ]
    return suite, records


def _p_correct(sample: dict) -> float | None:
    """The probability a multiple-choice sample's log-likelihoods put on its gold choice, normalised
    over the choices (the summed log-likelihoods lm-eval's `acc` takes the argmax of); None for other
    output types or a target that names no choice."""
    resps = sample.get("filtered_resps") or []
    if len(resps) < 2 or not all(isinstance(r, list | tuple) and len(r) == 2 for r in resps):
        return None
    target = sample.get("target")
    if not isinstance(target, int):
        choices = [str(args[1]).strip() for args in sample.get("arguments", [])]
        if str(target).strip() not in choices:
            return None
        target = choices.index(str(target).strip())
    if not 0 <= target < len(resps):
        return None
    return option_probability([float(r[0]) for r in resps], target)
