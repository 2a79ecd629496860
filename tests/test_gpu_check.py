"""The GPU check (bench/gpu_check.py) run on CPU at its tiny scale: the same parts and code paths as
on a GPU (torchrun, FSDP2, bf16, activation checkpointing, the trainer's metrics), only the device
and the sizes differ; a part that fails is reported and the others still run."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _check(tmp_path, parts: str) -> tuple[subprocess.CompletedProcess, str]:
    out = tmp_path / "gpu_check.md"
    args = [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--scale", "tiny", "--parts", parts,
            "--work", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    return proc, out.read_text()


def test_dense_flash_and_generation_parts_report_on_cpu(tmp_path):
    proc, report = _check(tmp_path, "dense,flash,generation")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report == proc.stdout  # the file holds what was printed
    dense = report[: report.index("## flash")]
    rows = [line.split("|")[1:-1] for line in dense.splitlines() if line.startswith("| ")]
    steps = [(int(r[0]), r[1].strip()) for r in rows if r[0].strip().isdigit()]
    assert steps == [(1, "warm-up"), (2, "timed"), (3, "timed")]  # every step, as the trainer logged it
    metrics = [json.loads(x) for x in (tmp_path / "work/dense_1rank/metrics.jsonl").read_text().splitlines()]
    tokens = sum(m["tokens_per_s"] * m["window_s"] for m in metrics[1:])
    seconds = sum(m["window_s"] for m in metrics[1:])
    assert f"**{tokens / seconds:,.0f} tokens/s** in all" in report  # time-weighted over the timed steps
    assert "MFU n/a (no peak FLOP/s known for this device)" in report
    assert "skipped: flash-attn runs on CUDA only" in report
    generation = report[report.index("## generation") :]
    assert "| 4 |" in generation and "x | True |" in generation  # cached generation = full recomputation


def test_a_failing_part_is_reported_and_the_next_still_runs(tmp_path):
    gpu_check = _module()

    def broken(ctx):
        yield "measured before the failure"
        raise RuntimeError("exit 1: the planted failure")

    def fine(ctx):
        yield "the next part's line"

    gpu_check.PARTS.update(broken=broken, fine=fine)
    report = gpu_check.Report(tmp_path / "report.md")
    ctx = gpu_check.Context(None, gpu_check.SCALES["tiny"], tmp_path)
    assert gpu_check.run_parts(ctx, ["broken", "fine"], report) == ["broken"]
    text = (tmp_path / "report.md").read_text()
    assert "measured before the failure\nFAILED after 0 s: RuntimeError: exit 1: the planted failure" in text
    assert "## fine\n\nthe next part's line" in text


def test_metrics_are_read_as_the_trainer_writes_them(tmp_path):
    """A line the trainer is still writing is read at the next poll, once; every line makes one row."""
    gpu_check = _module()
    path = tmp_path / "metrics.jsonl"
    tail = gpu_check.MetricsTail(path, warmup=1)
    assert list(tail()) == []  # no file yet
    record = {"loss": 2.0, "tokens_per_s": 100.0, "window_s": 2.0, "flops_per_s_per_device": 5e12}
    line = json.dumps({"step": 1, **record}) + "\n"
    path.write_text(line + line[:10])
    assert list(tail()) == ["| 1 | warm-up | 2.000 | 100 | n/a | 2.00 |"]
    path.write_text(line + json.dumps({"step": 2, **record, "tokens_per_s": 300.0, "mfu": 0.5}) + "\n")
    assert list(tail()) == ["| 2 | timed | 2.000 | 300 | 50.0% | 2.00 |"]
    assert list(tail()) == []
    with path.open("a") as f:  # a slower step: averages weigh each window by its seconds
        f.write(json.dumps({"step": 3, **record, "window_s": 6.0, "flops_per_s_per_device": 1e12}) + "\n")
    assert len(list(tail())) == 1
    # (300 x 2 + 100 x 6) / 8 s; FLOP/s (5 x 2 + 1 x 6) / 8 s against a 10 TFLOP/s peak
    assert "(8.0 s): **150 tokens/s** in all, 2.0 TFLOP/s per device, **MFU 20.0%**" in tail.summary(1e13)[0]


@pytest.mark.slow
def test_discrete_part_reports_on_cpu(tmp_path):
    proc, report = _check(tmp_path, "discrete")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| object_p: generated / random ids / reconstruction |" in report


def test_the_full_scale_trains_the_whole_dense_3b_from_random_weights():
    """What the GPU runs, checked here: the full scale's command composes and validates into the whole
    dense_3b (every layer, the 64k vocabulary, 2.95B parameters) from random weights (building world
    foundations at this size would spend the GPU's minutes), packed 4096-token rows, 25 steps."""
    import torch

    from mmkd.config import to_run_config
    from mmkd.model import VLM
    from mmkd.model.flops import param_counts
    from tests.conftest import composed

    gpu_check = _module()
    scale = gpu_check.SCALES["full"]
    cfg = to_run_config(composed(*gpu_check.dense_overrides(scale))).validate()
    m, t = cfg.model, cfg.train
    assert (m.layers, m.vision_layers, m.width, m.vocab_size, m.init) == (32, 27, 2560, 64000, "scratch")
    assert (t.engine, t.bf16, t.activation_checkpointing, t.packing, m.max_seq_len) == (
        "fsdp2",
        True,
        True,
        True,
        4096,
    )
    assert t.budget_tokens // (t.global_batch * m.max_seq_len) == scale.warmup + scale.timed == 25
    assert scale.timed >= 20
    with torch.device("meta"):
        model = VLM(m, image_token_id=3)
    params = sum(p.numel() for p in model.parameters())
    assert params == param_counts(m, m.vocab_size).total and 2.9e9 < params < 3.1e9
