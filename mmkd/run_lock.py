"""One job per run directory: a lock file naming the host and process that hold it.

Two jobs on one run directory would resume from each other's checkpoints and delete them in rotation.
Rank 0 takes `<run_dir>/LOCK` (created exclusively) before it builds or trains, and removes it when
the run ends; an eval-only job takes its output directory's the same way. A lock whose process is
gone (same host, PID not running) is stale and taken over; a lock held from another host cannot be
checked from here, so it is taken over only when the user says the job there is gone
(`train.break_lock=true`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmkd.errors import UserError


class RunLocked(UserError, RuntimeError):
    """Another job holds the run directory."""

    label = "run directory error"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _take(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
    return True


@contextmanager
def run_lock(
    run_dir: Path,
    break_lock: bool = False,
    remedy: str = "use another run_dir, or, if that job is gone, train.break_lock=true",
) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block; raises RunLocked, naming the holder and `remedy`, if
    another job has it."""
    path = Path(run_dir) / "LOCK"
    path.parent.mkdir(parents=True, exist_ok=True)
    while not _take(path):
        try:
            holder = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # released, or being written right now
            time.sleep(0.1)
            continue
        here = holder.get("host") == socket.gethostname()
        if not break_lock and (not here or _alive(int(holder.get("pid", -1)))):
            where = "this host" if here else f"host {holder.get('host')}"
            raise RunLocked(
                f"{run_dir} is in use by process {holder.get('pid')} on {where} ({path}); wait for it, "
                + remedy
            )
        print(f"run lock: taking over {path} from process {holder.get('pid')} on {holder.get('host')}")
        path.unlink(missing_ok=True)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
