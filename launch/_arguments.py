"""The key=value arguments of the launchers that are not Hydra apps (eval, export, report,
doc_tables, ask, visual_tokenizer): one parser, so each answers `--help` and a wrong key alike."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf


def parse(
    argv: list[str] | None,
    usage: str,
    doc: str | None,
    required: Iterable[str] = (),
    allowed: Iterable[str] | None = None,
) -> DictConfig:
    """`argv` (the command line when None) as a config. `--help` / `-h` prints the launcher's
    docstring and usage and exits 0; a missing required key, or a key outside `allowed`, exits with
    the usage naming the unknown keys."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(f"{(doc or '').strip()}\n\n{usage}")
        sys.exit(0)
    args = OmegaConf.from_dotlist(argv)
    unknown = sorted(set(args) - set(allowed)) if allowed is not None else []
    if unknown or not set(required) <= set(args):
        sys.exit(f"{usage}\n(unknown: {unknown})" if unknown else usage)
    return args
