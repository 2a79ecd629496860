"""The engine interface the training loop talks to, and the engine of a single process.

An engine owns how one model trains across ranks: which module the forward runs through, when
gradients are reduced (once per step, on its last micro-batch), the backward pass, the clipped
optimiser step and the checkpointed state. The loop, the checkpoint commit protocol and evaluation
never ask which engine they have.
"""

from __future__ import annotations

import math
import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from mmkd.dcp_reader import SafeReader


@contextmanager
def quiet_single_process():
    """A single process is an intended case here; DCP warns about it on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
        )
        yield


def scalar(x: torch.Tensor) -> float:
    """A scalar that may be a DTensor (FSDP2's grad norm) as a Python float."""
    return float(x.full_tensor() if hasattr(x, "full_tensor") else x)


class Engine:
    """One process, no reduction across ranks: the plain model and its optimiser.

    `model` is the plain module (its parameters, possibly sharded, are what is trained and saved);
    `module` is what the forward pass runs through (a wrapper where the engine needs one).
    """

    # What the loop and the checks ask of an engine, instead of its name:
    shards_meta_model = False  # shards the model on the meta device; each rank then materialises its shards
    own_precision = False  # runs bf16 by its own mixed precision (else the loop autocasts the forward)
    fused_optimizer = True  # may step with the fused CUDA Adam kernel (an engine that wraps it may not)
    branchable = True  # its checkpoints load as DCP alone, so a run may branch from another one's

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.module, self.optimizer = model, model, optimizer

    @classmethod
    def create(cls, model, make_optimizer, t, info, micro_batch: int, accumulation: int) -> Engine:
        """The engine over `model` (materialised, or sharded where `shards_meta_model`), with the
        optimiser `make_optimizer` builds over its parameters as the engine leaves them."""
        return cls(model, make_optimizer(model))

    @classmethod
    def shard(cls, model: nn.Module, blocks: list[nn.Module], bf16: bool) -> None:
        """Shard the meta model in place (engines with `shards_meta_model` only)."""

    @staticmethod
    def foreign_checkpoint(path: Path) -> str | None:
        """Why evaluation could not read `path`, a checkpoint this engine wrote in a layout of its own
        without the DCP weights beside it; None where it reads as any checkpoint."""
        return None

    def sync(self, last: bool) -> AbstractContextManager:
        """Context for one micro-batch's backward: gradients are reduced across ranks on the last."""
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, grad_clip: float) -> float:
        """Clip, then step the optimiser, unless the gradient norm is not finite (the weights then
        stay as they are, for the caller to stop on); returns the norm before clipping."""
        norm = scalar(torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip))
        if math.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def save(self, path: Path) -> None:
        """Model, optimiser and RNG state into `path` (collective: every rank writes its shards)."""
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optimizer": optim_state, "rng": torch.get_rng_state()}
        with quiet_single_process():
            dcp.save(state, checkpoint_id=path, no_dist=not dist.is_initialized())

    def load(self, path: Path) -> None:
        """The whole training state back from `path` (collective), for an exact resume."""
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optimizer": optim_state, "rng": torch.get_rng_state()}
        with quiet_single_process():
            dcp.load(state, storage_reader=SafeReader(path), no_dist=not dist.is_initialized())
        set_state_dict(
            self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
        torch.set_rng_state(state["rng"])
