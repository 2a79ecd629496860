"""Read a report page as a browser would need it: its headings, its text and the pictures it names,
each of which must exist beside it (the page opens from disk, nothing is fetched)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


@dataclass
class Page:
    headings: list[str] = field(default_factory=list)  # the <h2> sections in order
    images: set[str] = field(default_factory=set)  # every <img src>, relative to the page
    text: str = ""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page, self._tag, self._text = Page(), "", []

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "img":
            self.page.images.add(dict(attrs)["src"])

    def handle_data(self, data):
        self._text.append(data)
        if self._tag == "h2" and data.strip():
            self.page.headings.append(data.strip())

    def handle_endtag(self, tag):
        self._tag = ""


def read_page(path: Path) -> Page:
    reader = _Reader()
    reader.feed(path.read_text())
    page = reader.page
    page.text = " ".join(" ".join(reader._text).split())  # whitespace as a browser shows it
    missing = sorted(src for src in page.images if not (path.parent / src).is_file())
    assert not missing, f"{path} names pictures that are not there: {missing[:3]}"
    assert all(not src.startswith(("http:", "https:", "/")) for src in page.images)
    return page
