"""Every `specs/<file>.md#<anchor>` cited in lance_ref's code names an existing heading."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Spec files other engineers are still writing: a citation is skipped until the file exists.
CITATION = re.compile(r"specs/([\w-]+\.md)(?:#([\w-]+))?")


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(spec: Path) -> set:
    return {github_anchor(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", spec.read_text(), re.M)}


def citations():
    found = set()
    for source in sorted((ROOT / "lance_ref").rglob("*.py")):
        for name, anchor in CITATION.findall(source.read_text()):
            found.add((name, anchor, str(source.relative_to(ROOT))))
    return sorted(found)


def test_the_scan_finds_citations():
    assert len({(name, anchor) for name, anchor, _ in citations()}) > 50


@pytest.mark.parametrize("name, anchor, source", citations())
def test_citation_resolves(name, anchor, source):
    spec = ROOT / "specs" / name
    assert spec.exists(), f"{source} cites specs/{name}, which does not exist"
    if anchor:
        assert anchor in anchors(spec), f"{source} cites specs/{name}#{anchor}: no heading has that anchor"


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("conv2d", "conv2d"),
        ("`max_pool2d`", "max_pool2d"),
        ("Owner names", "owner-names"),
        ("State dict (torch)", "state-dict-torch"),
    ],
)
def test_github_anchor(heading, anchor):
    assert github_anchor(heading) == anchor
