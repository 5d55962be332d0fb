"""The docs state the current truth: the README is a reference page of at most 150
lines, and neither it nor the pages of results, benchmarks and decisions carries a
date or a commit hash (history lives in git)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/results.md", "docs/benchmarks.md", "docs/decisions.md"]


def test_readme_is_a_reference_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def test_no_dates_or_commit_hashes_in_the_current_state_pages():
    for page in PAGES:
        text = (REPO / page).read_text()
        dates = re.findall(r"\b20\d\d-\d\d-\d\d\b", text)
        hashes = re.findall(r"`[0-9a-f]{7,40}`", text)
        assert not dates and not hashes, f"{page}: {dates[:3]} {hashes[:3]}"
