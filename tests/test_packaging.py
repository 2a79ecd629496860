"""The wheel holds what the checkout holds: every module, the builders' prompts, the recipes.

An editable install (`pip install -e .`) reads the checkout, so a package missing from pyproject.toml
only shows in a normal install (`pip install .`, a wheel on a cluster image), as an ImportError. This
builds the wheel (seconds, offline: the environment's setuptools, `.[dev]` brings it) from a copy of
the sources and compares its file list with the checkout's folders, so a new subpackage, prompt or
recipe that pyproject.toml does not ship fails here. `.ci/run` installs the wheel and trains with it.
"""

from __future__ import annotations

import configparser
import importlib
import importlib.resources
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator

import pytest

from tests.conftest import REPO

# Checkout folder -> where it lands in the wheel (pyproject.toml's [tool.setuptools.package-dir]).
INSTALLED_AS = {
    "mmkd": "mmkd",
    "eval": "mmkd/eval",
    "data_builders": "mmkd/data_builders",
    "launch": "mmkd/launch",
    "recipes": "mmkd/recipes",
}
# What the build reads besides those folders.
BUILD_INPUTS = ("pyproject.toml", "README.md")


def checkout_files() -> set[str]:
    """Every file of the installed folders, as its path in the wheel (bytecode and hidden files aside)."""
    out = set()
    for folder, target in INSTALLED_AS.items():
        for path in (REPO / folder).rglob("*"):
            rel = path.relative_to(REPO / folder)
            skip = "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts)
            if path.is_file() and not skip and path.suffix != ".pyc":
                out.add(f"{target}/{rel.as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Iterator[zipfile.ZipFile]:
    # A copy, not the checkout: setuptools copies packages into build/lib and packs whatever that
    # folder holds, so a stale build/ from an earlier install would hide a package missing here.
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        shutil.copy2(REPO / name, src / name)
    for folder in INSTALLED_AS:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    build = subprocess.run([*pip, str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = out.glob("mmkd-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def test_wheel_holds_every_file_of_the_installed_folders(wheel):
    missing = sorted(checkout_files() - set(wheel.namelist()))
    assert not missing, f"not in the wheel (pyproject.toml: packages / package-data): {missing}"


def test_wheel_installs_nothing_outside_the_mmkd_namespace(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mmkd"}


def test_console_scripts_point_at_launcher_mains(wheel):
    (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(meta).decode())
    scripts = dict(entry_points["console_scripts"])
    # launch/visual_tokenizer.py is `mmkd-visual-tokenizer`: console scripts take dashes
    assert set(scripts) == {f"mmkd-{p.stem.replace('_', '-')}" for p in (REPO / "launch").glob("[!_]*.py")}
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        stem = name.removeprefix("mmkd-").replace("-", "_")
        assert module == f"mmkd.launch.{stem}" and func == "main", (name, target)


def test_recipes_are_found_as_package_data():
    """What `@hydra.main(config_path="pkg://mmkd.recipes")` reads, from this environment's install."""
    if importlib.util.find_spec("mmkd.recipes") is None:
        pytest.fail("mmkd.recipes is not importable: an install older than pyproject.toml; pip install -e .")
    recipes = importlib.resources.files("mmkd.recipes")
    assert (recipes / "config.yaml").is_file()
    assert (recipes / "recipe" / "baseline.yaml").is_file()


@pytest.mark.parametrize("launcher", ["eval", "export", "report", "doc_tables", "ask", "visual_tokenizer"])
def test_help_prints_the_usage_and_exits_0_and_a_wrong_key_is_named(launcher, capsys):
    main = importlib.import_module(f"mmkd.launch.{launcher}").main
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0 and f"usage: python launch/{launcher}.py" in out and len(out.splitlines()) > 3
    if launcher != "visual_tokenizer":  # its keys are the typed schema's: checked on merge
        with pytest.raises(SystemExit) as exit:
            main(["checkpoint=x", "runs=x", "results=x", "out=x", "readme=x", "misspelt=1"])
        assert "(unknown: " in str(exit.value.code) and "'misspelt'" in str(exit.value.code)
