"""The training engines by `train.engine` name, each imported only when a run chooses it (DeepSpeed is
an optional dependency). An engine's traits are attributes of its class (`mmkd.engines.base.Engine`),
so the loop, the config checks and the checkpoint reader ask the class, never the name."""

from __future__ import annotations

import importlib

ENGINES = {
    "ddp": "mmkd.engines.ddp:DDPEngine",  # replicas, gradients all-reduced once per step
    "fsdp2": "mmkd.engines.fsdp2:FSDP2Engine",  # parameters, gradients, optimiser state sharded
    "deepspeed": "mmkd.engines.deepspeed:DeepSpeedEngine",  # ZeRO-1/2/3 over our optimiser
}


def engine_class(name: str) -> type:
    """The Engine subclass registered as `name` (a KeyError names an unknown one)."""
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)
