"""DDP, FSDP2 and DeepSpeed ZeRO over 2 CPU processes (gloo) give the single-process losses on the same
global batch. DeepSpeed's first start compiles a communication op (~1 minute, then cached)."""

import json

import pytest

from tests.conftest import REPO, run_python, torchrun

SCRIPT = REPO / "tests" / "engine_losses.py"


def _run(world_root, out, engine, ranks, zero_stage=2, bf16=False):
    launcher = torchrun(ranks) if ranks > 1 else []
    run_python([*launcher, str(SCRIPT), str(world_root), str(out), engine, str(zero_stage), str(int(bf16))])
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def single(world, tmp_path_factory):
    """The single-process losses and gradient norms every engine is compared with, computed once."""
    return _run(world[1], tmp_path_factory.mktemp("single") / "single.json", "ddp", 1)


# DeepSpeed with -m slow (its first start compiles an op for a minute); CI trains ZeRO-3 on two ranks
# through the README's command (tests/test_doc_commands.py).
@pytest.mark.parametrize(
    ("engine", "zero_stage"),
    [
        ("ddp", 0),
        ("fsdp2", 0),
        *(pytest.param("deepspeed", stage, marks=pytest.mark.slow) for stage in (1, 2, 3)),
    ],
)
def test_two_ranks_match_one_process(engine, zero_stage, single, world, tmp_path):
    _, root = world
    sharded = _run(root, tmp_path / f"{engine}.json", engine, 2, zero_stage)
    assert single[-1][0] < single[0][0]  # it trains
    for (loss_1, norm_1), (loss_2, norm_2) in zip(single, sharded):
        assert loss_2 == pytest.approx(loss_1, rel=1e-5)
        assert norm_2 == pytest.approx(norm_1, rel=1e-4)


@pytest.mark.parametrize("engine", ["fsdp2", pytest.param("deepspeed", marks=pytest.mark.slow)])
def test_bf16_parameters_stay_close_to_fp32(engine, single, world, tmp_path):
    """train.bf16: bf16 compute with fp32 reductions tracks the fp32 run to bf16 precision (~3 digits)."""
    _, root = world
    bf16 = _run(root, tmp_path / f"{engine}.json", engine, 2, bf16=True)
    for (loss_1, _), (loss_2, _) in zip(single, bf16):
        assert loss_2 == pytest.approx(loss_1, rel=2e-2)
        assert loss_2 != loss_1  # it did compute in bf16
