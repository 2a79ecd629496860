"""One job per run directory: a second job stops before building or training, naming the holder; a
lock left by a dead process is taken over; one from another host only when told."""

import json
import os
import socket
import subprocess
import sys

import pytest

from mmkd.run_lock import RunLocked, run_lock
from tests.conftest import REPO


def _lock(run_dir, host, pid):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "LOCK").write_text(json.dumps({"host": host, "pid": pid, "since": 0}))


def test_a_second_job_on_a_run_directory_stops_before_any_build(tmp_path):
    run_dir = tmp_path / "run"
    _lock(run_dir, socket.gethostname(), os.getpid())  # a live job on this host
    cli = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch/train.py"),
            f"run_dir={run_dir}",
            f"data.root={tmp_path / 'data'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert (
        cli.returncode != 0
        and f"run directory error: {run_dir} is in use by process {os.getpid()}" in cli.stderr
    )
    assert not (tmp_path / "data").exists()


def test_a_dead_holder_is_taken_over_and_the_lock_released(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _lock(tmp_path, socket.gethostname(), int(dead.stdout))
    with run_lock(tmp_path):
        assert json.loads((tmp_path / "LOCK").read_text())["pid"] == os.getpid()
        with pytest.raises(RunLocked, match="on this host"), run_lock(tmp_path):  # it keeps others out
            pass
    assert not (tmp_path / "LOCK").exists()


def test_another_hosts_lock_is_taken_over_only_when_told(tmp_path):
    _lock(tmp_path, "gpu-node-7", 4242)
    with (
        pytest.raises(RunLocked, match=r"process 4242 on host gpu-node-7.*train\.break_lock=true"),
        run_lock(tmp_path),
    ):
        pass
    with run_lock(tmp_path, break_lock=True):
        assert json.loads((tmp_path / "LOCK").read_text())["host"] == socket.gethostname()
