"""Workflow hygiene: snakemake --lint, snakefmt --check, ruff, and every rule's
log, benchmark, conda env and params."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    p = BIN / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed")
    return found


def test_snakemake_lint_is_clean():
    p = subprocess.run([tool("snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "Congratulations, your workflow is in a good condition!" in p.stdout + p.stderr, p.stdout + p.stderr


def test_snakefmt_check():
    p = subprocess.run(
        [tool("snakefmt"), "--check", "Snakefile", "workflow"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff():
    p = subprocess.run(
        [tool("ruff"), "check", "src", "tests", "scripts", "benchmarks"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_rule_has_log_benchmark_conda_and_a_thin_script():
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    blocks = re.split(r"\n(?=\s*(?:rule|checkpoint) \w+:)", text)
    rules = [b for b in blocks if re.match(r"\s*(rule|checkpoint) \w+:", b)]
    assert len(rules) >= 12
    for b in rules:
        name = re.match(r"\s*(?:rule|checkpoint) (\w+):", b).group(1)
        for directive in ("log:", "benchmark:", "conda:", "script:"):
            assert directive in b, f"rule {name} has no {directive}"
        script = re.search(r'script:\s*\n\s*"([^"]+)"', b).group(1)
        path = (REPO / "workflow" / "rules" / script).resolve()
        assert path.exists() and path.parent.name == "scripts", name
        assert "config[" not in path.read_text(), f"{path.name} reads config behind Snakemake's back"
        assert len(path.read_text().splitlines()) < 60, f"{path.name} is not thin"
