"""VLMEvalKit on our model: the kit reads TSVs in its own format from $LMUData, our wrapper answers by
option likelihood, and the kit's scores (accuracy, the MME score) agree with the per-item answers.

The kit is installed without torchvision on CPU (docs/eval.md); importing it leaves this process's
autograd, RNG and transformers as they were."""

import base64
import hashlib
import io
import json
import os
import sys
from collections import defaultdict

import pytest
import torch
from PIL import Image

from mmkd.bench_item import BenchItem
from mmkd.eval import vlmeval_suite
from mmkd.eval.inference import option_loglik
from mmkd.eval.vlmeval_suite import Judge, VlmevalError, check_datasets, evaluate_vlmeval, import_vlmeval
from mmkd.shards import open_dataset
from mmkd.templates import Templates
from mmkd.trainer import build_model
from tests.conftest import REPO, micro_run_config, run_python
from tests.fake_openai import FakeOpenAI

MME_CATEGORIES = [
    "OCR",
    "artwork",
    "celebrity",
    "color",
    "count",
    "existence",
    "landmark",
    "position",
    "posters",
    "scene",
    "code_reasoning",
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
]


def _b64(im):
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _samples(world, n):
    return [s for s, _ in zip(open_dataset(world[1] / "vqa0"), range(n))]


def _model(world, tokenizer, tmp_path):
    cfg = micro_run_config(world[0], tmp_path / "run")
    torch.manual_seed(0)
    return build_model(cfg, tokenizer).eval(), Templates(
        tokenizer, cfg.model.image_tokens, cfg.model.max_seq_len
    )


def test_import_leaves_the_process_as_it_was():
    code = """
import ssl, sys, torch
torch.manual_seed(7)
state, https = torch.random.get_rng_state(), ssl._create_default_https_context
from mmkd.eval.vlmeval_suite import import_vlmeval
vlmeval = import_vlmeval()
assert torch.is_grad_enabled() and torch.equal(state, torch.random.get_rng_state())
assert ssl._create_default_https_context is https
assert not any(m.split(".")[0] == "torchvision" for m in sys.modules)
from transformers import LlavaForConditionalGeneration  # the torchvision trap would break this
print("ok", vlmeval.vlm.BaseModel.__name__)
"""
    assert "ok BaseModel" in run_python(["-c", code], timeout=240)


def test_a_torchvision_that_cannot_load_is_named(tmp_path):
    """A CUDA torchvision next to CPU torch fails on import; the error says what to do."""
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")'
    )
    code = """
from mmkd.eval.vlmeval_suite import import_vlmeval
try:
    import_vlmeval()
except ImportError as e:
    print(e)
"""
    out = run_python(["-c", code], env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert "torchvision is installed but cannot load" in out and "pip uninstall torchvision" in out


def test_multiple_choice_tsv_through_the_kit(world, tokenizer, tmp_path, monkeypatch):
    lmu = tmp_path / "LMUData"
    lmu.mkdir()
    rows = ["index\timage\tquestion\tA\tB\tC\tD\tanswer\tcategory"]
    for i, s in enumerate(_samples(world, 6)):
        rows.append(
            f"{i}\t{_b64(s.images[0])}\t{s.turns[0].question}\tball\tbox\ttent\tstar\t{'ABCD'[i % 4]}\t"
            f"{'shape' if i % 2 else 'kind'}"
        )
    (lmu / "mmkd_kinds.tsv").write_text("\n".join(rows) + "\n")
    model, templates = _model(world, tokenizer, tmp_path)
    with pytest.raises(VlmevalError, match=r"MMStar: .*MMStar\.tsv does not exist"):
        check_datasets(["mmkd_kinds", "MMStar"], str(lmu), None)

    results, records = evaluate_vlmeval(
        model, templates, ["mmkd_kinds", "MMVet"], str(lmu), tmp_path / "out", None, 5
    )
    assert "eval.judge_url" in results["MMVet"]["skipped"]  # judged, and no judge configured
    r = results["mmkd_kinds"]
    assert r["n"] == 6 and len(records) == 6
    # The kit's own accuracy (a fraction for multiple choice) is the mean of the per-item hits we record.
    assert r["official"]["Overall"] == pytest.approx(r["score"])
    assert r["score"] == pytest.approx(sum(x["score"] for x in records) / 6)
    assert set(r["official"]) == {"Overall", "kind", "shape"}
    # Each answer is the option our model finds most likely for the picture the kit saved.
    for rec in records:
        image = Image.open(lmu / "images" / "mmkd_kinds" / f"{rec['id']}.jpg").convert("RGB")
        item = BenchItem("", "", "", rec["question"], "", ["ball", "box", "tent", "star"], image)
        scores = option_loglik(model, templates, [item], 4)[0]
        assert rec["prediction"] == "ABCD"[max(range(4), key=scores.__getitem__)]
        assert rec["score"] == float(rec["prediction"] == rec["answer"])
        # p_correct: the right option's share of the likelihood, the largest where the answer is right.
        p = rec["continuous"]["p_correct"]
        assert (p >= 0.25) if rec["score"] == 1.0 else (p < 0.5)
    assert r["continuous"]["p_correct"]["chance"] == 0.25
    # The report page's gallery shows each item's picture, read back from the dataset's TSV.
    from mmkd.eval.compare import Run
    from mmkd.eval.html_report import _gallery

    run = Run(tmp_path / "run", "r", 0, results={"config": {"eval": {"vlmeval_data": str(lmu)}}})
    (run.path / "eval").mkdir(parents=True)
    (run.path / "eval/predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
    (tmp_path / "page").mkdir()
    assert 'alt="mmkd_kinds item 0"' in _gallery({"r": [run]}, tmp_path / "page")
    shown = Image.open(tmp_path / "page/gallery/vlmeval-mmkd_kinds-0.png")
    assert shown.tobytes() == _samples(world, 1)[0].images[0].convert("RGB").tobytes()
    # The kit resumes from saved predictions of the same model, and never from another model's.
    calls = []
    monkeypatch.setattr(vlmeval_suite, "option_loglik", lambda *a: calls.append(1) or option_loglik(*a))
    _, again = evaluate_vlmeval(model, templates, ["mmkd_kinds"], str(lmu), tmp_path / "out", None, 5)
    assert not calls and again == records
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    evaluate_vlmeval(model, templates, ["mmkd_kinds"], str(lmu), tmp_path / "out", None, 5)
    assert len(calls) == 6


def test_mme_score_from_the_kits_scorer(world, tokenizer, tmp_path, monkeypatch):
    """MME in its real layout: two yes/no questions per image, scored as accuracy + accuracy+."""
    vlmeval = import_vlmeval()
    lmu = tmp_path / "LMUData"
    lmu.mkdir()
    rows = ["index\timage\tquestion\tanswer\tcategory\timage_path"]
    samples = _samples(world, len(MME_CATEGORIES))
    for c, (category, s) in enumerate(zip(MME_CATEGORIES, samples)):
        for k, answer in enumerate(("Yes", "No")):
            question = f"{s.turns[k].question} Please answer yes or no."
            rows.append(
                f"{2 * c + k}\t{_b64(s.images[0])}\t{question}\t{answer}\t{category}\t{category}/{c}.png"
            )
    tsv = lmu / "MME.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    # The kit accepts only its own MME.tsv (md5); this fixture in the same layout stands in for it.
    monkeypatch.setitem(
        vlmeval.dataset.ImageYORNDataset.DATASET_MD5, "MME", hashlib.md5(tsv.read_bytes()).hexdigest()
    )
    model, templates = _model(world, tokenizer, tmp_path)
    monkeypatch.setenv("RANK", "0")  # as on rank 0 of a two-rank torchrun, which evaluates alone
    monkeypatch.setenv("WORLD_SIZE", "2")
    results, records = evaluate_vlmeval(model, templates, ["MME"], str(lmu), tmp_path / "out", None, 5)
    assert len(records) == 2 * len(MME_CATEGORIES) and os.environ["WORLD_SIZE"] == "2"
    assert {x["prediction"] for x in records} <= {"Yes", "No"}
    by_category = defaultdict(list)
    for x in sorted(records, key=lambda x: int(x["id"])):
        by_category[x["category"]].append(x["score"])
    expected = {c: 100 * sum(v) / 2 + 100 * (v[0] * v[1]) for c, v in by_category.items()}
    official = results["MME"]["official"]
    for category, score in expected.items():
        assert official[category] == pytest.approx(score)
    assert official["perception"] == pytest.approx(sum(expected[c] for c in MME_CATEGORIES[:10]))
    assert official["reasoning"] == pytest.approx(sum(expected[c] for c in MME_CATEGORIES[10:]))
    json.dumps(results)  # results.json-ready


def test_judged_dataset_is_graded_by_the_configured_judge(world, tokenizer, tmp_path, monkeypatch):
    """MMVet in its layout, graded by an OpenAI-compatible judge named in the config (a local fake)."""
    vlmeval = import_vlmeval()
    lmu = tmp_path / "LMUData"
    lmu.mkdir()
    rows = ["index\timage\tquestion\tanswer\tcategory"]
    for i, s in enumerate(_samples(world, 4)):
        category = ["rec,ocr", "know,gen", "spat,math", "rec"][i]  # MMVet's six capabilities
        rows.append(f"{i}\t{_b64(s.images[0])}\t{s.turns[0].question}\t{s.turns[0].answer}\t{category}")
    tsv = lmu / "MMVet.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    monkeypatch.setitem(vlmeval.dataset.MMVet.DATASET_MD5, "MMVet", hashlib.md5(tsv.read_bytes()).hexdigest())
    monkeypatch.setenv("MMKD_JUDGE_KEY", "sk-test")
    graded = []

    def respond(body, calls):
        prompt = body["messages"][-1]["content"]
        prompt = prompt if isinstance(prompt, str) else " ".join(p.get("text", "") for p in prompt)
        graded.append((body["model"], prompt))
        return 200, "0.8" if "Correctness" in prompt else "hello"

    judge_server = FakeOpenAI(respond)
    try:
        model, templates = _model(world, tokenizer, tmp_path)
        judge = Judge(judge_server.url, "judge-model", "MMKD_JUDGE_KEY")
        results, records = evaluate_vlmeval(model, templates, ["MMVet"], str(lmu), tmp_path / "out", judge, 5)
    finally:
        judge_server.close()
    assert judge_server.auth == {"Bearer sk-test"} and {m for m, _ in graded} == {"judge-model"}
    assert sum("Correctness" in p for _, p in graded) == 4  # one grading per item
    r = results["MMVet"]
    assert r["score"] == pytest.approx(0.8) and [x["score"] for x in records] == [0.8] * 4
    assert r["official"]["Overall/acc"] == pytest.approx(80.0) and r["official"]["Overall/tot"] == 4
    assert r["official"]["ocr/tot"] == 1 and r["official"]["ocr/acc"] == pytest.approx(80.0)


def test_a_tsv_that_is_not_the_kits_own_is_refused(tmp_path, monkeypatch):
    (tmp_path / "POPE.tsv").write_text("index\tquestion\tanswer\n0\tIs there a cat?\tYes\n")
    with pytest.raises(VlmevalError, match=r"POPE: .* has md5 \w+, VLMEvalKit's POPE has c12f5acb"):
        check_datasets(["POPE"], str(tmp_path), None)
    monkeypatch.delenv("LMUData", raising=False)
    with pytest.raises(VlmevalError, match=r"eval.vlmeval_data='' \(\$LMUData=''\) is not a folder"):
        check_datasets(["POPE"], "", None)
    assert "torchvision" not in sys.modules
