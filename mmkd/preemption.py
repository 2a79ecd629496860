"""Preemption: a scheduler's signal ends a run at a committed checkpoint, not at the last periodic one.

SLURM and the cloud schedulers preempt with SIGTERM (SLURM's `--signal` and submitit send SIGUSR1 /
SIGUSR2) and a grace period before SIGKILL. On one of these signals every rank finishes the step it is
in; at the step's end the ranks agree (one all-reduce of a flag, so a rank the signal reached a step
later still stops at the same step), the run saves a committed checkpoint with its data stream's state,
and the launcher exits with `PREEMPTED_EXIT`, the status of a process ended by SIGTERM, on which
schedulers requeue. The rerun resumes from that checkpoint as from any other, bit-identically. A
handler that was there before (submitit's, which requeues the job and exits) runs after the save.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import torch

from mmkd.distributed import DistInfo, all_reduce_sum

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
PREEMPTED_EXIT = 128 + signal.SIGTERM  # 143


class Preempted(Exception):
    """The run stopped on a scheduler's signal after saving `checkpoint`."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        super().__init__(f"preempted by {signal_name} at step {step}: saved {checkpoint}; rerun to resume")
        self.checkpoint = checkpoint


class PreemptionWatch:
    """Notes the scheduler's signals while training (main thread only: Python delivers signals there)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._signal: tuple[int, FrameType | None] | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        previous = self._previous.get(self._signal[0]) if self._signal else None
        if callable(previous):  # after the save: submitit's handler requeues the job, then exits
            previous(*self._signal)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received, self._signal = signal.Signals(signum).name, (signum, frame)

    def requested(self, info: DistInfo) -> bool:
        """Whether any rank has received a signal (collective: every rank calls it at each step's end)."""
        flag = torch.tensor([1.0 if self.received else 0.0], device=info.device)
        return bool(all_reduce_sum(flag).item() > 0)
