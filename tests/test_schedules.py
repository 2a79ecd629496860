"""Learning-rate schedules, per-module learning rates and freezing."""

import itertools

import pytest
import torch

from mmkd.config import ConfigError
from mmkd.schedules import learning_rate
from tests.conftest import micro_run_config


def test_wsd_warms_up_holds_then_decays_in_each_shape():
    total, at = 100, {}
    for shape in ("linear", "cosine", "1-sqrt", "exp"):
        lrs = [learning_rate(s, total, 1.0, 0.1, 0.1, "wsd", 0.2, shape) for s in range(total)]
        assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0
        assert all(lr == 1.0 for lr in lrs[9:80])  # stable until the last 20%
        assert all(a >= b for a, b in itertools.pairwise(lrs[80:])) and lrs[-1] == pytest.approx(0.1)
        at[shape] = lrs[89]  # halfway through the decay
    assert at["linear"] == pytest.approx(0.1 + 0.9 * 0.5)
    assert at["cosine"] == pytest.approx(0.1 + 0.9 * 0.5)
    assert at["1-sqrt"] == pytest.approx(0.1 + 0.9 * (1 - 0.5**0.5))
    assert at["exp"] == pytest.approx(0.1**0.5)


def test_bad_schedule_values_name_the_key(world, tmp_path):
    data, _ = world
    for key, value in (("schedule", "linear"), ("decay_shape", "sqrt"), ("optimizer", "sgd")):
        with pytest.raises(ConfigError, match=rf"train\.{key}="):
            micro_run_config(data, tmp_path, **{key: value})
    with pytest.raises(ConfigError, match="unknown module prefix 'visoin'"):
        micro_run_config(data, tmp_path, freeze=["visoin"])
    assert micro_run_config(data, tmp_path, schedule="wsd", optimizer="adamw").train.schedule == "wsd"


def test_frozen_modules_stay_put_and_multipliers_scale_the_lr(world, tokenizer, tmp_path):
    from mmkd.checkpoint import load_checkpoint
    from mmkd.data_builders.sources import source_dirs
    from mmkd.distributed import DistInfo
    from mmkd.trainer import build_model, train

    data, root = world
    cfg = micro_run_config(
        data,
        tmp_path,
        freeze=["vision", "decoder"],
        lr_multipliers={"projector.linear_1": 0.5},
        budget_samples=64,
        optimizer="adamw",
        schedule="wsd",
        weight_decay=0.05,
    )
    before = build_model(cfg, tokenizer).state_dict()
    final = train(cfg, source_dirs(sorted(cfg.recipe.active()), cfg, root), tokenizer, tmp_path, DistInfo())
    model = build_model(cfg, tokenizer)
    load_checkpoint(final, model)
    after = model.state_dict()
    for name, value in before.items():
        moved = not torch.equal(value, after[name])
        assert moved == name.startswith("projector."), name  # lm_head is tied to the frozen embedding
