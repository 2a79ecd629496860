"""bench/RESULTS.md's tables, each from the JSON record its bench writes with
`--json bench/results/<bench>.json` (bench/_record.py stamps the date, cores and torch version).

A section names its bench as its generator: `<!-- generated from bench/results by packing ... -->`
reads bench/results/packing.json (eval/doc_tables.py rewrites the sections).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _where(record: dict[str, Any]) -> str:
    return f"`{record['command']}`, {record['date']}, {record['cpus']} CPU cores, torch {record['torch']}"


def _smoke_run(record: dict[str, Any]) -> str:
    """bench/smoke_run.py's record: each run's seconds, and where they were measured."""
    rows = ["| run | seconds |", "| --- | ---: |"]
    for i, seconds in enumerate(record["seconds"]):
        what = "first: builds the smoke world" if i == 0 else "again: the world built"
        rows.append(f"| {i + 1} ({what}) | {seconds:.1f} |")
    return "\n".join([*rows, "", _where(record)])


def _trainer_overhead(record: dict[str, Any]) -> str:
    """bench/trainer_overhead.py's record: each round's samples/s of both loops and their ratio."""
    rows = [
        "| round | bare loop samples/s | trainer samples/s | trainer / bare |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for i, r in enumerate(record["rounds"], 1):
        rows.append(f"| {i} | {r['bare']:.0f} | {r['trainer']:.0f} | {r['ratio']:.3f} |")
    steps = f"{record['steps']} steps per loop per round, the first {record['warmup']} untimed"
    return "\n".join([*rows, "", f"Median ratio: **{record['ratio']:.3f}** ({steps}).", "", _where(record)])


def _compile_speed(record: dict[str, Any]) -> str:
    """bench/compile_speed.py's record: eager against compiled, first steps, per step, one image."""
    first, one, per = record["first_two_steps_s"], record["one_image_batch_s"], record["per_step_s"]
    median = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in per.items()}
    rows = [
        "| | eager | compiled (inductor) |",
        "| --- | ---: | ---: |",
        f"| first two steps (s) | {first['eager']:.1f} | {first['compiled']:.1f} |",
        f"| per step, median of {record['rounds']} rounds of {record['steps']} (ms) | "
        f"{median['eager']:.0f} | {median['compiled']:.0f} |",
        f"| a batch with one image (s) | {one['eager']:.2f} | {one['compiled']:.2f} |",
    ]
    graphs = record["graphs_compiled_for_one_image"]
    tail = (
        f"Speed-up per step: **{record['speedup']:.2f}x**; graphs compiled for the one-image batch: {graphs}."
    )
    return "\n".join([*rows, "", tail, "", _where(record)])


def _packing(record: dict[str, Any]) -> str:
    """bench/packing.py's record: the packer against both baselines, then as the trainer packs."""
    rows = [
        "| image tokens | row length | rows | packed non-pad | bucketed, padded to the longest "
        "| packed / bucketed | one sample per row |",
        "| ---: " * 7 + "|",
    ]
    for r in record["table"]:
        shape = f"| {r['image_tokens']} | {r['row_length']} | {r['rows']} "
        rows.append(
            shape + f"| {r['packed']:.4f} | {r['bucketed']:.4f} | {r['packed'] / r['bucketed']:.2f}x "
            f"| {r['one_per_row']:.4f} |"
        )
    rows += ["", "As the trainer packs:", "", "| image tokens | row length | rows | non-pad | longest wait "
             "(micro-batches) |", "| ---: " * 5 + "|"]  # fmt: skip
    for r in record["trainer"]:
        shape = f"| {r['image_tokens']} | {r['row_length']} | {r['rows']} "
        rows.append(shape + f"| {r['nonpad']:.4f} | {r['longest_wait']:.1f} |")
    return "\n".join([*rows, "", f"{record['samples']:,} samples; " + _where(record)])


def _annotator_client(record: dict[str, Any]) -> str:
    """bench/annotator_client.py's record: per server, each round's capacity, client rate and ratio."""
    rows = ["| server | round | capacity (requests/s) | mmkd client (requests/s) | client / capacity |",
            "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    names = {"nagle": "Nagle on (Python's default)", "nodelay": "TCP_NODELAY"}
    for kind, got in record["servers"].items():
        for i, r in enumerate(got["rounds"], 1):
            rows.append(
                f"| {names[kind]} | {i} | {r['capacity']:.0f} | {r['client']:.0f} | {r['ratio']:.2f} |"
            )
    medians = "; ".join(f"{names[k]}: **{v['ratio']:.2f}**" for k, v in record["servers"].items())
    setting = f"{record['requests']} requests per loop, {record['body_bytes']:,}-byte bodies"
    setting += f", concurrency {record['concurrency']}"
    return "\n".join([*rows, "", f"Median ratio, {medians} ({setting}).", "", _where(record)])


def _throughput(record: dict[str, Any]) -> str:
    """bench/throughput.py's record: loader and training rates, bucketed against plain, medians."""
    bucketed, plain = record["median"]["bucketed"], record["median"]["plain"]
    names = {"loader_samples_per_s": "loader samples/s", "train_samples_per_s": "train samples/s",
             "train_tokens_per_s": "train tokens/s (non-padding)"}  # fmt: skip
    rows = ["| figure | bucketed | plain | ratio |", "| --- | ---: | ---: | ---: |"]
    rows += [
        f"| {names[k]} | {bucketed[k]:.0f} | {plain[k]:.0f} | {bucketed[k] / plain[k]:.2f} |" for k in names
    ]
    rounds = f"Medians of {len(record['rounds'])} rounds of {record['steps']} batches"
    rounds += f", {record['threads']} threads."
    return "\n".join([*rows, "", rounds, "", _where(record)])


def _generation(record: dict[str, Any]) -> str:
    """bench/generation.py's record: KV-cache against full-recompute tokens/s per batch size."""
    rows = ["| batch | KV cache tokens/s | full recompute tokens/s | ratio | same tokens |",
            "| ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for r in record["rows"]:
        ratio = r["cache"] / r["recompute"]
        rows.append(
            f"| {r['batch']} | {r['cache']:.0f} | {r['recompute']:.0f} | {ratio:.2f}x | {r['same_tokens']} |"
        )
    setting = (
        f"{record['model']} model, {record['new_tokens']} new tokens, {record['dtype']} on {record['device']}"
    )
    return "\n".join([*rows, "", setting + "; " + _where(record)])


def _discrete_throughput(record: dict[str, Any]) -> str:
    """bench/discrete_throughput.py's record: the dense and discrete models' rates, medians of rounds."""
    dense, discrete = record["results"]["dense"], record["results"]["discrete"]
    names = {"samples_per_s": "samples/s", "tokens_per_s": "tokens/s (non-padding positions, images as the "
             "model sees them)", "tokens_per_sample": "tokens per sample"}  # fmt: skip
    rows = ["| | dense | discrete | discrete / dense |", "| --- | ---: | ---: | ---: |"]
    rows += [
        f"| {names[k]} | {dense[k]:,.0f} | {discrete[k]:,.0f} | {discrete[k] / dense[k]:.2f} |" for k in names
    ]
    shape = ", ".join(f"{k} {v}" for k, v in record["discrete_tiny"].items())
    turns = (
        f"Medians of {record['rounds']} rounds of {record['block']} steps each, {record['threads']} threads"
    )
    return "\n".join([*rows, "", f"{turns}; discrete_tiny: {shape}.", "", _where(record)])


def _peer_llava(record: dict[str, Any]) -> str:
    """bench/peer_llava.py's record: mmkd's step against transformers' LLaVA, round by round."""
    head = (
        "| round | mmkd VLM samples/s | transformers LlavaForConditionalGeneration samples/s | mmkd / LLaVA |"
    )
    rows = [head, "| ---: | ---: | ---: | ---: |"]
    rows += [
        f"| {i} | {r['mmkd']:.0f} | {r['llava']:.0f} | {r['ratio']:.2f} |"
        for i, r in enumerate(record["rounds"], 1)
    ]
    first = record["first_loss"]
    check = f"First loss: mmkd {first['mmkd']:.4f}, LLaVA {first['llava']:.4f}"
    share = f"supervised positions {record['supervised_share']:.1%}"
    median = f"Median ratio: **{record['ratio']:.2f}** ({record['steps']} steps per round; {check}; {share})."
    return "\n".join([*rows, "", median, "", _where(record)])


def _resume_skip(record: dict[str, Any]) -> str:
    """bench/resume_skip.py's record: a resumed loader's first-batch cost, saved state against skipping."""
    rows = ["| trained micro-batches | samples | saved state | fast-forward | ratio |", "| ---: " * 5 + "|"]
    for r in record["rows"]:
        ratio = r["skip_s"] / max(r["state_s"], 1e-3)
        seconds = f"{r['state_s']:.3f} s | {r['skip_s']:.2f} s"
        rows.append(f"| {r['batches']:,} | {r['samples']:,} | {seconds} | {ratio:.0f}x |")
    setting = (
        f"{record['samples']:,} samples of {record['size']} px, micro-batches of {record['micro_batch']}"
    )
    fresh = f"the first batch of a fresh loader: {record['fresh_s']:.3f} s"
    return "\n".join([*rows, "", f"{setting}; {fresh}.", "", _where(record)])


def _sweep_parallel(record: dict[str, Any]) -> str:
    """bench/sweep_parallel.py's record: a local sweep one job after the other against side by side."""
    cores, jobs = record["cpus"], record["jobs"]
    rows = ["| launcher | threads per job | wall |", "| --- | ---: | ---: |",
            f"| basic (one job after the other) | {cores} | {record['sequential_s']:.0f} s |",
            f"| `hydra/launcher=local_parallel` ({jobs} jobs at once, `data.num_workers=0`) | "
            f"{max(1, cores // jobs)} | {record['parallel_s']:.0f} s |"]  # fmt: skip
    ratio = f"Ratio: **{record['sequential_s'] / record['parallel_s']:.2f}x** for the side-by-side sweep"
    return "\n".join([*rows, "", f"{ratio} ({jobs} runs of {record['steps']} steps).", "", _where(record)])


BENCH_TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "smoke_run": _smoke_run,
    "trainer_overhead": _trainer_overhead,
    "compile_speed": _compile_speed,
    "packing": _packing,
    "annotator_client": _annotator_client,
    "throughput": _throughput,
    "generation": _generation,
    "discrete_throughput": _discrete_throughput,
    "peer_llava": _peer_llava,
    "resume_skip": _resume_skip,
    "sweep_parallel": _sweep_parallel,
}


def bench_section(name: str) -> Callable[[Path, str], str]:
    """The doc generator of bench `name`: its table from `<folder>/<name>.json` alone."""
    return lambda folder, _: BENCH_TABLES[name](json.loads((folder / f"{name}.json").read_text()))
