"""The README's main job and its promise, as a slow test (~8 minutes on 2 cores): `pytest -m slow`."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_quickstart_beats_chance_and_blind_on_the_four_visual_abilities(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "launch/train.py"), "recipe=baseline", f"run_dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["abilities"]
    for ability in ("existence", "attribute", "counting", "spatial"):
        r = results[ability]
        assert r["score"] - r["ci95"] > max(r["chance"], r["blind"]), (ability, r)
