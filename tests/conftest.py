"""Shared fixtures: a small world built once per test session (seconds), and a micro model config."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from mmkd.config import DataConfig, RunConfig, load_group, to_run_config
from mmkd.data_builders.sources import prepare_world
from mmkd.model.config import ModelConfig
from mmkd.tokenizer import Tokenizer
from mmkd.world.scene import WorldConfig

REPO = Path(__file__).resolve().parents[1]
# Tests never reach the Hugging Face Hub (lm-eval, transformers): everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The small world of `train=smoke` (recipes/train/smoke.yaml): the tests build it once per session.
SMOKE_DATA = OmegaConf.load(REPO / "recipes/train/smoke.yaml").data
SMALL_SIZES = dict(SMOKE_DATA.sizes)


def data_overrides(data: DataConfig) -> list[str]:
    """The small world's settings as command-line overrides, so a launcher subprocess finds it built."""
    return [
        f"data.root={data.root}",
        f"data.bench_per_ability={data.bench_per_ability}",
        f"data.vocab_size={data.vocab_size}",
        f"data.samples_per_shard={data.samples_per_shard}",
        f"data.world.image_size={data.world.image_size}",
        *[f"data.sizes.{k}={v}" for k, v in data.sizes.items()],
    ]


def small_data(root: Path) -> DataConfig:
    return DataConfig(
        root=str(root),
        world=WorldConfig(image_size=48),
        sizes=dict(SMALL_SIZES),
        bench_per_ability=SMOKE_DATA.bench_per_ability,
        vocab_size=SMOKE_DATA.vocab_size,
        samples_per_shard=SMOKE_DATA.samples_per_shard,
        num_workers=0,
    )


def torchrun(nproc: int = 2) -> list[str]:
    """The torchrun launcher on a free port: a fixed port collides with a parallel or stuck run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}"]


def run_python(args: list[str], timeout: int = 300, **kw) -> str:
    """`python ARGS` to a zero exit (else its stderr fails the test); returns stdout. On a timeout the
    whole process group dies, so torchrun's workers cannot outlive the test and eat its cores."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **kw.pop("env", {})}
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        **kw,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes SIGTERM on to its workers (each in a session of its own)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            err = "(no stderr: the process group was killed)"
        raise AssertionError(f"timed out after {timeout} s: {args}\n{err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    return out


def convert(kind: str, *args: str, out: Path) -> Path:
    """`launch/convert.py KIND ARGS --out OUT`: a fixture in a real format turned into a dataset."""
    run_python([str(REPO / "launch/convert.py"), kind, *args, "--out", str(out)], timeout=120, cwd=out.parent)
    return out


def composed(*overrides: str):
    """recipes/config.yaml composed by Hydra with these overrides, as the launchers compose it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "recipes"), version_base=None):
        return compose("config", overrides=list(overrides))


def model_config(name: str) -> ModelConfig:
    """A named size exactly as the recipes/model/<name>.yaml file declares it."""
    return load_group(ModelConfig, REPO / "recipes" / "model" / f"{name}.yaml")


def hf_llama(cfg: ModelConfig, vocab_size: int, tie: bool, out: Path, seed: int = 2, **config):
    """A randomly initialised transformers Llama with `cfg`'s decoder shapes, saved to `out` (`config`:
    more LlamaConfig arguments, e.g. its own `rope_parameters`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    shape = {
        "vocab_size": vocab_size,
        "hidden_size": cfg.width,
        "intermediate_size": cfg.ffn,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": tie,
    }
    llama = LlamaForCausalLM(LlamaConfig(**shape | config)).eval()
    llama.save_pretrained(out)
    return llama


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> tuple[DataConfig, Path]:
    data = small_data(tmp_path_factory.mktemp("data"))
    return data, prepare_world(data)


@pytest.fixture(scope="session")
def tokenizer(world) -> Tokenizer:
    return Tokenizer.load(world[1] / "tokenizer.json")


def micro_run_config(data: DataConfig, run_dir: Path, **train) -> RunConfig:
    cfg = to_run_config(
        {
            "run_dir": str(run_dir),
            "model": OmegaConf.load(REPO / "recipes/model/micro.yaml"),
            "recipe": OmegaConf.load(REPO / "recipes/recipe/baseline.yaml"),
            "train": {
                "budget_samples": 256,
                "global_batch": 16,
                "micro_batch": 8,
                "log_every": 2,
                "checkpoint_every": 4,
                **train,
            },
            "eval": {"max_items": 6, "html": False},  # the page: tests/test_pipeline.py, tests/test_report.py
        }
    )
    cfg.data = data
    return cfg


@pytest.fixture(scope="session")
def tiny_clip(tokenizer, tmp_path_factory) -> Path:
    """A randomly initialised CLIP (transformers format) with the world tokenizer: a caption scorer's
    real path (seed 003 F.4), offline."""
    from mmkd.config import ClipConfig
    from mmkd.world_clip import build_model, save

    out = tmp_path_factory.mktemp("clip") / "model"
    shape = ClipConfig(
        hidden_size=32, layers=1, heads=2, projection_dim=16, patch_size=16, max_text_tokens=64
    )
    torch.manual_seed(0)
    save(build_model(shape, tokenizer, 32), tokenizer, 32, out)
    return out


def bomb_png() -> bytes:
    """A well-formed PNG header declaring 20,000 x 20,000 pixels: PIL refuses to open it (a
    decompression bomb, which PIL raises as its own error, not an OSError)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width and height
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # and its CRC
    return bytes(png)


BAD_IMAGES = {"garbage": b"\x89PNG\r\n\x1a\n not an image", "bomb": bomb_png()}
