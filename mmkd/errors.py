"""Errors the user can fix, and the one way every launcher reports them.

An error of this kind is about the user's input (a config key, a file, a server, a run directory),
not a bug: the launcher prints one line, `<label>: <message>`, and exits with status 1, without a
traceback. Its message names the key or file and what would be right; `hint` says what to do next.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


class UserError(Exception):
    label = "error"
    hint = ""

    def report(self) -> str:
        return f"{self.label}: {self}{self.hint}"


class ConfigError(UserError, ValueError):
    """A configuration value is wrong; the message names the key and what would be right."""

    label = "config error"


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, incomplete, corrupt or of an unreadable kind; the message names the file."""

    label = "checkpoint error"


class DataError(UserError, ValueError):
    """A dataset is incomplete or corrupt (a hash that differs from its manifest, an unreadable shard,
    too many samples that do not decode); the message names the shard and the sample."""

    label = "data error"


@contextmanager
def reported() -> Iterator[None]:
    """Around a launcher's body: a `UserError` becomes its one-line report and exit status 1. Under
    torchrun a config error is every rank's (each reads the same config): rank 0 alone says it, so a
    job prints it once; any other error is said by the rank that met it."""
    try:
        yield
    except ConfigError as e:
        sys.exit(_own_line(e.report()) if int(os.environ.get("RANK", "0")) == 0 else 1)
    except UserError as e:
        sys.exit(_own_line(e.report()))


def _own_line(report: str) -> str:
    """The report on a line of its own: a progress bar left open (redrawn with carriage returns, no
    newline, as it is in a log file) would otherwise run into it."""
    if getattr(tqdm, "_instances", None):
        sys.stderr.write("\n")
    return report
