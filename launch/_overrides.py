"""The command-line overrides of the Hydra launchers (train, build, clip, foundations), checked before
Hydra composes them: a group option that does not exist or a misspelt key is one `config error:` line
naming it and what is near, where Hydra would print six to eight lines (or a listing of every recipe).

Checked: `group=option` (each of a sweep's comma-separated options) against the group's YAML files,
and `a.b.c=value` against the typed schema (`mmkd.config.RunConfig`), down to the first key whose
value is a free-form mapping (a mixture, `data.sizes`, `eval.custom`). Left to Hydra: its own keys
(`hydra...`), `+key` / `++key` / `~key`, sweep functions and interpolations.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import typing
from pathlib import Path

from mmkd.config import ConfigError, RunConfig


def _groups(argv: list[str]) -> dict[str, list[str]]:
    """Config group -> its options, from the package's recipes and the folders `hydra.searchpath`
    adds (a user's own recipes: `hydra.searchpath=[file:///my/recipes]`), as Hydra reads them."""
    roots = [importlib.resources.files("mmkd.recipes"), *_search_path(argv)]
    groups: dict[str, set[str]] = {}
    for root in roots:
        for g in root.iterdir():
            if g.is_dir() and not g.name.startswith(("_", "hydra")):
                options = {f.name.removesuffix(".yaml") for f in g.iterdir() if f.name.endswith(".yaml")}
                groups.setdefault(g.name, set()).update(options)
    return {name: sorted(options) for name, options in groups.items()}


def _search_path(argv: list[str]) -> list[Path]:
    """The local folders of a `hydra.searchpath=[...]` override; a folder that is not there is an error
    naming it (Hydra would only say later that an option is missing)."""
    folders = []
    for arg in argv:
        if arg.startswith(("hydra.searchpath=", "+hydra.searchpath=", "++hydra.searchpath=")):
            for entry in arg.split("=", 1)[1].strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if entry.startswith("pkg://") or not entry:
                    continue
                folder = Path(entry.removeprefix("file://"))
                if not folder.is_dir():
                    raise ConfigError(
                        f"hydra.searchpath: {entry} is not a folder (give file:///absolute/path)"
                    )
                folders.append(folder)
    return folders


def _near(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3)
    return f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(choices)}"


def _check_key(path: list[str]) -> None:
    node: typing.Any = RunConfig
    for depth, name in enumerate(path):
        if not dataclasses.is_dataclass(node):
            return  # a free-form mapping: its keys are the user's
        hints = typing.get_type_hints(node)
        if name not in hints:
            where = ".".join(path[:depth]) or "the config"
            raise ConfigError(
                f"{'.'.join(path)}: no key {name!r} in {where} ({_near(name, sorted(hints))}); "
                f"+{'.'.join(path)}=... adds a key the schema does not have"
            )
        node = hints[name]


def check_overrides(argv: list[str]) -> None:
    """Raise a `ConfigError` for the first override naming a group option or a key that does not exist."""
    groups = _groups(argv)
    for arg in argv:
        if arg.startswith(("-", "+", "~", "hydra")) or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if any(c in value for c in "()[]{}$"):
            continue  # a sweep function, a list or an interpolation: Hydra's to read
        if key in groups:
            for option in value.split(","):
                if option not in groups[key] and option != "null":
                    raise ConfigError(f"{key}={option}: no such {key} ({_near(option, groups[key])})")
        else:
            _check_key(key.split("."))
