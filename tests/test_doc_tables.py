"""Every generated table in the docs is what its committed data gives (nothing typed by hand), and
the tool that rewrites them finds a stale section, names its doc and refuses a broken marker."""

import json
import shutil

import pytest

from mmkd.eval.doc_tables import SECTION, docs, regenerate
from mmkd.launch.doc_tables import main as doc_tables
from tests.conftest import REPO

# Docs whose tables come from data, and how many generated sections each holds.
GENERATED = {
    "README.md": 1,
    "bench/RESULTS.md": 11,
    "docs/decisions.md": 5,
    "docs/foundations.md": 3,
    "docs/protocol.md": 7,
    "docs/selection.md": 1,
}


def test_every_generated_table_is_its_committed_data():
    found = {}
    for path in docs(REPO):
        text = path.read_text()
        sections = SECTION.findall(text)
        assert text.count("<!-- generated from") == len(sections), f"{path}: a marker without its end"
        assert regenerate(text, REPO, str(path)) == text, f"{path}: stale, run python launch/doc_tables.py"
        if sections:
            found[str(path.relative_to(REPO))] = len(sections)
    assert found == GENERATED


def test_the_tool_rewrites_a_stale_section_and_check_names_the_doc(tmp_path, monkeypatch):
    data = tmp_path / "docs/results/x"
    data.mkdir(parents=True)
    shutil.copy(REPO / "docs/results/protocol/seed0/world_sft.json", data / "world_sft.json")
    doc = tmp_path / "docs/x.md"
    begin = "<!-- generated from docs/results/x by runs: python launch/doc_tables.py rewrites it -->"
    doc.write_text(
        f"# x\n{begin}\n| stale |\n<!-- end of the section generated from docs/results/x -->\ntail\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"stale generated tables in \['docs/x\.md'\]"):
        doc_tables(["check=true"])
    doc_tables([])
    text = doc.read_text()
    assert "| stale |" not in text and text.startswith("# x\n<!-- generated from docs/results/x by runs:")
    assert text.endswith("<!-- end of the section generated from docs/results/x -->\ntail\n")
    knowledge = json.loads((data / "world_sft.json").read_text())["suites"]["world"]["knowledge"]
    assert f"| knowledge | {100 * knowledge['score']:.1f} ± " in text
    doc_tables(["check=true"])  # up to date now
    doc.write_text(text.replace("by runs:", "by nothing:"))
    with pytest.raises(SystemExit, match=r"names generator 'nothing'; known: \["):
        doc_tables(["docs=[docs/x.md]"])
    doc.write_text(text.replace("docs/results/x", "docs/results/gone"))
    with pytest.raises(SystemExit, match=r"section from docs/results/gone: no such folder"):
        doc_tables([])
