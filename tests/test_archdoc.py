"""docs/tools/archdoc.py: docs/architecture.md and docs/layout.md are generated from the code, and the package has no import cycles."""

import importlib.util
from pathlib import Path


def _tool(name: str):
    """A generator of docs/tools/ (they work in a checkout only: not in the package)."""
    path = Path(__file__).resolve().parents[1] / "docs" / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_tools_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_architecture_doc_in_sync():
    """docs/architecture.md is generated from the code (python docs/tools/archdoc.py)."""
    render = _tool("archdoc").render

    doc = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
    assert doc.read_text() == render(), "docs/architecture.md is stale: run python docs/tools/archdoc.py"


def test_layout_doc_in_sync_and_no_import_cycles():
    """docs/layout.md maps every module to what it holds and the rules that use it
    (python docs/tools/archdoc.py); the package's import graph has no cycle."""
    archdoc = _tool("archdoc")

    doc = Path(__file__).resolve().parents[1] / "docs" / "layout.md"
    text = archdoc.render_layout()
    assert doc.read_text() == text, "docs/layout.md is stale: run python docs/tools/archdoc.py"
    mods = archdoc._modules()
    for m, p in mods.items():
        assert f"| `{p.relative_to(archdoc.REPO / 'src' / 'linecube').as_posix()}` |" in text, m
    assert "| `data/extract.py` | Cut a MaNGA LOGCUBE" in text and "extract_plate" in text
    # cycles: depth-first search over module -> imported modules
    deps = archdoc.import_graph()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in deps[m]:
            if state.get(d) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path, m, d])}")
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in mods:
        if m not in state:
            visit(m, [])
