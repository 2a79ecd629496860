"""DeepSpeed ZeRO 1/2/3 as a training engine (`train.engine=deepspeed train.zero_stage=N`).

DeepSpeed owns the optimiser step, gradient clipping and the reduction across ranks; our loop keeps
the loss normalisation (the global supervised-token count), the learning-rate schedule and the
checkpoint commit protocol. The DeepSpeed config is generated from ours, so the two cannot disagree:

    train_micro_batch_size_per_gpu = the micro-batch       gradient_clipping = train.grad_clip
    gradient_accumulation_steps    = accumulation steps    zero_optimization.stage = train.zero_stage
    bf16.enabled                   = train.bf16            (non-finite gradients skip the update)

On a machine without CUDA, DeepSpeed runs on its CPU accelerator over gloo (`DS_ACCELERATOR=cpu` is
set for it); its first start compiles a small communication op (~1 minute, cached afterwards in
`TORCH_EXTENSIONS_DIR`). Install with `pip install -e ".[deepspeed]"`.

[IMPORTANT] The model is materialised whole on each rank's device before DeepSpeed partitions it
(ZeRO-3 included): dense_3b fits a GPU that way, larger models would need `deepspeed.zero.Init`.
"""

from __future__ import annotations

import os
import pickle
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from mmkd.engines.base import Engine
from mmkd.errors import CheckpointError

if TYPE_CHECKING:
    from mmkd.config import TrainConfig


def import_deepspeed():
    """DeepSpeed, on its CPU accelerator where there is no GPU (it would otherwise guess one)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f'train.engine=deepspeed needs DeepSpeed ({e}); install it with pip install -e ".[deepspeed]"'
        ) from e
    return deepspeed


def deepspeed_config(t: TrainConfig, micro_batch: int, accumulation: int) -> dict[str, Any]:
    """DeepSpeed's JSON config from ours (see the module docstring for the mapping)."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        # Check gradients in bf16 too, so a NaN/Inf gradient skips the update in every precision.
        "bf16": {"enabled": t.bf16, "check_grad_overflow": True},
        "steps_per_print": 2**31 - 1,  # our progress bar and metrics.jsonl report progress
        "wall_clock_breakdown": False,
    }


class DeepSpeedEngine(Engine):
    """DeepSpeed's engine over the model, stepping our optimiser (partitioned by ZeRO)."""

    own_precision = True
    fused_optimizer = False
    branchable = False  # resuming reads DeepSpeed's pickled files: only this run's own (checked)

    @classmethod
    def create(cls, model, make_optimizer, t, info, micro_batch: int, accumulation: int) -> Engine:
        return cls(model, make_optimizer(model), t, micro_batch, accumulation)

    @staticmethod
    def foreign_checkpoint(path: Path) -> str | None:
        if (path / ".metadata").exists() or not is_checkpoint(path):
            return None
        return (
            f"{path} holds only DeepSpeed's pickled files (no .metadata): evaluation and export read DCP "
            "weights only and never unpickle; a DeepSpeed run of this version writes them beside its own"
        )

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        t: TrainConfig,
        micro_batch: int,
        accumulation: int,
    ):
        deepspeed = import_deepspeed()
        config = deepspeed_config(t, micro_batch, accumulation)
        wrapped, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        super().__init__(model, wrapped.optimizer)  # its wrapper steps and holds the param groups
        self.module = wrapped

    def sync(self, last: bool) -> AbstractContextManager:
        self.module.set_gradient_accumulation_boundary(last)
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.module.backward(loss, scale_wrt_gas=False)  # the loss is already normalised per global token

    def step(self, grad_clip: float) -> float:
        self.module.step()  # it clips (train.grad_clip), and skips the update on a non-finite norm
        return float(self.module.get_global_grad_norm())

    def save(self, path: Path) -> None:
        """DeepSpeed's own sharded layout inside our checkpoint directory, for resuming this run, and
        beside it the weights as DCP, which evaluation and export read without unpickling (collective)."""
        self.module.save_checkpoint(
            str(path.parent), tag=path.name, client_state={"rng": torch.get_rng_state()}, save_latest=False
        )
        # ZeRO-3 holds each parameter in pieces: gather them for the save (a full copy per rank, briefly).
        gathered = self.module.zero_optimization_stage() == 3
        with import_deepspeed().zero.GatheredParameters(list(self.model.parameters()), enabled=gathered):
            # fp32 for a plain model to load; under bf16 these are the bf16 weights the run computed with
            state = {"model": {k: v.detach().float().clone() for k, v in self.model.state_dict().items()}}
        dcp.save(state, checkpoint_id=path)

    def load(self, path: Path) -> None:
        """Weights, ZeRO-partitioned optimiser state and RNG, for an exact resume (collective).

        DeepSpeed unpickles its files with `weights_only=False`, which would run any code planted in
        them; each file this rank reads is first read with torch's weights-only unpickler, allowing
        only what DeepSpeed itself writes, and a file holding anything else is refused by name.
        """
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        for f in [*sorted(path.glob("*model_states.pt")), *sorted(path.glob(f"*zero_pp_rank_{rank}_*.pt"))]:
            check_pickle(f)
        _, client = self.module.load_checkpoint(
            str(path.parent), tag=path.name, load_optimizer_states=True, load_lr_scheduler_states=False
        )
        torch.set_rng_state(client["rng"])


def _allowed_globals() -> list:
    """The classes DeepSpeed pickles into its checkpoints besides tensors and plain containers."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def check_pickle(path: Path) -> None:
    """Refuse a DeepSpeed checkpoint file that holds a pickled object outside `_allowed_globals`
    (read with torch's weights-only unpickler, which runs no code)."""
    with torch.serialization.safe_globals(_allowed_globals()):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{path}: holds a pickled object DeepSpeed does not write ({why}); refusing to resume from "
                "it (its code would run while loading)"
            ) from None


def is_checkpoint(path: Path) -> bool:
    """A checkpoint directory written by DeepSpeed (its pickled model-state files)."""
    return any(path.glob("*model_states.pt"))
