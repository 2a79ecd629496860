"""Every generated table of the docs, rewritten from its committed data: no number is typed by hand.

A generated section sits between two markers naming its data folder and its generator:

    <!-- generated from docs/results/protocol/seeds by seeds: python launch/doc_tables.py rewrites it -->
    ...
    <!-- end of the section generated from docs/results/protocol/seeds -->

`python launch/doc_tables.py` rewrites every such section of README.md, docs/*.md and bench/RESULTS.md
from its folder; `check=true` only says which are stale (tests/test_doc_tables.py runs it on every
commit). The generators:
- `foundations`: the world foundations' scores from their foundation.json records;
- `runs`, `seeds`, `continuous_seeds`, `snr`: world runs' scores from their results.json and
  noise.json records (eval/run_tables.py);
- `recipe_comparison`: a recipe comparison from launch/report.py's report.json, with the paper's
  averages beside it where the folder holds paper.json (eval/readme_results.py);
- `decisions`: the same report's signal, noise, SNR, MDE and metric to read (eval/decide.py);
- `decision_accuracy`: a two-scale report's share of recipe pairs both scales order alike;
- `selection_truth`: seed 004's selections against the world pool's planted defects, from the
  truth.json that `launch/build.py recipe=scale_top10 +selection=true` writes (eval/selection_truth.py);
- one per bench (`smoke_run`, `trainer_overhead`, ...: eval/bench_tables.py): its figures, from the
  JSON record it writes with `--json bench/results/<bench>.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmkd.eval import decide, readme_results, run_tables, selection_truth
from mmkd.eval.bench_tables import BENCH_TABLES, bench_section
from mmkd.foundations.report import table as foundations_table

BEGIN = (
    "<!-- generated from {folder} by {generator}: "
    "python launch/doc_tables.py rewrites it, do not edit by hand -->"
)
END = "<!-- end of the section generated from {folder} -->"
SECTION = re.compile(
    r"^<!-- generated from (?P<folder>\S+) by (?P<generator>[\w.]+)\b[^\n]*-->\n"
    r"(?P<body>.*?)^<!-- end of the section generated from (?P=folder) -->$",
    re.S | re.M,
)
DOCS = ("README.md", "docs/*.md", "bench/RESULTS.md")


def _records(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _arms(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """{arm: its seeds' records} from files named <arm>_seed<k>.json."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for name, record in _records(folder).items():
        arms.setdefault(name.rsplit("_seed", 1)[0], []).append(record)
    return arms


# generator -> (folder under the repository, the folder as the doc names it) -> markdown
GENERATORS: dict[str, Callable[[Path, str], str]] = {
    "foundations": lambda folder, _: foundations_table(_records(folder)),
    "runs": lambda folder, _: run_tables.runs_table(_records(folder)),
    "seeds": lambda folder, _: run_tables.seeds_table(_arms(folder)),
    "continuous_seeds": lambda folder, _: run_tables.continuous_seeds_table(_arms(folder)),
    "snr": lambda folder, _: run_tables.snr_table(_arms(folder)),
    "recipe_comparison": lambda folder, name: readme_results.section(*readme_results.load(folder), name),
    "decisions": lambda folder, _: decide.decisions_table(decide.from_report(readme_results.load(folder)[0])),
    "decision_accuracy": lambda folder, _: decide.agreement_table(
        decide.agreement_from_report(readme_results.load(folder)[0])
    ),
    "selection_truth": lambda folder, _: selection_truth.table(_records(folder)["truth"]),
    **{name: bench_section(name) for name in BENCH_TABLES},
}


def regenerate(text: str, repo: Path, where: str = "the doc") -> str:
    """`text` with every generated section rewritten from its folder under `repo`; an unknown
    generator or a missing folder is an error naming the section."""

    def rewrite(m: re.Match) -> str:
        folder, generator = m["folder"], m["generator"]
        if generator not in GENERATORS:
            raise ValueError(
                f"{where}: section from {folder} names generator {generator!r}; known: {sorted(GENERATORS)}"
            )
        if not (repo / folder).is_dir():
            raise ValueError(f"{where}: section from {folder}: no such folder under {repo}")
        body = GENERATORS[generator](repo / folder, folder).rstrip("\n")
        return f"{BEGIN.format(folder=folder, generator=generator)}\n{body}\n{END.format(folder=folder)}"

    return SECTION.sub(rewrite, text)


def docs(repo: Path) -> list[Path]:
    """Every doc whose generated sections the tool keeps: README.md, docs/*.md, bench/RESULTS.md."""
    return sorted({p for pattern in DOCS for p in repo.glob(pattern)})


def stale(repo: Path, paths: list[Path]) -> list[str]:
    """The docs among `paths` whose generated sections differ from what their folders give."""
    return [
        str(p.relative_to(repo)) for p in paths if regenerate(p.read_text(), repo, str(p)) != p.read_text()
    ]
