"""Configuration: YAML validated against ``workflow/schemas/config.schema.yaml``.

The workflow (``workflow/rules/common.smk``), the command line and the tests all
validate with :func:`validate_config` (jsonschema, Draft 2020-12, defaults filled
in, every error listed with its key); :func:`load_config` merges YAML files first.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names the key."""


def schema_path() -> Path:
    return Path(str(resources.files("linecube") / "config.schema.yaml"))


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


def schema_enum(section: str, key: str) -> tuple[str, ...]:
    """The values the schema allows for ``section.key`` (its ``enum``)."""
    return tuple(_schema()["properties"][section]["properties"][key]["enum"])


def schema_bounds(section: str, key: str) -> tuple[float, float]:
    """(minimum, maximum) the schema allows for ``section.key`` (+-inf when open)."""
    spec = _schema()["properties"][section]["properties"][key]
    return spec.get("minimum", float("-inf")), spec.get("maximum", float("inf"))


def defaults(section: str) -> dict:
    """The schema's default of every key of one config section: the one source
    of defaults (code never repeats them)."""
    props = _schema()["properties"][section]["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def min_galaxies() -> int:
    """The smallest sample a run accepts (the schema's ``sample.max_galaxies``
    minimum, the smallest run the end-to-end test proves): select_sample refuses fewer."""
    return int(_schema()["properties"]["sample"]["properties"]["max_galaxies"]["minimum"])


def with_defaults(section: str, values: Mapping | None) -> dict:
    """``values`` (a possibly partial section, e.g. from a test or a benchmark)
    over the schema's defaults."""
    return {**defaults(section), **dict(values or {})}


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
    import math

    errs = []

    def walk(v, key):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{key}.{k}" if key else str(k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{key}[{i}]")
        elif isinstance(v, float) and not math.isfinite(v):
            errs.append(f"  {key}: {v} is not a finite number")

    walk(cfg, "")
    m = cfg.get("model", {})
    if m.get("architecture") == "stack" and "filters" in m and "strides" in m and len(m["filters"]) != len(m["strides"]):
        errs.append(
            f"  model.strides: has {len(m['strides'])} entries but model.filters has {len(m['filters'])}; "
            "give one stride per encoder block"
        )
    return errs


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Fill defaults and validate; raise :class:`ConfigError` naming the key."""
    schema = _schema()
    cfg = coerce_strings(copy.deepcopy(cfg) if cfg else {}, schema)
    cls = _validator_with_defaults()
    errors = sorted(cls(schema).iter_errors(cfg), key=lambda e: list(e.path))
    lines = [f"  {'.'.join(str(p) for p in e.path) or '(top level)'}: {e.message}" for e in errors]
    if not errors:
        lines += semantic_errors(cfg)
    if lines:
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (plain YAML lets
    the last one win silently)."""


def _strict_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def duplicate_keys(path: str | os.PathLike) -> str:
    """'' or a message naming a key given twice in the YAML file ``path``."""
    try:
        with open(path) as fh:
            yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as e:
        return f"{path}: {e.problem}; {str(e.problem_mark).strip()}"
    except (OSError, yaml.YAMLError):
        return ""  # unreadable files are reported where they are read
    return ""


def load_config(*paths: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Merge YAML files (later ones win, recursively), then validate."""
    merged: dict = {}
    for p in paths:
        with open(p) as fh:
            data = yaml.load(fh, Loader=_StrictLoader) or {}  # noqa: S506 - a SafeLoader subclass
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        merged = deep_merge(merged, data)
    if overrides:
        merged = deep_merge(merged, overrides)
    return validate_config(merged, source=", ".join(str(p) for p in paths) or "config")


#: SDSS data release of each DRP version, for ``$SAS_BASE_DIR/{release}/manga/spectro/redux``
DRP_RELEASES = {"v3_1_1": "dr17", "v2_4_3": "dr15"}


def resolve_redux_dir(cfg: dict, environ: Mapping[str, str] | None = None) -> dict:
    """Resolve ``data.redux_dir`` (in place; returns ``cfg``) by the SDSS
    conventions: null means ``$MANGA_SPECTRO_REDUX``, else
    ``$SAS_BASE_DIR/<release>/manga/spectro/redux`` for ``data.drpver``; a path
    may also name variables (``$SCRATCH/redux``). Raises :class:`ConfigError`
    naming what is missing."""
    env = os.environ if environ is None else environ
    data = cfg["data"]
    value = data.get("redux_dir")
    if value is None:
        if env.get("MANGA_SPECTRO_REDUX"):
            value = env["MANGA_SPECTRO_REDUX"]
        elif env.get("SAS_BASE_DIR"):
            release = DRP_RELEASES.get(data["drpver"])
            if release is None:
                raise ConfigError(
                    f"data.redux_dir is null and $SAS_BASE_DIR cannot say where DRP {data['drpver']} lives: "
                    "set $MANGA_SPECTRO_REDUX or data.redux_dir"
                )
            value = f"{env['SAS_BASE_DIR'].rstrip('/')}/{release}/manga/spectro/redux"
        else:
            raise ConfigError(
                "data.redux_dir is null and neither $MANGA_SPECTRO_REDUX nor $SAS_BASE_DIR is set: "
                "export one (the SDSS convention) or give data.redux_dir"
            )
    else:
        expanded = _expand(str(value), env)
        if "$" in expanded:
            raise ConfigError(f"data.redux_dir: {value}: an environment variable in it is not set")
        value = expanded
    data["redux_dir"] = value
    return cfg


def _expand(text: str, env: Mapping[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` from ``env``; unknown ones stay as they are."""
    from string import Template

    return Template(text).safe_substitute(env)


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
    from linecube.io.formats import load_lines

    data, errs = cfg["data"], []
    sim = bool(cfg.get("simulate", {}).get("enabled"))
    if sim:
        from linecube.io.manga import foreign_survey

        why = foreign_survey(data["redux_dir"], data["drpver"])
        if why:
            errs.append(f"simulate.enabled: {why}")
    own = {f"{data['redux_dir']}/{name}" for name in SIMULATED_FILES.values()} if sim else set()
    try:
        names = load_lines(data["lines"]).names
        if cfg.get("model", {}).get("flux_scaling") == "halpha" and "Halpha" not in names:
            errs.append(f"data.lines: {data['lines']}: has no Halpha line, which model.flux_scaling: halpha divides by")
    except Exception as e:  # noqa: BLE001 - any failure to read it is reported the same way
        msg = str(e)
        errs.append(f"data.lines: {msg if str(data['lines']) in msg else str(data['lines']) + ': ' + msg}")
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
        from linecube.io.agn import read_catalog

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
