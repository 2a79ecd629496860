"""Training on the micro model: the loss falls, runs are reproducible, resume continues a run."""

import itertools
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from mmkd.checkpoint import latest_checkpoint, load_checkpoint, read_meta
from mmkd.data_builders.sources import prepare_sources, source_dirs
from mmkd.distributed import DistInfo
from mmkd.errors import CheckpointError
from mmkd.eval.suites import evaluate_checkpoint
from mmkd.schedules import learning_rate
from mmkd.trainer import train
from tests.conftest import REPO, SMALL_SIZES, micro_run_config, run_python, torchrun


def _train(world, tokenizer, run_dir, **kw):
    data, root = world
    cfg = micro_run_config(data, run_dir, **kw)
    run_dir.mkdir(parents=True, exist_ok=True)
    train(cfg, source_dirs(sorted(cfg.recipe.active()), cfg, root), tokenizer, run_dir, DistInfo())
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls(world, tokenizer, tmp_path):
    a = _train(world, tokenizer, tmp_path / "a", budget_samples=1600, lr=5e-3, log_every=10)
    assert a[-1]["loss"] < 0.6 * a[0]["loss"]
    assert a[-1]["step"] == 100 and a[-1]["samples"] == 1600
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 for r in a)


def test_same_config_gives_same_losses(world, tokenizer, tmp_path):
    a = _train(world, tokenizer, tmp_path / "a", budget_samples=320, lr=3e-3, log_every=2)
    b = _train(world, tokenizer, tmp_path / "b", budget_samples=320, lr=3e-3, log_every=2)
    assert len(a) == 10 and [r["loss"] for r in a] == [r["loss"] for r in b]


def test_checkpoints_and_resume(world, tokenizer, tmp_path):
    run = tmp_path / "r"
    first = _train(world, tokenizer, run, budget_samples=128)  # 8 steps, checkpoint every 4
    assert read_meta(run)["step"] == 8 and latest_checkpoint(run).name == "final"
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000004"]
    assert {p.name for p in latest_checkpoint(run).iterdir()} >= {".metadata", "meta.json", "COMMITTED"}
    # Resume from the step-4 checkpoint as if the run had crashed while writing the final one: a
    # checkpoint without its commit marker does not count.
    (run / "checkpoints" / "final" / "COMMITTED").unlink()
    assert latest_checkpoint(run).name == "step-00000004"
    metrics = _train(world, tokenizer, run, budget_samples=128)
    assert read_meta(run)["step"] == 8
    # Each step is logged once (the records after step 4 were dropped, then redone), and the resumed
    # steps reproduce the uninterrupted run's losses bit for bit.
    assert [(m["step"], m["loss"]) for m in metrics] == [(m["step"], m["loss"]) for m in first]
    # train.log tells both runs apart: the start, the resume, every logged step, each save, the end.
    log = (run / "train.log").read_text()
    assert log.count("train: baseline seed 0, steps 0..8") == 1 and "steps 4..8" in log
    assert "resume: from" in log and "step-00000004 (step 4)" in log and log.count("done: 8 steps") == 2
    assert log.count("step 8/8 loss") == 2 and "checkpoint: " in log
    # The data stream continued from the state saved with the checkpoint, not by re-reading.
    assert (run / "checkpoints" / "step-00000004" / "loader.rank0.json").exists()
    assert "data stream of stage 'all' continues from its saved state" in log and "skipping" not in log
    # A checkpoint written before the samples/tokens counters and the loader state were saved still
    # resumes exactly: the loader skips the batches already trained on.
    (run / "checkpoints" / "final" / "COMMITTED").unlink()
    meta_path = run / "checkpoints" / "step-00000004" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["seen"]
    meta_path.write_text(json.dumps(meta))
    (run / "checkpoints" / "step-00000004" / "loader.rank0.json").unlink()
    metrics = _train(world, tokenizer, run, budget_samples=128)
    assert metrics[-1]["step"] == 8 and metrics[-1]["samples"] == 128  # 8 steps of 16, from the step
    assert [(m["step"], m["loss"]) for m in metrics] == [(m["step"], m["loss"]) for m in first]
    assert "skipping the 8 micro-batches" in (run / "train.log").read_text()


def test_resume_refuses_a_different_config(world, tokenizer, tmp_path):
    run = tmp_path / "r"
    _train(world, tokenizer, run, budget_samples=64)
    with pytest.raises(ValueError, match=r"train\.lr \(saved 0\.001, now 0\.5\)"):
        _train(world, tokenizer, run, budget_samples=64, lr=0.5)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"seed": 1}, r"seed \(saved 0, now 1\)"),
        ({"data": {"vqa_turns": 4}}, r"data\.vqa_turns \(saved 8, now 4\)"),
        ({"data": {"num_workers": 2}}, r"data\.num_workers \(saved 0, now 2\)"),
        ({"world_size": 2}, r"world_size \(saved 1, now 2\)"),
    ],
)
def test_resume_refuses_a_changed_stream_naming_the_key_unless_forced(
    world, tokenizer, tmp_path, change, key
):
    """Seed, data settings, loader workers and world size all change the stream: a resume that
    differs in one fails before any compute, naming it; train.resume=force continues anyway."""
    from mmkd.resume import check_resumable, run_identity

    data, root = world
    run = tmp_path / "r"
    _train(world, tokenizer, run, budget_samples=32, checkpoint_every=1)
    cfg = micro_run_config(data, run, budget_samples=32, checkpoint_every=1)
    cfg.seed = change.get("seed", cfg.seed)
    for k, v in change.get("data", {}).items():
        setattr(cfg.data, k, v)
    sources = source_dirs(sorted(cfg.recipe.active()), cfg, root)
    identity = run_identity(cfg, sources, change.get("world_size", 1))
    meta = read_meta(run)
    with pytest.raises(ValueError, match=key):
        check_resumable(meta, identity, run, force=False)
    check_resumable(meta, identity, run, force=True)  # prints what differs, continues
    if "world_size" not in change:  # through train() itself: refused before a step is taken
        with pytest.raises(ValueError, match=key):
            train(cfg, sources, tokenizer, run, DistInfo())
        cfg.train.resume = "force"
        train(cfg, sources, tokenizer, run, DistInfo())


def test_resume_refuses_a_rebuilt_source(world, tokenizer, tmp_path):
    """A source rebuilt under the same name is other data: its manifest hash is part of the run."""
    from mmkd.resume import check_resumable, run_identity

    data, root = world
    cfg = micro_run_config(data, tmp_path)
    sources = source_dirs(sorted(cfg.recipe.active()), cfg, root)
    saved = {"identity": run_identity(cfg, sources, 1)}
    saved["identity"]["sources.vqa0"] = "another hash"
    with pytest.raises(ValueError, match=r"sources\.vqa0 \(saved 'another hash'"):
        check_resumable(saved, run_identity(cfg, sources, 1), tmp_path, force=False)


def test_schedule_warms_up_then_decays_to_min_ratio():
    lrs = [learning_rate(s, 100, 1.0, 0.1, 0.1) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0 and max(lrs) == 1.0
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:])) and abs(lrs[-1] - 0.1) < 0.01


def _torchrun(data, run_dir, *overrides, script="launch/train.py", env=None, ranks=2):
    """launch/train.py on two gloo ranks (one process with `ranks=1`) with the small world; returns
    metrics.jsonl's records."""
    run_python(_command(data, run_dir, overrides, script, ranks), cwd=run_dir.parent, env=env or {})
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _command(data, run_dir, overrides, script="launch/train.py", ranks=2) -> list[str]:
    sizes = [f"data.sizes.{k}={v}" for k, v in SMALL_SIZES.items()]
    return [
        *(torchrun(ranks) if ranks > 1 else []),
        str(REPO / script),
        "model=micro",
        "train=smoke",
        "eval.after_train=false",
        f"run_dir={run_dir}",
        f"data.root={data.root}",
        "data.num_workers=0",
        f"data.bench_per_ability={data.bench_per_ability}",
        f"data.vocab_size={data.vocab_size}",
        f"data.samples_per_shard={data.samples_per_shard}",
        *sizes,
        *overrides,
    ]


def test_a_signal_mid_run_saves_that_step_and_the_rerun_continues_bit_identically(
    world, tokenizer, tmp_path, monkeypatch
):
    """In process: SIGTERM arrives during step 3's backward pass; the step ends, a committed
    checkpoint is saved there (no periodic ones), `Preempted` names it, and the rerun continues with
    the uninterrupted run's losses, bit for bit (the launcher's exit status: the slow test below)."""
    import os
    import signal

    from mmkd import trainer
    from mmkd.preemption import Preempted

    kw = {"budget_samples": 128, "checkpoint_every": 0, "log_every": 1}
    reference = _train(world, tokenizer, tmp_path / "reference", **kw)
    calls, accumulate = [], trainer.accumulate_gradients

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return accumulate(*args, **kwargs)

    monkeypatch.setattr(trainer, "accumulate_gradients", signalled)
    with pytest.raises(Preempted, match=r"preempted by SIGTERM at step 3: saved .*step-00000003"):
        _train(world, tokenizer, tmp_path / "run", **kw)
    assert (tmp_path / "run/checkpoints/step-00000003/COMMITTED").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the watch handed it back
    monkeypatch.undo()
    resumed = _train(world, tokenizer, tmp_path / "run", **kw)
    assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in reference]


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, 2])
def test_a_preempted_run_saves_its_step_and_the_rerun_continues_bit_identically(ranks, world, tmp_path):
    """SIGTERM mid-run (a scheduler's preemption): the step in progress ends on every rank, a
    committed checkpoint is saved there (no periodic ones here), and the rerun continues from it with
    the uninterrupted run's losses, bit for bit. One process exits 143 for the scheduler to requeue;
    under torchrun (two ranks) torchrun passes the signal on, gives the workers its 30 s to save, and
    exits 1 itself with its own SignalException, whatever its workers did."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ("train.budget_samples=1024", "train.checkpoint_every=0", "train.log_every=1")
    reference = _torchrun(world[0], tmp_path / "reference", *args, ranks=ranks)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, *_command(world[0], run, args, ranks=ranks)]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + 240
    while (
        not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3) and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (143 if ranks == 1 else 1), err[-2000:]
    step = len(metrics.read_text().splitlines())
    assert 3 <= step < len(reference)  # stopped mid-run, at the step it was in
    assert "preempted by SIGTERM at step" in err and (run / f"checkpoints/step-{step:08d}/COMMITTED").exists()
    assert f"preempted by SIGTERM at step {step}" in (run / "train.log").read_text()
    resumed = _torchrun(world[0], run, *args, ranks=ranks)
    assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in reference]


def test_other_ranks_outwait_a_rank0_evaluation_longer_than_the_collective_timeout(world, tmp_path):
    """Rank 0 evaluates alone for longer than train.dist_timeout_s; rank 1 waits outside the default
    group (NCCL's watchdog would otherwise end the job), and training goes on."""
    run = tmp_path / "run"
    overrides = ("train.budget_samples=256", "train.checkpoint_every=4", "eval.every=4", "eval.max_items=2")
    overrides += ("eval.abilities=[existence]", "train.dist_timeout_s=2")
    records = _torchrun(
        world[0], run, *overrides, script="tests/slow_rank0_train.py", env={"SLOW_EVAL_S": "6"}
    )
    assert [r["step"] for r in records if "eval/world/existence/accuracy" in r] == [4]
    assert read_meta(run)["step"] == 8


# DDP by default: tests/test_engines.py runs FSDP2 and ZeRO-3 under torchrun; the others with -m slow.
@pytest.mark.parametrize(
    "engine",
    ["ddp", pytest.param("fsdp2", marks=pytest.mark.slow), pytest.param("deepspeed", marks=pytest.mark.slow)],
)
def test_torchrun_two_ranks_on_cpu(engine, world, tmp_path):
    """Two gloo ranks train together, read disjoint samples and write one (sharded) final checkpoint."""
    run = tmp_path / "run"
    overrides = ("train.budget_samples=128", f"train.engine={engine}", "train.trace_samples=true")
    _torchrun(world[0], run, *overrides)
    assert read_meta(run)["step"] == 4
    seen = [set((run / f"samples.rank{r}.txt").read_text().split()) for r in (0, 1)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]


# Three torchrun jobs (~45 s): by default each part runs alone (test_checkpoints_and_resume, the curriculum
# resume below, tests/test_loader.py's saved worker state).
@pytest.mark.slow
def test_two_ranks_with_packing_workers_and_a_curriculum_resume_exactly_from_the_saved_stream(
    world, tmp_path
):
    """Resumed inside either stage, from the data-stream state each rank saved (two loader workers, so
    a checkpoint falls in the middle of their round), the losses repeat the uninterrupted run's."""
    run = tmp_path / "run"
    captions, mixed = "{caption0:1.0}", "{caption0:0.5,text:0.5}"
    stages = (
        f"[{{name:captions,fraction:0.5,mixture:{captions}}},{{name:mixed,fraction:0.5,mixture:{mixed}}}]"
    )
    args = (
        "train.packing=true",
        "train.budget_tokens=40960",
        "train.checkpoint_every=3",
        "train.log_every=1",
    )
    args += ("data.num_workers=2", f"recipe.stages={stages}", "recipe.sft_fraction=0")  # these two only
    args += tuple(f"recipe.mixture.{k}=0" for k in ("caption0", "vqa0", "text", "other"))  # stages instead
    first = _torchrun(world[0], run, *args)
    assert [r["stage"] for r in first] == ["captions"] * 4 + ["mixed"] * 4
    checkpoints = run / "checkpoints"
    assert {p.name for p in (checkpoints / "step-00000006").glob("loader.*")} == {
        "loader.rank0.json",
        "loader.rank1.json",
    }
    # Resume at step 6 (stage 2), then at 3 (stage 1): step 4, where stage 1 ends, is kept too.
    for dropped in (["final"], ["final", "step-00000006", "step-00000004"]):
        for name in dropped:
            (checkpoints / name / "COMMITTED").unlink(missing_ok=True)
        resumed = _torchrun(world[0], run, *args)
        assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in first]
    log = (run / "train.log").read_text()
    assert "stream of stage 'mixed' continues from its saved state" in log
    assert "stream of stage 'captions' continues from its saved state" in log and "skipping" not in log


# Slow: DeepSpeed compiles a communication op on its first start (~1 minute on a fresh machine); CI
# still trains ZeRO-3 on two ranks through the README's command (tests/test_doc_commands.py).
@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_deepspeed_resume_is_exact_and_its_checkpoint_loads_without_it(
    zero_stage, world, tokenizer, tmp_path
):
    """ZeRO on two ranks: a run resumed from its last checkpoint before the final one (killed before
    its commit marker) repeats the uninterrupted losses bit for bit; eval loads the weights (DCP, gathered
    from ZeRO-3's pieces) on one process without DeepSpeed and without unpickling."""
    from mmkd.trainer import build_model

    run = tmp_path / "run"
    args = ("train.budget_samples=256", "train.checkpoint_every=4", "train.log_every=1")
    args += ("train.engine=deepspeed", f"train.zero_stage={zero_stage}")
    first = _torchrun(world[0], run, *args)
    assert any(run.glob("checkpoints/step-00000004/*optim_states.pt"))  # DeepSpeed's ZeRO partitions
    (run / "checkpoints" / "final" / "COMMITTED").unlink()
    resumed = _torchrun(world[0], run, *args)
    assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in first]
    model = build_model(micro_run_config(world[0], run), tokenizer)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    load_checkpoint(run, model)  # the final checkpoint's DCP weights
    assert all(not torch.equal(fresh[k], v) for k, v in model.state_dict().items() if "norm" not in k)
    # They are DeepSpeed's own fp32 weights (read here with its unpickling tool: our run's files).
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ref = get_fp32_state_dict_from_zero_checkpoint(str(run / "checkpoints"), tag="final")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())
    # A payload planted in the checkpoint a resume reads is refused by name and never runs.
    (run / "checkpoints" / "final" / "COMMITTED").unlink()  # the rerun resumes from the one before
    resumes_from = latest_checkpoint(run)  # the instruction stage's first step, kept as a stage's end
    states = sorted(resumes_from.glob("*model_states.pt"))[0]  # ZeRO-3: per rank
    state = torch.load(states, weights_only=False)  # our own run's file, written above
    torch.save({**state, "planted": _Payload(tmp_path / "pwned")}, states)
    with pytest.raises(AssertionError, match=r"model_states\.pt: holds a pickled object DeepSpeed"):
        _torchrun(world[0], run, *args)
    assert not (tmp_path / "pwned").exists()


class _Payload:
    """A pickle that writes a file when unpickled (what a hostile checkpoint would do)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "ran"))


def test_evaluation_never_unpickles_a_checkpoint(world, tokenizer, tmp_path):
    """A checkpoint folder from elsewhere with a pickled DeepSpeed-style file: loading it for eval or
    export refuses, naming the folder, and the payload never runs."""
    from mmkd.trainer import build_model

    crafted = tmp_path / "crafted"
    crafted.mkdir()
    torch.save({"module": _Payload(tmp_path / "pwned")}, crafted / "mp_rank_00_model_states.pt")
    (crafted / "meta.json").write_text(json.dumps({"step": 1}))
    (crafted / "COMMITTED").write_text("1\n")
    model = build_model(micro_run_config(world[0], tmp_path / "run"), tokenizer)
    with pytest.raises(CheckpointError, match=r"crafted holds only DeepSpeed's pickled files.*never"):
        load_checkpoint(crafted, model)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_round_trip_and_keep_last_k(world, tokenizer, tmp_path):
    from mmkd.trainer import build_model

    _train(world, tokenizer, tmp_path / "r", budget_samples=256, checkpoint_every=2, keep_checkpoints=2)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == [
        "final",
        "step-00000012",
        "step-00000014",
    ]
    meta = read_meta(tmp_path / "r")
    assert (
        set(meta) == {"step", "stage", "seen", "config", "tokenizer", "special_tokens", "identity"}
        and meta["step"] == 16
    )
    assert meta["seen"]["samples"] == 16 * 16 and meta["seen"]["tokens"] > 0
    cfg = micro_run_config(world[0], tmp_path / "r")
    model = build_model(cfg, tokenizer)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    load_checkpoint(tmp_path / "r", model)
    assert any(not torch.equal(fresh[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="not a committed checkpoint"):
        (tmp_path / "r" / "checkpoints" / "step-00000014" / "COMMITTED").unlink()
        load_checkpoint(tmp_path / "r" / "checkpoints" / "step-00000014", model)


def test_micro_batches_give_the_gradient_of_the_global_token_mean(world, tokenizer):
    """Splitting a step into micro-batches of different lengths leaves loss and gradient unchanged."""
    from mmkd.engines import Engine
    from mmkd.loader import Collator
    from mmkd.shards import open_dataset
    from mmkd.templates import Templates
    from mmkd.trainer import accumulate_gradients, build_model

    _, root = world
    cfg = micro_run_config(world[0], root / "unused")
    templates = Templates(tokenizer, cfg.model.image_tokens, cfg.model.max_seq_len)
    encoded = [(templates.encode(s), {}) for s in list(open_dataset(root / "vqa0"))[:3]]
    encoded += [(templates.encode(s), {}) for s in list(open_dataset(root / "text"))[:5]]
    collate = Collator(tokenizer.pad_id, 48)
    model = build_model(cfg, tokenizer)

    def grads(micro):
        model.zero_grad()
        loss = accumulate_gradients(Engine(model, optimizer=None), micro)["loss"]
        return loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole_loss, whole = grads([collate(encoded)])
    split_loss, split = grads([collate(encoded[:2]), collate(encoded[2:7]), collate(encoded[7:])])
    assert abs(whole_loss - split_loss) < 1e-5
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, split))


@pytest.mark.parametrize("what", ["loss", "grad norm"])
def test_a_non_finite_loss_or_grad_norm_stops_before_the_optimiser_step(
    what, world, tokenizer, tmp_path, monkeypatch
):
    from mmkd.model.vlm import VLM
    from mmkd.trainer import NonFiniteError

    real = VLM.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] < 5 or "labels" not in kwargs:
            return out
        loss, n = out
        if what == "loss":
            return loss * float("nan"), n
        # Finite value (0), NaN gradient: d sqrt(x) / dx at 0 is inf, times 0.
        return loss + (self.lm_head.weight.sum() * 0.0).sqrt(), n

    monkeypatch.setattr(VLM, "forward", poisoned)
    saved = {}
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: saved.setdefault("stepped", True))
    with pytest.raises(
        NonFiniteError, match=rf"step \d+: the {what} is nan; stopped before the optimiser step"
    ):
        _train(world, tokenizer, tmp_path / "run", budget_samples=256, global_batch=16, micro_batch=8)
    assert calls["n"] >= 5


def test_metrics_carry_flops_and_go_to_wandb_offline(world, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    metrics = _train(world, tokenizer, tmp_path / "run", budget_samples=64, wandb=True)
    assert all(m["flops_per_s_per_device"] > 0 and m["grad_norm"] > 0 for m in metrics)
    assert all("mfu" not in m for m in metrics)  # no peak to divide by on a CPU
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_a_run_its_resume_and_its_final_scores_are_one_wandb_run(world, tmp_path, monkeypatch):
    """Training, a resume of it and the final evaluation write to the same wandb run (its id kept in
    the run directory), and the evaluation's scores, continuous ones beside accuracy, become the run's
    summary: what a wandb runs table compares recipes on."""
    import types

    from mmkd.launch._pipeline import run
    from mmkd.tracking import Tracker

    inits, summary = [], {}

    class Run:
        def __init__(self, **kw):
            inits.append(kw)
            self.summary = summary

        def log(self, record, step):
            pass

        def finish(self):
            pass

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: Run(**kw)))
    cfg = micro_run_config(world[0], tmp_path / "run", budget_samples=32, wandb=True)
    cfg.eval.abilities, cfg.eval.noise_checkpoints = ["attribute", "captioning"], 0
    results = run(cfg, DistInfo())
    Tracker(tmp_path / "run", True, True, "mmkd", {}).close()  # as a resumed training opens it
    run_id = (tmp_path / "run/wandb_id").read_text()
    assert [(kw["id"], kw["resume"]) for kw in inits] == [(run_id, "allow")] * 3
    attribute, captioning = results["world"]["attribute"], results["world"]["captioning"]
    assert summary["eval/world/attribute/accuracy"] == attribute["score"]
    assert summary["eval/world/attribute/p_correct"] == attribute["continuous"]["p_correct"]["score"]
    assert summary["eval/world/captioning/cider"] == captioning["score"]


def test_a_curriculum_trains_its_stages_in_order_and_resumes_inside_a_stage(world, tokenizer, tmp_path):
    from mmkd.config import RecipeConfig
    from mmkd.recipe_config import StageConfig

    stages = [StageConfig("captions", 0.5, {"caption0": 1.0}), StageConfig("text", 0.5, {"text": 1.0})]
    recipe = RecipeConfig(name="curriculum", stages=stages).validate()
    data, root = world

    def run(run_dir):
        cfg = micro_run_config(
            data, run_dir, budget_samples=128, trace_samples=True, log_every=1, checkpoint_every=3
        )
        cfg.recipe = recipe
        run_dir.mkdir(parents=True, exist_ok=True)
        dirs = source_dirs(recipe.sources(), cfg, root)
        train(cfg, dirs, tokenizer, run_dir, DistInfo())
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    metrics = run(tmp_path / "a")
    assert [m["stage"] for m in metrics] == ["captions"] * 4 + ["text"] * 4
    ids = (tmp_path / "a" / "samples.rank0.txt").read_text().split()
    assert all(i.startswith("caption0-") for i in ids[:64]) and all(i.startswith("text-") for i in ids[64:])
    assert read_meta(tmp_path / "a")["stage"] == "text"
    # Crash after step 6 (inside stage 2, the last checkpoint): resuming reproduces steps 7-8 exactly.
    (tmp_path / "a" / "checkpoints" / "final" / "COMMITTED").unlink()
    assert read_meta(latest_checkpoint(tmp_path / "a"))["stage"] == "text"
    again = run(tmp_path / "a")
    assert [(m["step"], m["loss"]) for m in again] == [(m["step"], m["loss"]) for m in metrics]
    with pytest.raises(ValueError, match=r"recipe\.stages fractions sum to 0\.9000"):
        RecipeConfig(
            name="x", stages=[StageConfig("a", 0.4, {"text": 1}), StageConfig("b", 0.5, {"text": 1})]
        ).validate()


def test_a_recipe_ends_with_an_sft_stage_on_answers_only(world, tokenizer, tmp_path):
    """recipe.sft_fraction: pre-train on the mixture, then instruction-tune on Q/A data, in one run."""
    from mmkd.config import ConfigError, RecipeConfig
    from mmkd.launch._pipeline import check_sft_sources

    recipe = RecipeConfig(name="x_sft", mixture={"caption0": 0.5, "text": 0.5}, sft_fraction=0.25).validate()
    assert [(s.name, s.fraction) for s in recipe.plan()] == [("all", 0.75), ("sft", 0.25)]
    data, root = world
    cfg = micro_run_config(data, tmp_path, budget_samples=128, trace_samples=True, log_every=1)
    cfg.recipe = recipe
    dirs = prepare_sources(recipe.sources(), cfg, root)  # the instruction data is built when read
    check_sft_sources(cfg, dirs)
    train(cfg, dirs, tokenizer, tmp_path, DistInfo())
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["stage"] for m in metrics] == ["all"] * 6 + ["sft"] * 2
    ids = (tmp_path / "samples.rank0.txt").read_text().split()
    assert all(i.startswith("instruct-") for i in ids[96:])
    assert not any(i.startswith("instruct-") for i in ids[:96])
    cfg.recipe = RecipeConfig(name="y", mixture={"text": 1.0}, sft_fraction=0.2, sft_mixture={"text": 1.0})
    with pytest.raises(ConfigError, match=r"recipe\.sft_mixture\.text: .* holds \['text'\] samples"):
        check_sft_sources(cfg, source_dirs(["text"], cfg, root))
    with pytest.raises(ValueError, match=r"recipe\.sft_fraction=1\.0: must be in \[0, 1\)"):
        RecipeConfig(name="z", mixture={"text": 1.0}, sft_fraction=1.0).validate()


def test_packed_training_spends_a_token_budget_on_full_rows_and_resumes_exactly(world, tokenizer, tmp_path):
    """train.packing: 8 steps of 16 rows x 160 tokens, nearly no padding, several samples per row."""
    run = tmp_path / "r"
    kw = dict(packing=True, budget_tokens=8 * 16 * 160, checkpoint_every=4, log_every=1)
    first = _train(world, tokenizer, run, **kw)
    assert [r["step"] for r in first] == list(range(1, 9))
    assert all(r["nonpad_fraction"] > 0.95 for r in first)
    assert first[-1]["samples"] > 2 * 8 * 16 and first[-1]["tokens"] > 0.95 * 8 * 16 * 160
    (run / "checkpoints" / "final" / "COMMITTED").unlink()
    resumed = _train(world, tokenizer, run, **kw)
    assert [(r["step"], r["loss"], r["samples"]) for r in resumed] == [
        (r["step"], r["loss"], r["samples"]) for r in first
    ]


@pytest.mark.parametrize("engine", ["fsdp2", pytest.param("deepspeed", marks=pytest.mark.slow)])
def test_freezing_under_sharded_engines(engine, world, tokenizer, tmp_path):
    """The alignment stage (projector only) on 2 ranks: frozen modules end bit-identical to their init."""
    from mmkd.trainer import build_model

    run = tmp_path / "run"
    _torchrun(
        world[0], run, "train.budget_samples=64", f"train.engine={engine}", "train.freeze=[vision,decoder]"
    )
    cfg = micro_run_config(world[0], run)
    init = build_model(cfg, tokenizer).state_dict()  # the run's init: same seed, same config
    trained = build_model(cfg, tokenizer)
    load_checkpoint(run, trained)
    for name, value in trained.state_dict().items():
        assert torch.equal(value, init[name]) != name.startswith("projector."), name


def test_eval_every_k_steps_scores_checkpoints_without_changing_training(world, tokenizer, tmp_path):
    """eval.every: step 4's checkpoint is evaluated into eval-step-00000004/ and its scores reach the
    metrics; the training losses stay those of a run without it."""
    data, root = world
    losses = {}
    for every in (0, 4):
        run = tmp_path / f"every{every}"
        run.mkdir()
        cfg = micro_run_config(data, run, budget_samples=128, checkpoint_every=4, log_every=1)
        cfg.eval.every, cfg.eval.max_items, cfg.eval.abilities = every, 4, ["existence", "counting"]

        def evaluate(ckpt, out, step, cfg=cfg):
            return evaluate_checkpoint(ckpt, cfg, tokenizer, root, out, f"step {step}", decontaminate=False)

        dirs = source_dirs(sorted(cfg.recipe.active()), cfg, root)
        train(cfg, dirs, tokenizer, run, DistInfo(), evaluate)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[every] = [r["loss"] for r in records if "loss" in r]
    evals = [r for r in records if "eval/world/existence/accuracy" in r]
    assert [r["step"] for r in evals] == [4] and 0 <= evals[0]["eval/world/counting/accuracy"] <= 1
    results = json.loads((tmp_path / "every4" / "eval-step-00000004" / "results.json").read_text())
    assert results["suites"]["world"]["existence"]["n"] == 4
    assert losses[4] == losses[0]


def test_resume_compares_the_micro_batch_as_trained(world, tokenizer, tmp_path):
    """micro_batch=0 follows the world size: a run saved with the explicit value it resolves to (or by a
    version whose default was that value) is the same run."""
    from mmkd.resume import check_resumable, run_identity

    data, root = world
    cfg = micro_run_config(data, tmp_path, global_batch=16, micro_batch=0)
    sources = source_dirs(sorted(cfg.recipe.active()), cfg, root)
    explicit = micro_run_config(data, tmp_path, global_batch=16, micro_batch=16)
    check_resumable(
        {"identity": run_identity(explicit, sources, 1)}, run_identity(cfg, sources, 1), tmp_path, False
    )
    with pytest.raises(ValueError, match=r"train\.micro_batch \(saved 16, now 8\)"):
        check_resumable(
            {"identity": run_identity(explicit, sources, 1)}, run_identity(cfg, sources, 2), tmp_path, False
        )


def test_a_run_branches_from_another_where_their_curricula_part(world, tokenizer, tmp_path):
    """train.branch_from: the same pre-training, another SFT mixture. The branch starts from the donor's
    stage-end checkpoint (kept outside keep_checkpoints) and trains exactly what a run from scratch
    would; a donor that differs before that step, or lacks the checkpoint, is refused by name."""
    from mmkd.config import ConfigError, RecipeConfig

    data, root = world

    def run(run_dir, sft, fraction=0.25, **kw):
        recipe = RecipeConfig(
            name=f"sft_{sft}",
            mixture={"caption0": 0.5, "text": 0.5},
            sft_fraction=fraction,
            sft_mixture={sft: 1.0},
        ).validate()
        settings = {"budget_samples": 192, "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 1}
        cfg = micro_run_config(data, run_dir, **settings | kw)
        cfg.recipe = recipe
        run_dir.mkdir(parents=True, exist_ok=True)
        train(cfg, source_dirs(recipe.sources(), cfg, root), tokenizer, run_dir, DistInfo())
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    run(tmp_path / "donor", "vqa0")  # 12 steps: stage "all" ends at step 9
    kept = sorted(p.name for p in (tmp_path / "donor" / "checkpoints").glob("step-*"))
    assert kept == ["step-00000009", "step-00000010"]
    kept_at = tmp_path / "donor" / "checkpoints" / "step-00000009"
    assert (kept_at / "STAGE_END").read_text() == "all\n"

    scratch = run(tmp_path / "scratch", "other")
    branch = run(tmp_path / "branch", "other", branch_from=str(tmp_path / "donor"))
    assert [r["step"] for r in branch] == [10, 11, 12]
    assert [(r["step"], r["loss"], r["samples"]) for r in branch] == [
        (r["step"], r["loss"], r["samples"]) for r in scratch[9:]
    ]
    log = (tmp_path / "branch" / "train.log").read_text()
    assert "step-00000009 (step 9), where stage 'sft' begins" in log and "steps 9..12" in log
    assert "resume:" not in log
    # The shared pre-training alone is evaluated from that checkpoint (the "base" of seed 004's table).
    run_python(
        [str(REPO / "launch/eval.py"), f"checkpoint={kept_at}", "max_items=4", "abilities=[existence]"]
    )
    base = json.loads((tmp_path / "donor" / "eval-step-00000009" / "results.json").read_text())
    assert base["suites"]["world"]["existence"]["n"] == 4
    assert read_meta(tmp_path / "branch")["branched_from"].endswith("donor/checkpoints/step-00000009")

    donor = str(tmp_path / "donor")
    with pytest.raises(
        ConfigError, match=r"donor differs from this run in train\.lr \(theirs 0\.001, ours 0\.002\)"
    ):
        run(tmp_path / "lr", "other", branch_from=donor, lr=2e-3)
    with pytest.raises(ConfigError, match="trains this run's whole curriculum"):
        run(tmp_path / "same", "vqa0", branch_from=donor)
    with pytest.raises(ConfigError, match=r"train\.budget_samples \(theirs 192, ours 256\)"):
        run(tmp_path / "other_budget", "other", branch_from=donor, budget_samples=256)
    with pytest.raises(ConfigError, match=r"'all' \(steps 0\.\.9, .* is not this run's 'all' \(steps 0\.\.6"):
        run(tmp_path / "other_plan", "other", fraction=0.5, branch_from=donor)
    meta = json.loads((kept_at / "meta.json").read_text())
    meta["identity"]["sources.caption0"] = "rebuilt"  # the shared data changed after the donor's stage
    (kept_at / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"before step 9 in sources\.caption0 \(theirs 'rebuilt'"):
        run(tmp_path / "rebuilt", "other", branch_from=donor)
    shutil.rmtree(kept_at)
    with pytest.raises(ConfigError, match=r"no committed checkpoint at step 9, .* \(it keeps steps \[10\]\)"):
        run(tmp_path / "gone", "other", branch_from=donor)


def test_a_handler_that_was_there_runs_after_the_save_not_before():
    """submitit's handler requeues and exits: chained, it must run only once the run has saved (when
    the watch closes), or the job would end before its checkpoint."""
    import os
    import signal

    from mmkd.distributed import DistInfo
    from mmkd.preemption import PreemptionWatch

    calls = []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        with PreemptionWatch() as watch:
            assert not watch.requested(DistInfo())
            os.kill(os.getpid(), signal.SIGUSR1)
            assert watch.received == "SIGUSR1" and watch.requested(DistInfo()) and calls == []
        assert calls == [signal.SIGUSR1] and signal.getsignal(signal.SIGTERM) is not watch._note
    finally:
        signal.signal(signal.SIGUSR1, before)
