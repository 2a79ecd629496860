"""A fake accelerator for CPU tests (not a test): tensors that report device `fakegpu:0` and hold CPU
data, so a test can run the trainer and the evaluation "on a GPU" and catch any tensor left behind.

An op that mixes `fakegpu` tensors with CPU tensors fails, as it would on CUDA (0-dim CPU scalars and
explicit copies excepted, as there). Neither obvious route catches everything: on the meta device,
CPU ids into a meta embedding and a CPU mask in `masked_scatter` pass silently, and `FakeTensorMode`
cannot run random initialisation or compute real losses. This backend computes real values.

    with FakeDevice() as device:   # torch.device("fakegpu", 0)
        train(cfg, ..., DistInfo(device=device))
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.backend_registration import _DummyBackendModule, _setup_privateuseone_for_python_backend


class _Stream:
    """Work on the fake device is synchronous: one stream, always done."""

    def synchronize(self) -> None:
        pass

    def wait_stream(self, other: _Stream) -> None:
        pass


class _Backend(_DummyBackendModule):
    """`torch.fakegpu`: what torch.distributed.checkpoint asks of a device module (streams). It is
    available only inside `FakeDevice`, so torch's device probing elsewhere in the test session
    (activation checkpointing, DCP) still finds no accelerator."""

    _stream = _Stream()
    active = False

    def is_available(self) -> bool:
        return self.active

    def current_stream(self, device=None) -> _Stream:
        return self._stream

    def stream(self, stream: _Stream):
        return nullcontext()

    def synchronize(self, device=None) -> None:
        pass


NAME = "fakegpu"
BACKEND = _Backend()
if torch._C._get_privateuse1_backend_name() != NAME:  # once per process
    _setup_privateuseone_for_python_backend(NAME, backend_module=BACKEND)
DEVICE = torch.device(NAME, 0)
aten = torch.ops.aten
# Ops that legitimately take a tensor from another device: explicit copies between devices.
COPIES = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default}


class OnDevice(torch.Tensor):
    """A tensor on the fake device: its metadata says `fakegpu:0`, its data is the CPU tensor `inner`."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(
            cls,
            inner.shape,
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            device=DEVICE,
            requires_grad=inner.requires_grad,
        )

    def __init__(self, inner: torch.Tensor):
        self.inner = inner

    def __repr__(self) -> str:
        return f"OnDevice({self.inner!r})"

    def tolist(self) -> list:  # copies to the host, as on CUDA (torch refuses it for subclasses)
        return self.inner.tolist()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _on_fake(device) -> bool:
    return device is not None and torch.device(device).type == NAME


def _run(func, args, kwargs):
    flat, _ = tree_flatten((args, kwargs))
    involved = any(isinstance(a, OnDevice) for a in flat)
    create = _on_fake(kwargs.get("device"))  # a factory or a copy to the fake device
    template_only = func._schema.name.endswith("_like")  # empty_like(meta_tensor, device=...) etc.
    if (involved or create) and func not in COPIES and not template_only:
        for a in flat:
            if torch.is_tensor(a) and not isinstance(a, OnDevice) and a.dim() > 0:
                raise RuntimeError(
                    f"{func}: a tensor on {a.device} of shape {tuple(a.shape)} met tensors on {DEVICE} "
                    "(a tensor was left behind on the wrong device)"
                )
    if create:
        kwargs = {**kwargs, "device": torch.device("cpu")}
    out = func(*tree_map(lambda a: a.inner if isinstance(a, OnDevice) else a, args), **kwargs)
    leaves_device = func in COPIES and kwargs.get("device") is not None and not create  # `.cpu()`
    if create or (involved and not leaves_device):
        return tree_map(
            lambda t: OnDevice(t) if torch.is_tensor(t) and not isinstance(t, OnDevice) else t, out
        )
    return out


# Kernels for the calls that reach the backend below Python dispatch (e.g. `torch.tensor(data,
# device=...)` builds on the CPU, then allocates on the device and copies in C++).
_LIB = torch.library.Library("aten", "IMPL")
_LIB.impl(
    "empty.memory_format",
    lambda size, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None: OnDevice(
        torch.empty(size, dtype=dtype)
    ),
    "PrivateUse1",
)
_LIB.impl(
    "empty_strided",
    lambda size, stride, dtype=None, layout=None, device=None, pin_memory=None: OnDevice(
        torch.empty_strided(size, stride, dtype=dtype)
    ),
    "PrivateUse1",
)


def _copy_from(src: torch.Tensor, dst: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
    data = src.inner if isinstance(src, OnDevice) else src
    (dst.inner if isinstance(dst, OnDevice) else dst).copy_(data)
    return dst


_LIB.impl("_copy_from", _copy_from, "PrivateUse1")


class FakeDevice(TorchDispatchMode):
    """Within the block, `fakegpu:0` behaves as an accelerator; entering returns that device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(issubclass(t, OnDevice) for t in types):
            return NotImplemented  # the tensors' own dispatch handles them
        return _run(func, args, kwargs or {})

    def __enter__(self) -> torch.device:
        super().__enter__()
        BACKEND.active = True
        return DEVICE

    def __exit__(self, *exc) -> None:
        BACKEND.active = False
        super().__exit__(*exc)
