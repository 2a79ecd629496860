"""Every command that README.md and docs/*.md show runs as written.

A command with nothing of the user's in it runs here, as a subprocess from a folder of its own, on a
smoke budget: the micro model, `train=smoke`, a small world, and budgets cut to a few steps; the
overrides it states are kept (a model or budget it names is the one thing replaced). A training
command starts in an empty folder (each is an alternative: a run directory holding another run is
refused); the others start from a copy of the runs made by the README's main job and baseline. A command
that needs what the tests cannot have (your files, a served model, a cluster, a download) names the
test that runs the same path on fixtures, and that test must exist. A command in neither list fails
here: add it to one.

About 10 minutes on 2 cores, outside the default run: `python -m pytest -m docs`; `.ci/run` runs it.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, SMALL_SIZES, run_python, torchrun

pytestmark = pytest.mark.docs

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LAUNCHERS = ("python launch/", "torchrun ")
HYDRA = ("train.py", "build.py", "clip.py", "foundations.py")  # the others take plain key=value arguments

BRANCH_TEST = "test_train.py::test_a_run_branches_from_another_where_their_curricula_part"
DECISION_TEST = "test_decide.py::test_report_cli_prints_snr_and_decision_accuracy_between_two_scales"
# A command holding one of these needs something the tests cannot have; the test runs its path.
COVERED = {
    "/llm/dir": "test_hf.py::test_a_run_starts_from_the_configured_checkpoints",
    "build.scale_clip": "test_scale.py::test_the_clip_baseline_selects_by_similarity_and_needs_a_clip",
    "build.wait_s": "test_pipeline.py::test_a_two_stage_build_runs_in_one_submission_over_four_processes",
    "hydra/launcher=slurm": "test_pipeline.py::test_sweep_through_submitit_and_the_slurm_launcher_config",
    "custom.": "test_custom_suites.py::test_jsonl_and_tsv_suites_load",
    "mmlu_pro": "test_lm_eval.py::test_world_knowledge_and_user_tasks_run_offline",
    "lm_eval_tasks=": "test_lm_eval.py::test_world_knowledge_and_user_tasks_run_offline",
    "vlmeval": "test_vlmeval.py::test_multiple_choice_tsv_through_the_kit",
    "convert.py": "test_adapters.py::test_cli_converts_coco",
    # Seed 004's Table 4: the SFT selections branch from a pre-training run, whose stage-end checkpoint
    # is evaluated before SFT, and the report reads those runs (the report CLI is tested on its own).
    "train.branch_from": BRANCH_TEST,
    "scale_full/seed0/checkpoints": BRANCH_TEST,
    # docs/protocol.md: a run read before its instruction stage, at its kept stage-end checkpoint.
    "checkpoints/step-00002560": BRANCH_TEST,
    "runs/scale_clip10]": "test_report.py::test_report_cli_writes_markdown_csv_and_png",
    "image=my_photo.png": "test_pipeline.py::test_train_then_eval_then_eval_only",  # your picture
    # Decision accuracy needs the same recipes run at two scales; planted there.
    "large=runs/full": DECISION_TEST,
    "runs=runs/seed000/": DECISION_TEST,  # docs/decisions.md's report of its committed runs
    # The seed-000 table: 18 runs side by side (the same launcher runs two there), and the README
    # section written from its committed report (here: from a planted one).
    "caption_only,synthetic_vqa": "test_pipeline.py::test_a_local_sweep_runs_its_jobs_side_by_side",
    "doc_tables.py docs=[README.md]": "test_doc_tables.py::test_the_tool_rewrites_a_stale_section_and_check_names_the_doc",  # noqa: E501
    "annotator=openai": "test_builders.py::test_openai_build_rejects_bad_replies_counts_them_and_reruns_from_cache",  # noqa: E501
    "--nnodes": "test_parallelize.py",  # several machines; FSDP2 on two ranks is tested there
    "model=dense_3b": "test_model.py",  # 3B parameters; its shapes and FLOPs are tested without weights
    # The discrete model trains the world's visual tokenizer (minutes) first; the same path on
    # discrete_micro with a small tokenizer, and the partial-training chain, run there.
    "exports/text_lm": "test_discrete.py::test_partial_training_starts_from_a_decoder_trained_on_the_worlds_text",  # noqa: E501
    "recipe=text_only": "test_discrete.py::test_partial_training_starts_from_a_decoder_trained_on_the_worlds_text",  # noqa: E501
    "model=discrete_tiny": "test_discrete.py::test_a_run_trains_evaluates_both_directions_and_exports_to_transformers",  # noqa: E501
    "exports/discrete": "test_discrete.py::test_a_run_trains_evaluates_both_directions_and_exports_to_transformers",  # noqa: E501
    "generation_prompts=": "test_discrete.py::test_a_run_trains_evaluates_both_directions_and_exports_to_transformers",  # noqa: E501
}
# The smoke setting: a small world (shared by every command), the micro model, a few steps.
DATA = {
    "data.world.image_size": 48,
    "data.bench_per_ability": 8,
    "data.vocab_size": 512,
    "data.samples_per_shard": 100,
    **{f"data.sizes.{k}": v for k, v in SMALL_SIZES.items()},
}
SMOKE = {"model": "micro", "train": "smoke", "eval.max_items": 4}
# The world foundations (model.init=world, launch/foundations.py): a few steps instead of minutes.
SMOKE |= {"foundations.vision_steps": 3, "foundations.vision_batch": 8, "foundations.text_steps": 3}
SMOKE |= {"foundations.text_batch": 4, "foundations.eval_items": 8}
TOKENIZER_SMOKE = {"steps": 4, "batch": 4, "eval_images": 4}
CLIP_SMOKE = {"clip.steps": 3, "clip.batch_size": 8, "clip.eval_items": 10}
BUDGETS = {"train.budget_tokens": 32 * 160 * 4, "train.budget_samples": 512}  # 4 packed / 16 steps


def commands() -> list[tuple[str, str]]:
    """(where, command) for each launcher command in a fenced block (continuation lines joined, a
    trailing comment dropped, `a && b` split), once each, where it first appears."""
    out: dict[str, str] = {}
    for doc in DOCS:
        fenced, held = False, ""
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced, held = not fenced, ""
                continue
            if not fenced:
                continue
            line = held + line.strip()
            if line.endswith("\\"):
                held = line[:-1] + " "
                continue
            held = ""
            for command in re.split(r"\s+#\s", line)[0].split("&&"):
                command = " ".join(command.split())
                if command.startswith(LAUNCHERS):
                    out.setdefault(command, f"{doc.relative_to(REPO)}:{n}")
    return [(where, command) for command, where in out.items()]


def covered_by(command: str) -> str | None:
    return next((test for key, test in COVERED.items() if key in command), None)


def smoke(command: str, data_root: Path, cache: Path) -> list[str]:
    """The command's argv for `python`, on the smoke setting."""
    words = shlex.split(command)
    launcher: list[str] = []
    if words[0] == "torchrun":
        nproc = next((w.split("=")[1] for w in words if w.startswith("--nproc_per_node=")), "1")
        words = words[1 + sum(w.startswith("--") for w in words[1:]) :]
        launcher = torchrun(int(nproc))
    else:
        words = words[1:]  # python
    script, args = words[0], words[1:]
    if Path(script).name == "visual_tokenizer.py":  # a few steps instead of minutes
        args = [a for a in args if a.split("=")[0] not in TOKENIZER_SMOKE] + [
            f"{k}={v}" for k, v in TOKENIZER_SMOKE.items()
        ]
    if Path(script).name in HYDRA:
        keys = [a.split("=")[0] for a in args]
        args = [f"{k}={BUDGETS[k]}" if k in BUDGETS else a for k, a in zip(keys, args, strict=True)]
        given = {k.lstrip("+") for k in keys}
        args += [f"{k}={v}" for k, v in SMOKE.items() if k not in given]
        args += [f"{k}={v}" for k, v in DATA.items()]
        args += [f"data.root={data_root}", f"annotator.cache_dir={cache}"]
    if Path(script).name == "clip.py":  # a few steps instead of minutes
        args = [a for a in args if a.split("=")[0] not in CLIP_SMOKE] + [
            f"{k}={v}" for k, v in CLIP_SMOKE.items()
        ]
    return [*launcher, str(REPO / script), *args]


MAIN_JOB = "torchrun launch/train.py recipe=pair_caption_v2"
BASELINE = "python launch/train.py recipe=baseline"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A folder where the README's main job and baseline ran (smoke): runs/ for the commands that
    read a trained run; the world and the annotator cache they built, shared by every command."""
    root = tmp_path_factory.mktemp("docs")
    data, cache, runs = root / "data", root / "cache", root / "template"
    runs.mkdir()
    for command in (MAIN_JOB, BASELINE):
        run_python(smoke(command, data, cache), timeout=900, cwd=runs)
    return data, cache, runs


def test_every_command_is_run_or_covered():
    found = commands()
    assert any(c == MAIN_JOB for _, c in found) and any(c == BASELINE for _, c in found)
    for where, command in found:
        test = covered_by(command)
        if test is not None:
            file, _, name = test.partition("::")
            text = (REPO / "tests" / file).read_text()
            assert not name or f"def {name}(" in text, f"{where}: {command!r} names a missing test {test}"


@pytest.mark.parametrize(
    "where, command", [c for c in commands() if covered_by(c[1]) is None], ids=lambda x: str(x)[:70]
)
def test_command_runs_as_written(where, command, template, tmp_path):
    data, cache, runs = template
    if command in (MAIN_JOB, BASELINE):
        return  # ran to make the template
    cwd = tmp_path / "cwd"
    if "launch/train.py" in command and "train.resume=force" not in command:
        cwd.mkdir()  # a training line is an alternative to the others: it starts a run of its own
    else:
        shutil.copytree(runs, cwd)  # evaluation, export, reports, builds, a forced resume: after the runs
    run_python(smoke(command, data, cache), timeout=900, cwd=cwd)
