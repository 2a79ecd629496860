"""Rewrite the docs' generated tables from their committed data (no number typed by hand).

    python launch/doc_tables.py                              # README.md, docs/*.md, bench/RESULTS.md
    python launch/doc_tables.py docs=[README.md,docs/protocol.md]
    python launch/doc_tables.py check=true                   # only say which docs are stale

Run from the checkout's root. A section is the text between `<!-- generated from FOLDER by GENERATOR ...
-->` and `<!-- end of the section generated from FOLDER -->`; the generators and what each reads:
`eval/doc_tables.py` (eval/ in the checkout).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import ListConfig

from mmkd.eval.doc_tables import docs, regenerate, stale
from mmkd.launch._arguments import parse
from mmkd.shards import write_text_atomic

USAGE = "usage: python launch/doc_tables.py [docs=[FILE,...]] [check=true]"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv, USAGE, __doc__, required=[], allowed=["docs", "check"])
    repo = Path.cwd()
    given = args.get("docs")
    paths = [repo / p for p in (given if isinstance(given, ListConfig) else [given])] if given else docs(repo)
    try:
        if args.get("check", False):
            if old := stale(repo, paths):
                sys.exit(
                    f"doc_tables error: stale generated tables in {old}: run python launch/doc_tables.py"
                )
            print(f"{len(paths)} docs up to date with their data")
            return
        for path in paths:
            text = path.read_text()
            new = regenerate(text, repo, str(path))
            if new != text:
                write_text_atomic(path, new)
                print(f"{path.relative_to(repo)}: generated tables rewritten")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"doc_tables error: {e}")


if __name__ == "__main__":
    main()
