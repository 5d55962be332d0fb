"""config/README.md's key tables, generated from the schema (linecube's
``config.schema.yaml``): one table per section (key | default | meaning).

    python docs/tools/config_tables.py --tables config/README.md
"""

from __future__ import annotations

from pathlib import Path

import yaml

from linecube.config import ConfigError, _schema, schema_path

TABLES_BEGIN = (
    "<!-- key tables: generated from workflow/schemas/config.schema.yaml by "
    "`python docs/tools/config_tables.py --tables config/README.md`; edit the schema, not these -->"
)
TABLES_END = "<!-- end of the generated key tables -->"


def _fmt(value) -> str:
    """A default as YAML writes it, in backticks."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return f"`{text.removesuffix('...').strip()}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def key_tables(schema: dict | None = None, bundled: dict | None = None) -> str:
    """Markdown: one table (key | default | meaning) per section of the schema,
    then the top-level keys; where ``bundled`` (config/config.yaml) sets another
    value, the default cell says so."""
    schema = _schema() if schema is None else schema
    bundled = bundled or {}
    out: list[str] = []
    top: list[str] = []
    for name, sub in schema["properties"].items():
        if sub.get("type") == "object" and "properties" in sub:
            out += [f"## {name}", "| key | default | meaning |", "|---|---|---|"]
            here = bundled.get(name) or {}
            for key, spec in sub["properties"].items():
                out.append(_row(key, spec, here))
            if sub.get("description"):
                out += ["", _cell(sub["description"])]
            out.append("")
        else:
            top.append(_row(name, sub, bundled))
    if top:
        out += ["## top level", "| key | default | meaning |", "|---|---|---|", *top, ""]
    return "\n".join(out).rstrip() + "\n"


def _row(key: str, spec: dict, bundled: dict) -> str:
    if "description" not in spec:
        raise ConfigError(f"schema: {key} has no description")
    default = _fmt(spec.get("default"))
    if key in bundled and bundled[key] != spec.get("default"):
        default += f" ({_fmt(bundled[key])} in config.yaml)"
    return f"| `{key}` | {default} | {_cell(spec['description'])} |"


def render_readme(text: str, tables: str) -> str:
    """``text`` with the block between the markers replaced by ``tables``."""
    if TABLES_BEGIN not in text or TABLES_END not in text:
        raise ConfigError("config/README.md: the generated-tables markers are missing")
    head, rest = text.split(TABLES_BEGIN, 1)
    _, tail = rest.split(TABLES_END, 1)
    return f"{head}{TABLES_BEGIN}\n{tables}{TABLES_END}{tail}"


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python docs/tools/config_tables.py", description="config/README.md's key tables from the schema"
    )
    ap.add_argument("--tables", metavar="README", required=True, help="the README whose generated block to rewrite")
    ap.add_argument("--bundled", default="config/config.yaml", help="the bundled config whose values the tables note")
    args = ap.parse_args(argv)
    bundled = yaml.safe_load(Path(args.bundled).read_text()) or {}
    readme = Path(args.tables)
    readme.write_text(render_readme(readme.read_text(), key_tables(bundled=bundled)))
    print(f"{readme}: key tables rewritten from {schema_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
