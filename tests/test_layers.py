"""The packages point one way: the launchers over evaluation, evaluation over the data builders, the
builders over the core (`mmkd/`), and no module imports one above it, at the top of a file or inside a
function, nor takes part in a cycle. docs/design.md ("Layers") says why the order is this one."""

import ast
from pathlib import Path

from tests.conftest import REPO

# Source folder -> (the import name it installs as, its layer: higher imports lower, never the reverse).
LAYERS = {"mmkd": ("mmkd", 0), "data_builders": ("mmkd.data_builders", 1), "eval": ("mmkd.eval", 2)}
LAYERS["launch"] = ("mmkd.launch", 3)


def _modules(repo: Path) -> dict[str, tuple[Path, int]]:
    """Every module's import name -> (its file, its layer)."""
    out = {}
    for folder, (package, layer) in LAYERS.items():
        for path in sorted((repo / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(repo / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = (path, layer)
    return out


def _imports(path: Path, name: str) -> set[str]:
    """Every name `path` imports anywhere in it (relative imports resolved), with each imported
    attribute as a possible submodule."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def import_graph(repo: Path) -> tuple[dict[str, set[str]], dict[str, int]]:
    """{module: the project modules it imports} and {module: its layer}."""
    modules = _modules(repo)
    graph = {}
    for name, (path, _) in modules.items():
        deps = set()
        for imported in _imports(path, name):
            while imported and imported not in modules:  # a function or class of a module: the module
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                deps.add(imported)
        graph[name] = deps
    return graph, {name: layer for name, (_, layer) in modules.items()}


def upward(graph: dict[str, set[str]], layer: dict[str, int]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps if layer[b] > layer[a])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_module_imports_a_layer_above_its_own_nor_takes_part_in_a_cycle():
    graph, layer = import_graph(REPO)
    assert len(graph) > 120  # every module was read
    assert not upward(graph, layer), "imports upward: " + ", ".join(upward(graph, layer))
    assert not cycles(graph), f"import cycles: {cycles(graph)}"


def test_the_check_finds_a_planted_upward_import_and_a_planted_cycle(tmp_path):
    for folder in LAYERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "mmkd/core.py").write_text("def f():\n    from mmkd.eval.report import x  # lazy\n")
    (tmp_path / "eval/report.py").write_text("from mmkd.eval import table\nx = 1\n")
    (tmp_path / "eval/table.py").write_text("from . import report\n")
    graph, layer = import_graph(tmp_path)
    assert upward(graph, layer) == ["mmkd.core -> mmkd.eval.report"]
    assert cycles(graph) == [["mmkd.eval.report", "mmkd.eval.table"]]
