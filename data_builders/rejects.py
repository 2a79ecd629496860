"""Records a builder or adapter could not use, with where they came from and why.

A long build never stops on one bad record: it rejects it here, goes on, and writes the list next to
its output (`rejects*.jsonl`) and the counts per reason into the manifest. `strict=True` turns the
first reject into an error instead, for tests and for users who want to fix their data first.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from mmkd.errors import UserError


class RejectedRecord(UserError, ValueError):
    """Raised by a strict `RejectLog`; the message names the file, the record and the reason."""

    label = "rejected (--strict)"


@dataclass(frozen=True)
class Reject:
    where: str  # file and record, e.g. "captions_train2017.json: annotations[12] (id=812)"
    reason: str  # a short category, e.g. "malformed_json", "empty_answer", "image_decode"
    detail: str = ""


class RejectLog:
    def __init__(self, strict: bool = False):
        self.strict = strict
        self.items: list[Reject] = []

    def add(self, where: str, reason: str, detail: str = "") -> None:
        if self.strict:
            raise RejectedRecord(f"{where}: {reason}" + (f" ({detail})" if detail else ""))
        self.items.append(Reject(where, reason, detail))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.items).items()))

    def __len__(self) -> int:
        return len(self.items)

    def write(self, path: str | Path) -> None:
        """Write one JSON line per reject, atomically (temp file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in self.items))
        os.replace(tmp, path)
