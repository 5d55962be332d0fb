"""The package's layers (pyproject.toml [tool.importlinter]) hold, and they are its
folders: interfaces (cli, run) -> report -> analysis -> model -> data (simulate
beside it) -> config, runlog, physics -> io; no module imports one above its layer."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_layers_contract_is_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    p = subprocess.run([str(exe)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "1 kept, 0 broken" in p.stdout


def test_the_contract_covers_every_module():
    """exhaustive = true: a new module must be placed in a layer; every layer below
    the interfaces is a subpackage (a folder), not a flat module."""
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    assert cfg["type"] == "layers" and cfg["exhaustive"] is True
    placed = {m.strip() for layer in cfg["layers"] for m in layer.split(":")}
    pkg = REPO / "src" / "linecube"
    folders = {p.parent.name for p in pkg.glob("*/__init__.py")}
    top = {p.stem for p in pkg.glob("*.py") if p.stem != "__init__"} | folders
    assert top == placed, top ^ placed
    assert {"io", "physics", "data", "model", "analysis", "report", "simulate"} <= folders
    assert top - folders == {"cli", "run", "config", "runlog"}, "flat modules are only the interfaces and the settings"


def test_no_module_over_450_lines():
    """A maintainer reads one concept per module: none is over 450 lines."""
    long = {p.relative_to(REPO).as_posix(): n for p in (REPO / "src" / "linecube").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}  # fmt: skip
    assert not long, long
