"""The GPU check: what CPU tests cannot show, measured part by part on a machine with CUDA.

    bash bench/gpu_check.sh                                   # one command, at most 8 minutes
    python bench/gpu_check.py --device cpu --scale tiny       # the same parts on CPU (the test's run)

Parts, each reporting on its own: a part that fails or cannot run here says why, and the next runs.
- dense: the whole dense_3b (32 decoder + 27 vision layers, a 64k vocabulary, bf16, activation
  checkpointing, fused AdamW, packed 4096-token rows) trained through `launch/train.py` under FSDP2 on
  one rank, and on two where two GPUs exist. Every step is printed as the trainer logs it; tokens/s
  and MFU are time-weighted over the timed steps after the warm-up (causal attention counted at half,
  `mmkd/model/flops.py`).
- flash: flash-attn varlen against SDPA with a block-diagonal mask on the same packed rows (bf16).
- generation: KV-cache generation against full recomputation (bench/generation.py).
- discrete: the discrete model trained and evaluated on one device (`model=discrete_micro
  train=smoke`), its world visual tokenizer built first; tokens/s and the generation table's
  precision beside the random-id floor.

Lines print as they come, and the markdown for bench/RESULTS.md is rewritten after each line
(`--out`, default $OUT/gpu_check.md where $OUT is set): a run its timeout cuts short still reports
what it measured. `--scale tiny` swaps the sizes (micro models, a few steps) and nothing else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from mmkd.model.config import ModelConfig
from mmkd.model.decoder import Decoder
from mmkd.model.varlen import flash_available
from mmkd.tracking import device_peak_flops

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Scale:
    """The sizes of one scale of the check; the code paths are the same at every scale."""

    model: list[str]  # overrides naming the dense model
    row_tokens: int  # packed row length (the model's max_seq_len)
    global_batch: int  # packed rows per step
    warmup: int  # steps left out of the averages (allocation, autotuning, the first collectives)
    timed: int
    generation: list[list[str]]  # bench/generation.py argument sets


SCALES = {
    "full": Scale(
        model=["model=dense_3b", "model.vocab_size=64000"],
        row_tokens=4096,
        global_batch=8,
        warmup=5,
        timed=20,
        # the tiny model in fp32, then dense_3b's shapes (4 decoder layers) in bf16
        generation=[
            [],
            ["--model", "dense_3b", "--layers", "4", "--dtype", "bfloat16", "--new-tokens", "64"],
        ],
    ),
    "tiny": Scale(
        model=["model=micro"],
        row_tokens=160,
        global_batch=2,
        warmup=1,
        timed=2,
        generation=[["--model", "micro", "--batch", "4", "--new-tokens", "4"]],
    ),
}


class Skipped(Exception):
    """A part that cannot run on this machine (no CUDA, no flash-attn): reported, not a failure."""


class Report:
    """Prints each line at once and keeps the markdown file current after every line."""

    def __init__(self, out: Path | None):
        self.out, self.lines = out, []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)
        if self.out:
            tmp = self.out.with_suffix(".tmp")
            tmp.write_text("\n".join(self.lines) + "\n")
            tmp.replace(self.out)


@dataclasses.dataclass
class Context:
    device: torch.device
    scale: Scale
    work: Path  # run directories and the shared data root

    @property
    def data_root(self) -> Path:
        return self.work / "data"


def stream(args: list[str], log: Path, poll: Callable[[], Iterator[str]] = lambda: iter(())) -> Iterator[str]:
    """Run a command (output to `log`), yielding `poll()`'s new lines while it runs; a failure raises
    with the log's tail."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(1.0)
            yield from poll()
        yield from poll()
    if proc.returncode:
        tail = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-15:]
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(args[-3:])}\n" + "\n".join(tail))


class MetricsTail:
    """The records a run appends to its metrics.jsonl, each yielded once, as a table row."""

    def __init__(self, path: Path, warmup: int):
        self.path, self.warmup, self.records = path, warmup, []

    def __call__(self) -> Iterator[str]:
        if not self.path.exists():
            return
        text = self.path.read_text()
        complete = text[: text.rfind("\n") + 1].splitlines()  # a line being written waits for the next poll
        for line in complete[len(self.records) :]:
            r = json.loads(line)
            self.records.append(r)
            phase = "warm-up" if r["step"] <= self.warmup else "timed"
            mfu = f"{r['mfu']:.1%}" if "mfu" in r else "n/a"
            rate, seconds = f"{r['tokens_per_s']:.0f}", f"{r['window_s']:.2f}"
            yield f"| {r['step']} | {phase} | {r['loss']:.3f} | {rate} | {mfu} | {seconds} |"

    def summary(self, peak: float | None) -> list[str]:
        timed = [r for r in self.records if r["step"] > self.warmup]
        if not timed:
            raise RuntimeError("no timed step was logged")
        seconds = sum(r["window_s"] for r in timed)
        tokens = sum(r["tokens_per_s"] * r["window_s"] for r in timed)
        flops = sum(r["flops_per_s_per_device"] * r["window_s"] for r in timed)
        mfu = f"{flops / seconds / peak:.1%}" if peak else "n/a (no peak FLOP/s known for this device)"
        return [
            f"timed steps {timed[0]['step']}-{timed[-1]['step']} ({seconds:.1f} s): "
            f"**{tokens / seconds:,.0f} tokens/s** in all, "
            f"{flops / seconds / 1e12:.1f} TFLOP/s per device, **MFU {mfu}**",
        ]


def dense_overrides(s: Scale) -> list[str]:
    """The dense part's training command, from random weights (protocol=pretrain: no world
    foundations to build at this size) on the smoke world's data."""
    return [
        "recipe=baseline", "protocol=pretrain", *s.model, "train=smoke", "train.engine=fsdp2",
        "train.bf16=true", "train.activation_checkpointing=true", "train.packing=true",
        f"train.global_batch={s.global_batch}", "train.micro_batch=1",
        f"train.budget_tokens={(s.warmup + s.timed) * s.global_batch * s.row_tokens}", "train.log_every=1",
        "train.checkpoint_every=0", "eval.after_train=false",
    ]  # fmt: skip


def dense(ctx: Context) -> Iterator[str]:
    s = ctx.scale
    ranks = [1, 2] if ctx.device.type == "cuda" and torch.cuda.device_count() >= 2 else [1]
    for n in ranks:
        run = ctx.work / f"dense_{n}rank"
        overrides = [*dense_overrides(s), f"run_dir={run}", f"data.root={ctx.data_root}"]
        setup = f"FSDP2 on {n} rank(s), bf16, activation checkpointing, packed {s.row_tokens}"
        yield f"### {' '.join(s.model)}: {setup}"
        yield ""
        yield "| step | phase | loss | tokens/s | MFU | seconds |"
        yield "| ---: | --- | ---: | ---: | ---: | ---: |"
        tail = MetricsTail(run / "metrics.jsonl", s.warmup)
        torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "launch/train.py"]
        yield from stream([*torchrun, *overrides], ctx.work / f"dense_{n}rank.log", tail)
        yield ""
        yield from tail.summary(device_peak_flops(ctx.device))
        yield ""


def flash(ctx: Context) -> Iterator[str]:
    if ctx.device.type != "cuda":
        raise Skipped("flash-attn runs on CUDA only")
    if not flash_available():
        raise Skipped("flash-attn is not installed here (pip install flash-attn)")
    cfg = dataclasses.replace(ModelConfig(), width=2560, heads=20, kv_heads=4, ffn=6912, layers=2,
                              max_seq_len=4096, vocab_size=1000)  # fmt: skip
    lengths = [700, 1500, 900, 996]  # four documents filling one 4096-token row
    segments = torch.cat([torch.full((n,), i + 1) for i, n in enumerate(lengths)])[None].to(ctx.device)
    torch.manual_seed(0)
    x = torch.randn(1, 4096, cfg.width, device=ctx.device, dtype=torch.bfloat16)
    out = {}
    for attention in ("flash", "sdpa"):
        torch.manual_seed(0)
        decoder = Decoder(dataclasses.replace(cfg, attention=attention)).to(ctx.device, torch.bfloat16)
        with torch.no_grad():
            out[attention] = decoder(x, segments=segments).float()
    diff = (out["flash"] - out["sdpa"]).abs().max().item()
    yield (f"flash-attn varlen vs SDPA (block-diagonal mask), 2 dense_3b layers, bf16, 4 packed documents: "
           f"max |diff| = {diff:.4f} (outputs up to {out['sdpa'].abs().max().item():.1f})")  # fmt: skip


def generation(ctx: Context) -> Iterator[str]:
    for k, extra in enumerate(ctx.scale.generation):
        args = [sys.executable, "bench/generation.py", "--device", ctx.device.type, "--world", "smoke",
                "--data-root", str(ctx.data_root), *extra]  # fmt: skip
        log = ctx.work / f"generation_{k}.log"
        yield from stream(args, log)
        yield from log.read_text().strip().splitlines()
        yield ""


def discrete(ctx: Context) -> Iterator[str]:
    run = ctx.work / "discrete"
    # eval.html=false: the report page is CPU-side drawing (matplotlib, tested on CPU), not GPU work
    args = [sys.executable, "launch/train.py", "recipe=baseline", "model=discrete_micro", "train=smoke",
            "eval.generation_prompts=32", "eval.html=false", f"run_dir={run}",
            f"data.root={ctx.data_root}"]  # fmt: skip
    yield from stream(args, ctx.work / "discrete.log")
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    gen = json.loads((run / "eval" / "results.json").read_text())["suites"]["generation"]
    yield "| discrete_micro, train=smoke | value |"
    yield "| --- | ---: |"
    yield f"| tokens/s (last window) | {last['tokens_per_s']:.0f} |"
    for m in ("object_p", "colour_p"):
        values = " / ".join(f"{gen[m][k]:.3f}" for k in ("score", "random_ids", "reconstruction"))
        yield f"| {m}: generated / random ids / reconstruction | {values} |"
    yield ""


PARTS: dict[str, Callable[[Context], Iterator[str]]] = {
    "dense": dense,
    "flash": flash,
    "generation": generation,
    "discrete": discrete,
}


def run_parts(ctx: Context, names: list[str], report: Report) -> list[str]:
    """Each part in turn, its lines reported as they come; returns the names of the parts that failed."""
    failed = []
    for name in names:
        report(f"## {name}")
        report()
        start = time.perf_counter()
        try:
            for line in PARTS[name](ctx):
                report(line)
            report(f"({name}: {time.perf_counter() - start:.0f} s)")
        except Skipped as e:
            report(f"skipped: {e}")
        except Exception as e:  # one part's failure is reported; the others still measure
            failed.append(name)
            report(f"FAILED after {time.perf_counter() - start:.0f} s: {type(e).__name__}: {e}")
        report()
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--scale", default="full", choices=sorted(SCALES))
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--out", default="", help="the markdown report (default $OUT/gpu_check.md)")
    parser.add_argument("--work", default="", help="run directories and data (default: a temporary one)")
    args = parser.parse_args()
    names = args.parts.split(",")
    if unknown := [n for n in names if n not in PARTS]:
        raise SystemExit(f"--parts: unknown {unknown}; the parts are {list(PARTS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (the CPU run: --device cpu --scale tiny)")
    out = args.out or (os.environ.get("OUT") and str(Path(os.environ["OUT"], "gpu_check.md")))
    report = Report(Path(out) if out else None)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    report(f"# `python bench/gpu_check.py --scale {args.scale}`: {name}, torch {torch.__version__}")
    report()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(device, SCALES[args.scale], Path(args.work or tmp))
        ctx.work.mkdir(parents=True, exist_ok=True)
        failed = run_parts(ctx, names, report)
    if failed:
        raise SystemExit(f"failed parts: {', '.join(failed)} (the report says why)")


if __name__ == "__main__":
    main()
