"""Open a report page (launch/report.py's report.html, a run's eval/report.html) in headless Chromium:
every picture must load and nothing may reach the console. Optionally saves a screenshot.

    python bench/report_in_browser.py reports/x/report.html
    python bench/report_in_browser.py reports/x/report.html --screenshot docs/images/report.png

Needs Chromium (Debian: `apt-get install chromium`); CI does not, `pytest -m slow` runs this check.
Prints the pictures found, those broken, the console lines and the seconds the page took; exits 1 if
any picture is broken or anything was logged.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from html import unescape
from pathlib import Path

# Appended to a copy of the page: after load, the page records its pictures and the broken ones.
PROBE = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images]
    .filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.getAttribute("src"));
  document.body.setAttribute("data-check", JSON.stringify({images: document.images.length, broken: broken}));
});
</script>"""
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("no Chromium on PATH: apt-get install chromium")


def check(page: Path, screenshot: Path | None = None, width: int = 1280, height: int = 2400) -> dict:
    """Load `page` from disk; returns {"images", "broken", "console", "seconds"}."""
    page = page.resolve()
    probe = page.with_name(f".{page.stem}.browser-check.html")  # beside it: the same relative paths
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        start = time.perf_counter()
        done = subprocess.run(
            [chromium(), *FLAGS, "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        seconds = time.perf_counter() - start
    finally:
        probe.unlink()
    found = re.search(r'data-check="([^"]*)"', done.stdout)
    if not found:
        raise RuntimeError(f"{page}: the page never finished loading:\n{done.stderr[-2000:]}")
    result = json.loads(unescape(found.group(1)))
    result["console"] = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    result["seconds"] = round(seconds, 2)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--window-size={width},{height}",
                f"--screenshot={screenshot.resolve()}",
                page.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    result = check(args.page, args.screenshot)
    print(json.dumps(result, indent=2))
    if result["broken"] or result["console"]:
        sys.exit(f"{args.page}: broken pictures {result['broken']}, console lines {result['console']}")


if __name__ == "__main__":
    main()
