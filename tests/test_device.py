"""Every tensor on the configured device: training and evaluation run on a fake accelerator
(`tests/fake_device.py`), where any tensor left on the CPU fails the op it meets, as on a GPU."""

import json

import pytest
import torch

from mmkd.data_builders.sources import source_dirs
from mmkd.distributed import DistInfo
from mmkd.eval import inference
from mmkd.eval.suites import evaluate_checkpoint
from mmkd.model import VLM
from mmkd.trainer import train
from tests.conftest import micro_run_config
from tests.fake_device import FakeDevice

LEFT_BEHIND = "left behind on the wrong device"


def _train(world, tokenizer, run_dir, info):
    data, root = world
    run_dir.mkdir()
    cfg = micro_run_config(data, run_dir, budget_samples=32, log_every=1, checkpoint_every=0)
    final = train(cfg, source_dirs(sorted(cfg.recipe.active()), cfg, root), tokenizer, run_dir, info)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return cfg, final, losses


def test_training_and_evaluation_run_on_the_device_with_the_cpu_losses(world, tokenizer, tmp_path):
    """The model is materialised on the device, batches move there, the loss is the CPU run's; eval
    loads the checkpoint onto the device and scores there."""
    *_, cpu_losses = _train(world, tokenizer, tmp_path / "cpu", DistInfo())
    with FakeDevice() as device:
        cfg, final, losses = _train(world, tokenizer, tmp_path / "device", DistInfo(device=device))
        cfg.eval.max_items, cfg.eval.abilities = 3, ["existence", "counting", "captioning"]
        suites = evaluate_checkpoint(final, cfg, tokenizer, world[1], tmp_path / "eval", "t", device=device)
    # The same losses; a busy machine may make the BLAS pick other thread splits between the two runs
    # (MKL's dynamic threading), which moves the 7th digit, so equal to float precision.
    torch.testing.assert_close(losses, cpu_losses, rtol=1e-6, atol=0)
    assert set(suites["world"]) == {"existence", "counting", "captioning"}


def test_a_batch_left_on_the_cpu_fails_the_step(world, tokenizer, tmp_path, monkeypatch):
    """Planted: the trainer forgets to move its batches (mmkd before the real-path work)."""
    monkeypatch.setattr("mmkd.trainer.to_device", lambda batch, device: batch)
    with FakeDevice() as device, pytest.raises(RuntimeError, match=LEFT_BEHIND):
        _train(world, tokenizer, tmp_path / "run", DistInfo(device=device))


def test_a_cpu_copy_inside_the_forward_fails_the_step(world, tokenizer, tmp_path, monkeypatch):
    """Planted: `.cpu()` on the token ids inside the model, which the meta device would let through."""
    embed = VLM.embed
    monkeypatch.setattr(VLM, "embed", lambda self, ids, pixels: embed(self, ids.cpu(), pixels))
    with FakeDevice() as device, pytest.raises(RuntimeError, match=r"aten\.embedding.*" + LEFT_BEHIND):
        _train(world, tokenizer, tmp_path / "run", DistInfo(device=device))


def test_evaluation_images_left_on_the_cpu_fail(world, tokenizer, tmp_path, monkeypatch):
    cfg, final, _ = _train(world, tokenizer, tmp_path / "run", DistInfo())
    cfg.eval.max_items, cfg.eval.abilities = 2, ["existence"]
    pixels = inference.item_pixels
    monkeypatch.setattr(inference, "item_pixels", lambda items, size, device: pixels(items, size, "cpu"))
    with FakeDevice() as device, pytest.raises(RuntimeError, match=LEFT_BEHIND):
        evaluate_checkpoint(final, cfg, tokenizer, world[1], tmp_path / "eval", "t", device=device)


def test_the_fake_device_allows_what_a_gpu_allows():
    """Copies between devices and 0-dim CPU scalars are fine on CUDA, so they are here."""
    with FakeDevice() as device:
        x = torch.arange(4.0).to(device)
        y = (x * torch.tensor(2.0)).cpu()  # a CPU scalar operand, then a copy back to the host
        z = torch.zeros(4, device=device)
        z.copy_(torch.ones(4))
    assert y.tolist() == [0.0, 2.0, 4.0, 6.0] and x.device == device and z.device == device
