"""The GPU check: what CPU tests cannot show, run on a machine with CUDA. Prints a markdown report for
bench/RESULTS.md (and writes it to $OUT/gpu_check.md when $OUT is set).

    python bench/gpu_check.py            # one GPU, ~5 minutes; bench/gpu_check.sh runs it with a timeout

1. One-GPU train + eval of the tiny recipe (`train=smoke`) through `launch/train.py`: the run's device,
   its tokens/s, and that evaluation wrote its results.
2. A few bf16 FSDP2 steps of dense_3b-shaped layers (`torchrun --nproc_per_node=1 ... train.engine=fsdp2
   train.bf16=true`, packed 4096-token rows, 4 decoder and 4 vision layers of dense_3b's width):
   tokens/s and MFU from the run's metrics.jsonl.
3. flash-attn varlen against SDPA with a block-diagonal mask on the same packed rows (bf16): the max
   difference of the outputs on real tokens (skipped, and said so, without flash-attn).
4. KV-cache generation against full recomputation on the GPU: same tokens, and the speed-up
   (bench/generation.py).
5. The discrete model on one GPU (`model=discrete_micro train=smoke`): the world's visual tokenizer
   trained on the GPU (a short run), visual ids, training, both evaluations; tokens/s and the
   generation table's object and colour precision beside the random-id floor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def sh(args: list[str], **kw) -> str:
    print("+", " ".join(args), flush=True)
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, **kw)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-4000:]}")
    return proc.stdout


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def tiny_train_and_eval(tmp: Path) -> list[str]:
    run = tmp / "tiny"
    sh([sys.executable, "launch/train.py", "recipe=baseline", "model=tiny", "train=smoke",
        f"run_dir={run}", f"data.root={tmp / 'data'}"])  # fmt: skip
    last = metrics(run)[-1]
    results = json.loads((run / "eval" / "results.json").read_text())
    scores = {b: round(r["score"], 3) for b, r in results["suites"]["world"].items()}
    return [
        "| tiny, train=smoke, one GPU | value |", "| --- | ---: |",
        f"| tokens/s | {last['tokens_per_s']:.0f} |", f"| MFU | {last.get('mfu', float('nan')):.4f} |",
        f"| world scores written | {len(scores)} benchmarks |",
    ]  # fmt: skip


def dense_fsdp2(tmp: Path) -> list[str]:
    run = tmp / "dense"
    overrides = [
        "recipe=baseline", "model=dense_3b", "model.layers=4", "model.vision_layers=4", "train=smoke",
        "train.engine=fsdp2", "train.bf16=true", "train.packing=true", "train.global_batch=4",
        "train.micro_batch=1", f"train.budget_tokens={12 * 4 * 4096}", "train.log_every=4",
        "train.checkpoint_every=0", "eval.after_train=false", f"run_dir={run}", f"data.root={tmp / 'data'}",
    ]  # fmt: skip
    sh([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "launch/train.py", *overrides])
    rows = metrics(run)
    last = rows[-1]  # steps 9-12: the first window holds the warm-up
    return [
        "| dense_3b shapes (4 + 4 layers), FSDP2, bf16, packed 4096 | value |", "| --- | ---: |",
        *(f"| steps {r['step'] - 3}-{r['step']}: tokens/s | {r['tokens_per_s']:.0f} |" for r in rows),
        f"| MFU (last window) | {last.get('mfu', float('nan')):.3f} |",
        f"| non-pad fraction | {last.get('nonpad_fraction', float('nan')):.3f} |",
    ]  # fmt: skip


def flash_equals_sdpa() -> list[str]:
    from mmkd.model.config import ModelConfig
    from mmkd.model.decoder import Decoder
    from mmkd.model.varlen import flash_available

    if not flash_available():
        return ["flash-attn is not installed here: flash = SDPA not checked (pip install flash-attn)."]
    cfg = dataclasses.replace(ModelConfig(), width=2560, heads=20, kv_heads=4, ffn=6912, layers=2,
                              max_seq_len=4096, vocab_size=1000)  # fmt: skip
    torch.manual_seed(0)
    out = {}
    lengths = [700, 1500, 900, 996]  # four documents filling one 4096-token row
    segments = torch.cat([torch.full((n,), i + 1) for i, n in enumerate(lengths)])[None].cuda()
    x = torch.randn(1, 4096, cfg.width, device="cuda", dtype=torch.bfloat16)
    for attention in ("flash", "sdpa"):
        torch.manual_seed(0)
        decoder = Decoder(dataclasses.replace(cfg, attention=attention)).cuda().to(torch.bfloat16)
        with torch.no_grad():
            out[attention] = decoder(x, segments=segments).float()
    diff = (out["flash"] - out["sdpa"]).abs().max().item()
    scale = out["sdpa"].abs().max().item()
    return [f"flash-attn varlen vs SDPA (block-diagonal mask), 2 dense_3b layers, bf16, 4 packed documents: "
            f"max |diff| = {diff:.4f} (outputs up to {scale:.1f})"]  # fmt: skip


def generation() -> list[str]:
    small = sh([sys.executable, "bench/generation.py", "--device", "cuda"])
    dense = ["--model", "dense_3b", "--layers", "4", "--dtype", "bfloat16", "--new-tokens", "64"]
    big = sh([sys.executable, "bench/generation.py", "--device", "cuda", *dense])
    return ["KV cache vs full recompute, tiny fp32:", *small.strip().splitlines(),
            "", "dense_3b shapes (4 layers), bf16:", *big.strip().splitlines()]  # fmt: skip


def discrete(tmp: Path) -> list[str]:
    run = tmp / "discrete"
    # A 300-step tokenizer is enough to show the path runs on the GPU (the pipeline trains it first).
    tokenizer = tmp / "visual_tokenizer"
    sh([sys.executable, "launch/visual_tokenizer.py", f"out={tokenizer}", "steps=300", "model.downsample=8",
        "model.codebook_size=64"])  # fmt: skip
    sh([sys.executable, "launch/train.py", "recipe=baseline", "model=discrete_micro", "train=smoke",
        f"model.visual_tokenizer={tokenizer / 'tokenizer'}", "eval.generation_prompts=32",
        f"run_dir={run}", f"data.root={tmp / 'data'}"])  # fmt: skip
    last = metrics(run)[-1]
    gen = json.loads((run / "eval" / "results.json").read_text())["suites"]["generation"]
    return [
        "| discrete_micro, train=smoke, one GPU | value |", "| --- | ---: |",
        f"| tokens/s | {last['tokens_per_s']:.0f} |",
        *(f"| {m}: generated / random ids / reconstruction | {gen[m]['score']:.3f} / "
          f"{gen[m]['random_ids']:.3f} / {gen[m]['reconstruction']:.3f} |" for m in ("object_p", "colour_p")),
    ]  # fmt: skip


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_check.py needs a CUDA GPU; the CPU path is covered by the tests")
    torch.backends.cuda.matmul.allow_tf32 = False  # exact comparisons in fp32
    name = torch.cuda.get_device_name()
    report = [f"## `python bench/gpu_check.py` — {name}, torch {torch.__version__}", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for part in (tiny_train_and_eval, dense_fsdp2, discrete):
            report += [*part(Path(tmp)), ""]
    for part in (flash_equals_sdpa, generation):
        report += [*part(), ""]
    text = "\n".join(report)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.md").write_text(text)


if __name__ == "__main__":
    main()
