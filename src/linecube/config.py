"""Configuration: YAML validated against ``workflow/schemas/config.schema.yaml``.

The workflow validates with ``snakemake.utils.validate`` (same schema, defaults
filled in); the command line and the tests use :func:`load_config`, which does
the same with jsonschema directly.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names the key."""


def schema_path() -> Path:
    return Path(str(resources.files("linecube") / "data" / "config.schema.yaml"))


def _validator_with_defaults():
    from jsonschema import Draft202012Validator, validators

    validate_props = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Fill defaults and validate; raise :class:`ConfigError` naming the key."""
    schema = yaml.safe_load(schema_path().read_text())
    cfg = copy.deepcopy(cfg) if cfg else {}
    cls = _validator_with_defaults()
    errors = sorted(cls(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        lines = []
        for e in errors:
            key = ".".join(str(p) for p in e.path) or "(top level)"
            lines.append(f"  {key}: {e.message}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    return cfg


def load_config(*paths: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Merge YAML files (later ones win, recursively), then validate."""
    merged: dict = {}
    for p in paths:
        with open(p) as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        merged = deep_merge(merged, data)
    if overrides:
        merged = deep_merge(merged, overrides)
    return validate_config(merged, source=", ".join(str(p) for p in paths) or "config")


def deep_merge(a: dict, b: dict) -> dict:
    """Recursive dict merge; values of ``b`` win."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
