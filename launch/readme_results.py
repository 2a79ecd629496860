"""Rewrite a README's results section from a committed comparison (docs/results/<name>/report.json).

    python launch/readme_results.py results=docs/results/seed000 readme=README.md
    python launch/readme_results.py results=docs/results/seed000 readme=README.md check=true  # stale?

What the section holds and how it is worded: `mmkd/eval/readme_results.py` (eval/ in the checkout).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmkd.eval.readme_results import load, section, splice
from mmkd.launch._arguments import parse
from mmkd.shards import write_text_atomic

USAGE = "usage: python launch/readme_results.py results=DIR readme=README.md [check=true]"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv, USAGE, __doc__, required=["results", "readme"], allowed=["results", "readme", "check"])
    readme = Path(args.readme)
    try:
        report, paper = load(Path(args.results))
        text = readme.read_text()
        new = splice(text, section(report, paper, args.results), args.results)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"readme_results error: {e}")
    if args.get("check", False):
        if new != text:
            sys.exit(f"{readme}'s section from {args.results} is stale: rerun without check=true")
        print(f"{readme} is up to date with {args.results}")
        return
    write_text_atomic(readme, new)
    print(f"{readme}: section from {args.results} rewritten")


if __name__ == "__main__":
    main()
