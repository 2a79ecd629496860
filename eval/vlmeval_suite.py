"""VLMEvalKit (PyPI `nvidia-vlmeval`, imported as `vlmeval`) on an mmkd checkpoint.

Datasets are named as in VLMEvalKit and read from `<eval.vlmeval_data>/<NAME>.tsv` (default:
`$LMUData`). A name the kit knows (MMBench_DEV_EN, POPE, MME, OCRBench, ...) needs the kit's own file,
checked by md5, because the kit would download another; any other name is read as a custom set in the
kit's layout (option columns A, B, ... make it multiple choice). The kit builds the prompts, keeps the
predictions and scores them (POPE F1, the MME score, ...); our model answers:
- multiple choice (MCQ) and yes/no (Y/N) datasets by option likelihood, as for the world benchmarks:
  the option, or Yes / No, whose tokens have the highest mean log-probability after the question. The
  answer is the option's letter (or the word), which the kit's exact matching reads without a judge;
- any other dataset by greedy generation.
Datasets that the kit scores with an LLM judge (MMVet, MathVista, MIA-Bench, ...) need an
OpenAI-compatible judge (`eval.judge_url`, `eval.judge_model`); without one they are skipped with
a message in the log and in results.json.

Installing: on a GPU machine `pip install nvidia-vlmeval`. On CPU torch the kit's torchvision (a CUDA
build) cannot load and breaks `import transformers`, so the kit goes in without it:
`pip install -e ".[vlmeval]" && pip install --no-deps nvidia-vlmeval`. `import_vlmeval` then lets
the kit import with a placeholder for torchvision, which only its video datasets and some of its
bundled models use.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import csv
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import ssl
import string
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mmkd.bench_item import BenchItem
from mmkd.errors import UserError
from mmkd.eval.continuous import continuous_summary, option_probability
from mmkd.eval.inference import generate, option_loglik
from mmkd.metrics import mean_ci95
from mmkd.model import VLM
from mmkd.shards import write_json_atomic
from mmkd.templates import Templates

MODEL_NAME = "mmkd"
LMU_DATA = "LMUData"  # the environment variable VLMEvalKit reads its data folder from
# Datasets VLMEvalKit scores with an LLM judge (its run.py picks a GPT model for these by name).
JUDGED = (
    "MMVet",
    "LLaVABench",
    "MathVista",
    "MathVerse",
    "MathVision",
    "DynaMath",
    "LogicVista",
    "MIA-Bench",
    "WildVision",
    "MMAlignBench",
    "MMDU",
    "MMLongBench",
    "DUDE",
    "SLIDEVQA",
    "VL-RewardBench",
    "MOAT",
    "OCR_Reasoning",
)
INSTALL = (
    'on CPU: pip install -c constraints/cpu.txt -e ".[vlmeval]" && pip install --no-deps nvidia-vlmeval; '
    "on a GPU machine: pip install nvidia-vlmeval (docs/eval.md)"
)


class VlmevalError(UserError, ValueError):
    """VLMEvalKit is missing, or a dataset or judge is not usable; the message says which."""

    label = "eval error"


@dataclass
class Judge:
    """An OpenAI-compatible chat endpoint that VLMEvalKit's judged datasets send their grading to."""

    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"


def judge_from(e: Any) -> Judge | None:
    """The judge an EvalConfig names, or None."""
    return Judge(e.judge_url, e.judge_model, e.judge_api_key_env) if e.judge_url else None


class _Placeholder(types.ModuleType):
    """Stands in for torchvision while VLMEvalKit imports; using it says why it is missing."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self.__name__}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ImportError(
            f"{self.__name__} needs torchvision, which this install leaves out (CPU torch); "
            f"the VLMEvalKit datasets and models that use it need a GPU install: {INSTALL}"
        )


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Placeholder(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def import_vlmeval() -> types.ModuleType:
    """Import VLMEvalKit without its side effects on this process.

    The kit disables autograd, reseeds torch, turns off TLS verification and configures the root
    logger on import; all are restored, so a periodic eval leaves training as it was. Without
    torchvision, the kit imports against a placeholder that is removed again afterwards.
    """
    if "vlmeval" in sys.modules:
        return sys.modules["vlmeval"]
    if importlib.util.find_spec("vlmeval") is None:
        raise ImportError(f"VLMEvalKit is not installed: {INSTALL}")
    finder = None
    if importlib.util.find_spec("torchvision") is None:
        from transformers.utils import import_utils

        import_utils.is_torchvision_available()  # cached as False before the placeholder exists
        finder = _PlaceholderFinder()
        sys.meta_path.insert(0, finder)
    else:
        try:
            import torchvision  # noqa: F401
        except Exception as e:
            raise ImportError(
                f"torchvision is installed but cannot load with torch {torch.__version__} ({e}); a CUDA "
                f"build next to CPU torch also breaks transformers. pip uninstall torchvision, then {INSTALL}"
            ) from None
    grad, https = torch.is_grad_enabled(), ssl._create_default_https_context
    root_handlers = list(logging.root.handlers)
    logging.disable(logging.ERROR)  # the kit logs an error when it finds no .env file of API keys
    try:
        with torch.random.fork_rng(devices=[]):
            import vlmeval
            import vlmeval.inference
    finally:
        logging.disable(logging.NOTSET)
        logging.root.handlers = root_handlers  # and configures the root logger
        torch.set_grad_enabled(grad)
        ssl._create_default_https_context = https
        if finder is not None:
            sys.meta_path.remove(finder)
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
    return vlmeval


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _wrapper(vlmeval: types.ModuleType, model: VLM, templates: Templates, max_new_tokens: int) -> Any:
    class MmkdVLM(vlmeval.vlm.BaseModel):
        """Our model as a VLMEvalKit model: the kit's messages in, an answer string out."""

        INTERLEAVE = True

        def __init__(self) -> None:
            super().__init__()
            self.types: dict[str, str] = {}  # dataset name -> the kit's type (MCQ, Y/N, VQA, ...)
            self.option_probs: dict[str, dict[str, float]] = {}  # item index -> option -> probability

        def use_custom_prompt(self, dataset: str) -> bool:
            return self.types.get(dataset) in ("MCQ", "Y/N")

        def build_prompt(self, line: Any, dataset: str) -> list[dict]:
            """The images, the question (after its hint) and the options to score by likelihood."""
            paths = self.dump_image(line, dataset)
            question = str(line["question"])
            hint = line.get("hint")
            if not _missing(hint):
                question = f"{hint}\n{question}"
            if self.types[dataset] == "MCQ":
                options = {
                    c: str(line[c]) for c in string.ascii_uppercase if c in line and not _missing(line[c])
                }
            else:
                options = {"Yes": "Yes", "No": "No"}
            return [
                *({"type": "image", "value": p} for p in paths),
                {"type": "text", "value": question, "options": options, "index": str(line["index"])},
            ]

        def generate_inner(self, message: list[dict], dataset: str | None = None) -> str:
            images = [Image.open(m["value"]).convert("RGB") for m in message if m["type"] == "image"]
            texts = [m for m in message if m["type"] == "text"]
            options = next((m["options"] for m in texts if "options" in m), None)
            item = BenchItem(
                id="",
                ability="vlmeval",
                qtype="",
                question="\n".join(m["value"] for m in texts),
                answer="",
                options=list(options.values()) if options else None,
                image=images[0] if images else None,
                more_images=images[1:],
            )
            model.eval()
            if options:
                scores = option_loglik(model, templates, [item], len(options))[0]
                index = next(m["index"] for m in texts if "options" in m)
                self.option_probs[index] = {o: option_probability(scores, k) for k, o in enumerate(options)}
                return list(options)[max(range(len(scores)), key=scores.__getitem__)]
            return generate(model, templates, [item], 1, max_new_tokens, stop_at_newline=False)[0]

    return MmkdVLM()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _known(vlmeval: types.ModuleType, name: str) -> tuple[str, str | None]:
    """The kit's download URL and md5 for a dataset it knows; ("", None) for any other name."""
    cls = next((c for c in vlmeval.dataset.DATASET_CLASSES if name in c.supported_datasets()), None)
    return getattr(cls, "DATASET_URL", {}).get(name, ""), getattr(cls, "DATASET_MD5", {}).get(name)


def tsv_path(name: str, root: Path) -> Path:
    """Where the kit reads the dataset: its URL's file name for a known dataset, else NAME.tsv."""
    url, _ = _known(import_vlmeval(), name)
    return root / (url.split("/")[-1] if url.endswith(".tsv") else f"{name}.tsv")


def _check_file(vlmeval: types.ModuleType, name: str, root: Path) -> None:
    """The dataset's TSV is there and, for a dataset the kit knows, is the kit's own file."""
    path = tsv_path(name, root)
    url, want = _known(vlmeval, name)
    if not path.exists():
        hint = f" (VLMEvalKit's file: {url})" if url else ""
        raise VlmevalError(f"eval.vlmeval_datasets: {name}: {path} does not exist{hint}")
    if want and (got := _md5(path)) != want:
        raise VlmevalError(
            f"eval.vlmeval_datasets: {name}: {path} has md5 {got}, VLMEvalKit's {name} has {want}; "
            f"the kit would replace it by a download. Use the kit's file{f' ({url})' if url else ''}, or "
            "give your own data another name"
        )


def _flatten(scores: Any) -> dict[str, float]:
    """The kit's score table (a DataFrame or dict, per split) as {"split/column": value}."""
    out: dict[str, float] = {}
    if scores is None:
        return out
    if isinstance(scores, dict):
        for k, v in scores.items():
            if isinstance(v, dict):
                out |= {f"{k}/{kk}": vv for kk, vv in _flatten(v).items()}
            elif isinstance(v, int | float) and not _missing(v):
                out[str(k)] = float(v)
        return out
    for _, row in scores.iterrows():
        labels = [v for v in row.values if isinstance(v, str)]  # the row's name: split, Category, ...
        prefix = f"{labels[0]}/" if labels and len(scores) > 1 else ""
        for k, v in row.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and not _missing(v):
                out[f"{prefix}{k}"] = float(v)
    return out


@contextlib.contextmanager
def _one_process() -> Iterator[None]:
    """The kit shards inference by $RANK / $WORLD_SIZE and meets at barriers; our evaluation runs
    on rank 0 alone (also after a multi-rank torchrun), so it sees a world of one."""
    saved = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE")}
    os.environ.update(RANK="0", WORLD_SIZE="1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every parameter's name, shape and first values: another checkpoint gives another."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().flatten()[:4096].float().numpy().tobytes())
    return h.hexdigest()


def _empty_result() -> dict[str, Any]:
    return {"metric": "vlmeval", "n": 0, "score": None, "ci95": None, "chance": None, "blind": None}


def _item_scores(vlmeval: types.ModuleType, work: Path, predictions: Path, n: int) -> dict[str, float]:
    """Per-item scores from the file the kit scored with (a `hit` or `score` column per index)."""
    for path in sorted(set(work.glob(f"{MODEL_NAME}_*.xlsx")) - {predictions}):
        data = vlmeval.smp.load(str(path))
        column = next((c for c in ("hit", "score") if c in data), None)
        if column is not None and "index" in data and len(data) == n:
            return {str(i): float(v) for i, v in zip(data["index"], data[column], strict=True)}
    return {}


def _needs_judge(name: str) -> bool:
    return any(j in name for j in JUDGED)


def data_folder(data_root: str) -> Path:
    """The folder of the TSVs: eval.vlmeval_data, else $LMUData."""
    root = data_root or os.environ.get(LMU_DATA, "")
    if not root or not Path(root).is_dir():
        raise VlmevalError(
            f"eval.vlmeval_data={data_root!r} (${LMU_DATA}={os.environ.get(LMU_DATA, '')!r}) is not a "
            "folder: set it to where the VLMEvalKit TSVs are"
        )
    return Path(root)


def check_datasets(datasets: list[str], data_root: str, judge: Judge | None) -> Path:
    """Before any compute: the kit imports and every dataset to run has its file; returns the root."""
    vlmeval = import_vlmeval()
    root = data_folder(data_root)
    for name in datasets:
        if judge is not None or not _needs_judge(name):
            _check_file(vlmeval, name, root)
    return root


def dataset_items(path: Path) -> list[BenchItem]:
    """A VLMEvalKit TSV's questions, answers and images as items (for decontamination).

    An `image` cell holds base64, a list of them, or (64 characters at most) the index of the row
    whose image it shares, as the kit reads it.
    """
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    by_index = {r.get("index", ""): r.get("image") or "" for r in rows}
    items = []
    for n, r in enumerate(rows):
        cell = r.get("image") or ""
        cell = by_index.get(cell, cell) if len(cell) <= 64 else cell
        encoded = ast.literal_eval(cell) if cell.startswith("[") else [cell] if cell else []
        images = [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB") for b in encoded]
        items.append(
            BenchItem(
                id=r.get("index") or str(n),
                ability="vlmeval",
                qtype=r.get("category") or "",
                question=" ".join(filter(None, (r.get("hint"), r.get("question")))),
                answer=r.get("answer") or "",
                image=images[0] if images else None,
                more_images=images[1:],
            )
        )
    return items


def evaluate_vlmeval(
    model: VLM,
    templates: Templates,
    datasets: list[str],
    data_root: str,
    out_dir: Path,
    judge: Judge | None,
    max_new_tokens: int,
) -> tuple[dict[str, Any], list[dict]]:
    """Each dataset through VLMEvalKit's inference and scoring; its files go to `out_dir/vlmeval/NAME`,
    where an interrupted evaluation of the same model resumes.

    Returns {dataset: result} (the mean per-item score with its CI where the kit scores per item, and
    the kit's own table under "official") and one record per item.
    """
    vlmeval = import_vlmeval()
    os.environ[LMU_DATA] = str(check_datasets(datasets, data_root, judge))
    fingerprint = model_fingerprint(model)
    wrapper = _wrapper(vlmeval, model, templates, max_new_tokens)
    results: dict[str, Any] = {}
    records: list[dict] = []
    for name in datasets:
        if _needs_judge(name) and judge is None:
            reason = f"{name} is scored by an LLM judge: set eval.judge_url and eval.judge_model to run it"
            print(f"vlmeval: skipped, {reason}", flush=True)
            results[name] = {**_empty_result(), "skipped": reason}
            continue
        dataset = vlmeval.dataset.build_dataset(name)
        wrapper.types[name] = dataset.TYPE
        work = out_dir / "vlmeval" / name
        # The kit saves predictions as it goes and resumes from them: keep them for this model only.
        stamp = work / "model.json"
        if not stamp.exists() or json.loads(stamp.read_text()) != {"fingerprint": fingerprint}:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            stamp.write_text(json.dumps({"fingerprint": fingerprint}))
        with _one_process():
            vlmeval.inference.infer_data_job(wrapper, str(work), MODEL_NAME, dataset)
        # Each option's probability, kept beside the kit's predictions so a resumed evaluation has them.
        probs_file = work / "option_probs.json"
        probs = json.loads(probs_file.read_text()) if probs_file.exists() else {}
        probs |= wrapper.option_probs
        write_json_atomic(probs_file, probs)
        wrapper.option_probs = {}
        result_file = work / f"{MODEL_NAME}_{name}.xlsx"
        # Our multiple-choice and yes/no answers are exact (a letter, Yes or No): no judge needed.
        kwargs: dict[str, Any] = {"model": "exact_matching", "nproc": 4}
        if judge is not None and dataset.TYPE not in ("MCQ", "Y/N"):
            kwargs |= {
                "model": judge.model,
                "api_base": judge.url.rstrip("/") + "/chat/completions",
                "key": os.environ.get(judge.api_key_env, ""),
            }
        official = _flatten(dataset.evaluate(str(result_file), **kwargs))
        predictions = vlmeval.smp.load(str(result_file))
        hits = _item_scores(vlmeval, work, result_file, len(predictions))
        result = {**_empty_result(), "n": len(predictions), "official": official}
        if hits:
            result["score"], result["ci95"] = mean_ci95(list(hits.values()))
        results[name] = result
        continuous = {}
        for _, row in predictions.iterrows():
            i = str(row["index"])
            gold = probs.get(i, {}).get(str(row.get("answer", "")))
            if gold is not None:  # multiple choice and yes/no: the probability on the right option
                continuous[i] = {"p_correct": gold}
            records.append(
                {
                    "suite": "vlmeval",
                    "benchmark": name,
                    "id": i,
                    "category": str(row.get("category", "")),
                    "question": str(row["question"]),
                    "answer": str(row.get("answer", "")),
                    "prediction": str(row["prediction"]),
                    "score": hits.get(i),  # None: the kit scores this dataset only as a whole
                }
                | ({"continuous": continuous[i]} if i in continuous else {})
            )
        if continuous and len(continuous) == len(predictions):
            chance = sum(1 / len(probs[i]) for i in continuous) / len(continuous)
            result["continuous"] = continuous_summary(list(continuous.values()), chance)
    return results, records
