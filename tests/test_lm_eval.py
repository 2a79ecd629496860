"""lm-eval on our checkpoint: the wrapper's log-likelihoods are the model's, the world's knowledge
task and a user's local task YAML (multiple choice and generation) run offline, and a misspelt task
name is caught before training."""

import json

import pytest
import torch
from lm_eval.tasks import TaskManager

from mmkd.eval import lm_eval_suite
from mmkd.eval.decontamination import check
from mmkd.eval.lm_eval_suite import WORLD_TASK, MmkdLM, check_tasks, evaluate_lm_eval, task_items
from mmkd.shards import open_dataset
from mmkd.templates import Templates
from mmkd.trainer import build_model
from tests.conftest import micro_run_config

USER_TASKS = """\
task: colours_mc
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
---
task: colours_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[label]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 5
metric_list:
  - metric: exact_match
"""


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _model(world, tokenizer, tmp_path):
    cfg = micro_run_config(world[0], tmp_path / "run")
    torch.manual_seed(0)
    return build_model(cfg, tokenizer).eval(), Templates(
        tokenizer, cfg.model.image_tokens, cfg.model.max_seq_len
    )


def test_loglikelihood_is_the_models_own(world, tokenizer, tmp_path):
    model, templates = _model(world, tokenizer, tmp_path)
    lm = MmkdLM(model, templates, batch_size=4)

    class Request:
        def __init__(self, *args):
            self.args = args

    context, continuation = "Question: What colour is the ball?\nAnswer:", " red"
    ((score, _),) = lm.loglikelihood([Request(context, continuation)])
    prompt, answer = templates.prompt_ids("What colour is the ball?", 0), templates.answer_ids("red")
    with torch.no_grad():
        logp = model(torch.tensor([prompt + answer])).log_softmax(-1)[0]
    want = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(answer))
    assert score == pytest.approx(want, abs=1e-4)


def test_world_knowledge_and_user_tasks_run_offline(world, tokenizer, tmp_path, offline, monkeypatch):
    model, templates = _model(world, tokenizer, tmp_path)
    docs = [
        {"id": f"c{i}", "question": f"What colour is thing {i}?", "choices": ["red", "blue"], "label": i % 2}
        for i in range(6)
    ]
    (tmp_path / "colours.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    include = tmp_path / "tasks"
    include.mkdir()
    for n, text in enumerate(USER_TASKS.split("---\n")):
        (include / f"task{n}.yaml").write_text(text.format(data=tmp_path / "colours.jsonl"))
    tasks = [WORLD_TASK, "colours_mc", "colours_gen"]
    indexed = []  # include_defaults of each task manager: lm-eval's 15k built-in YAMLs take ~10 s
    monkeypatch.setattr(
        lm_eval_suite,
        "TaskManager",
        lambda **kw: indexed.append(kw.get("include_defaults", True)) or TaskManager(**kw),
    )
    check_tasks(tasks, str(include))
    suite, records = evaluate_lm_eval(model, templates, tasks, str(include), world[1], tmp_path / "out", 8, 0)
    assert indexed == [False, False]  # local tasks only: the built-in registry is never indexed
    assert suite[WORLD_TASK]["n"] == world[0].bench_per_ability and suite[WORLD_TASK]["metric"] == "acc"
    assert suite["colours_mc"]["n"] == 6 and suite["colours_gen"]["metric"] == "exact_match"
    assert all(0 <= r["score"] <= 1 for r in records)
    # Multiple-choice tasks carry p_correct: the gold choice's share of the choices' likelihood,
    # above one half exactly where acc (two choices) took the gold one.
    mc = [r for r in records if r["benchmark"] == "colours_mc"]
    assert all((r["continuous"]["p_correct"] > 0.5) == (r["score"] == 1.0) for r in mc)
    assert suite["colours_mc"]["continuous"]["p_correct"]["chance"] == 0.5
    assert "p_correct" in suite[WORLD_TASK]["continuous"] and "continuous" not in suite["colours_gen"]
    assert {r["id"] for r in records if r["benchmark"] == "colours_mc"} == {d["id"] for d in docs}
    # A misspelt name is caught before training, beside built-in, local and world tasks that resolve.
    with pytest.raises(ValueError, match=r"unknown tasks \['mmlu_prooo'\] \(not in lm-eval's registry or "):
        check_tasks(["mmlu_prooo", "arc_easy", "colours_mc", WORLD_TASK], str(include))
    assert indexed[2:] == [False, True]


def test_task_documents_are_checked_for_contamination(world, tmp_path, offline):
    """A local task whose question copies a training text is found by the decontamination check."""
    text = next(iter(open_dataset(world[1] / "text"))).text
    leaked = " ".join(text.split()[:16])
    docs = [
        {"id": "leak", "question": leaked, "choices": ["red", "blue"], "label": 1},
        {
            "id": "new",
            "question": "What colour is the thing that nobody has ever described before?",
            "choices": ["red", "blue"],
            "label": 0,
        },
    ]
    (tmp_path / "colours.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    include = tmp_path / "tasks"
    include.mkdir()
    (include / "task.yaml").write_text(USER_TASKS.split("---\n")[0].format(data=tmp_path / "colours.jsonl"))
    items = task_items(["colours_mc", WORLD_TASK], str(include), world[1], tmp_path / "out")
    assert [(it.id, it.question, it.answer) for it in items["colours_mc"]] == [
        ("leak", f"Question: {leaked}\nAnswer:", "blue"),
        ("new", f"Question: {docs[1]['question']}\nAnswer:", "red"),
    ]
    assert len(items[WORLD_TASK]) == world[0].bench_per_ability
    report = check({"text": world[1] / "text"}, {("lm_eval", t): v for t, v in items.items()})
    entry = report["benchmarks"]["lm_eval/colours_mc"]
    assert entry["text_checked"] == 2 and entry["text_overlap"] == 1
    assert entry["text_examples"][0]["item"] == "leak"
