"""A bench's figures as a JSON record for bench/results/ (which bench/RESULTS.md is generated from),
stamped with where and when they were measured (not a benchmark itself)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from mmkd.shards import write_text_atomic


def write_record(path: Path, figures: dict[str, Any]) -> None:
    """`figures` plus the date, the machine's cores and torch's version, written atomically."""
    where = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "torch": torch.__version__}
    record = {**figures, **where}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
