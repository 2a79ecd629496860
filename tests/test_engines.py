"""DDP and FSDP2 over 2 CPU processes (gloo) give the single-process losses on the same global batch."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "tests" / "engine_losses.py"


def _run(world_root, out, engine, ranks):
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    cmd = [sys.executable, *launcher, str(SCRIPT), str(world_root), str(out), engine]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("engine", ["ddp", "fsdp2"])
def test_two_ranks_match_one_process(engine, world, tmp_path):
    _, root = world
    single = _run(root, tmp_path / "single.json", "ddp", 1)
    sharded = _run(root, tmp_path / f"{engine}.json", engine, 2)
    assert single[-1][0] < single[0][0]  # it trains
    for (loss_1, norm_1), (loss_2, norm_2) in zip(single, sharded):
        assert loss_2 == pytest.approx(loss_1, rel=1e-5)
        assert norm_2 == pytest.approx(norm_1, rel=1e-4)
