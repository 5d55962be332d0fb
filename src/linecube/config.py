"""Configuration: YAML validated against ``workflow/schemas/config.schema.yaml``.

The workflow (``workflow/rules/common.smk``), the command line and the tests all
validate with :func:`validate_config` (jsonschema, Draft 2020-12, defaults filled
in, every error listed with its key); :func:`load_config` merges YAML files first.
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


def _types(sub: dict) -> set[str]:
    t = sub.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def coerce_strings(value, schema: dict):
    """Values that arrive as strings where the schema wants a number, an integer,
    a boolean, null or an array (Snakemake's ``--config key={a: 5}`` passes nested
    values as text) are parsed as YAML and kept when the result has a wanted type."""
    types = _types(schema)
    if isinstance(value, dict) and "properties" in schema:
        return {k: coerce_strings(v, schema["properties"].get(k, {})) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [coerce_strings(v, schema["items"]) for v in value]
    if isinstance(value, str) and types and "string" not in types:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        ok = {
            "integer": isinstance(parsed, int) and not isinstance(parsed, bool),
            "number": isinstance(parsed, int | float) and not isinstance(parsed, bool),
            "boolean": isinstance(parsed, bool),
            "null": parsed is None,
            "array": isinstance(parsed, list),
            "object": isinstance(parsed, dict),
        }
        if any(ok.get(t, False) for t in types):
            return coerce_strings(parsed, schema)
    return value


def semantic_errors(cfg: dict) -> list[str]:
    """Checks the schema cannot express (one line per problem, naming the keys)."""
    errs = []
    m = cfg.get("model", {})
    if "filters" in m and "strides" in m and len(m["filters"]) != len(m["strides"]):
        errs.append(
            f"  model.strides: has {len(m['strides'])} entries but model.filters has {len(m['filters'])}; "
            "give one stride per encoder block"
        )
    return errs


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Fill defaults and validate; raise :class:`ConfigError` naming the key."""
    schema = yaml.safe_load(schema_path().read_text())
    cfg = coerce_strings(copy.deepcopy(cfg) if cfg else {}, schema)
    cls = _validator_with_defaults()
    errors = sorted(cls(schema).iter_errors(cfg), key=lambda e: list(e.path))
    lines = [f"  {'.'.join(str(p) for p in e.path) or '(top level)'}: {e.message}" for e in errors]
    if not errors:
        lines += semantic_errors(cfg)
    if lines:
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


#: ``data.agn_catalog`` / ``data.truth`` value meaning "the simulated survey's file
#: when ``simulate.enabled``, none otherwise"
AUTO = "auto"
SIMULATED_FILES = {"agn_catalog": "agn.csv", "truth": "truth.csv"}


def resolve_catalogues(cfg: dict) -> dict:
    """Resolve ``auto`` in ``data.agn_catalog`` and ``data.truth`` (in place; returns
    ``cfg``): the simulator's ``{redux_dir}/agn.csv`` / ``truth.csv`` when
    ``simulate.enabled``, else None, so a real-data run never reads a simulated
    catalogue unless a path to it is given explicitly."""
    data = cfg["data"]
    sim = bool(cfg.get("simulate", {}).get("enabled"))
    for key, name in SIMULATED_FILES.items():
        if data.get(key) == AUTO:
            data[key] = f"{data['redux_dir']}/{name}" if sim else None
    return cfg


def check_inputs(cfg: dict) -> list[str]:
    """Problems with the input files a run will read (after :func:`resolve_catalogues`):
    the line list, an explicit truth table (``plateifu``, ``is_anomaly`` required;
    ``class`` and ``anomaly_type`` optional) and the AGN catalogue (key column,
    boolean flags). Files the workflow itself writes (the simulated survey's) are
    not checked. One line per problem, naming the file."""
    from .formats import load_lines

    data, errs = cfg["data"], []
    sim = bool(cfg.get("simulate", {}).get("enabled"))
    own = {f"{data['redux_dir']}/{name}" for name in SIMULATED_FILES.values()} if sim else set()
    try:
        load_lines(data["lines"])
    except Exception as e:  # noqa: BLE001 - any failure to read it is reported the same way
        errs.append(f"data.lines: {data['lines']}: {e}")
    truth = data.get("truth")
    if truth and truth not in own:
        import pandas as pd

        if not Path(truth).is_file():
            errs.append(f"data.truth: {truth}: file does not exist")
        else:
            try:
                t = pd.read_csv(truth, dtype=str, keep_default_na=False)
                missing = [c for c in ("plateifu", "is_anomaly") if c not in t]
                if missing:
                    errs.append(f"data.truth: {truth}: missing column(s) {', '.join(missing)} (plateifu, is_anomaly required)")
                elif not t["is_anomaly"].str.strip().str.lower().isin(["true", "false", "1", "0"]).all():
                    errs.append(f"data.truth: {truth}: is_anomaly must be true/false")
            except Exception as e:  # noqa: BLE001
                errs.append(f"data.truth: {truth}: not a readable CSV ({e})")
    agn = data.get("agn_catalog")
    if agn and agn not in own:
        from .agn import read_catalog

        try:
            read_catalog(agn)
        except Exception as e:  # noqa: BLE001
            msg = str(e)
            errs.append(f"data.agn_catalog: {msg if str(agn) in msg else f'{agn}: {msg}'}")
    return errs


def deep_merge(a: dict, b: dict) -> dict:
    """Recursive dict merge; values of ``b`` win."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
