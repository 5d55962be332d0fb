"""linecube.config: data.redux_dir by the SDSS conventions."""

import pytest

from linecube.config import ConfigError, resolve_redux_dir, validate_config


def cfg(redux, drpver="v3_1_1"):
    return validate_config({"data": {"redux_dir": redux, "drpver": drpver}})


def test_null_redux_dir_takes_manga_spectro_redux_then_sas_base_dir():
    env = {"MANGA_SPECTRO_REDUX": "/sas/redux", "SAS_BASE_DIR": "/sas"}
    assert resolve_redux_dir(cfg(None), env)["data"]["redux_dir"] == "/sas/redux"
    assert resolve_redux_dir(cfg(None), {"SAS_BASE_DIR": "/sas/"})["data"]["redux_dir"] == "/sas/dr17/manga/spectro/redux"
    assert resolve_redux_dir(cfg(None, "v2_4_3"), {"SAS_BASE_DIR": "/s"})["data"]["redux_dir"] == "/s/dr15/manga/spectro/redux"
    with pytest.raises(ConfigError, match=r"neither \$MANGA_SPECTRO_REDUX nor \$SAS_BASE_DIR"):
        resolve_redux_dir(cfg(None), {})
    with pytest.raises(ConfigError, match="v9_9_9"):
        resolve_redux_dir(cfg(None, "v9_9_9"), {"SAS_BASE_DIR": "/s"})


def test_explicit_redux_dir_wins_and_expands_variables():
    env = {"MANGA_SPECTRO_REDUX": "/sas/redux", "SCRATCH": "/scratch/me"}
    assert resolve_redux_dir(cfg("/data/redux"), env)["data"]["redux_dir"] == "/data/redux"
    assert resolve_redux_dir(cfg("$SCRATCH/redux"), env)["data"]["redux_dir"] == "/scratch/me/redux"
    assert resolve_redux_dir(cfg("${SCRATCH}/r"), env)["data"]["redux_dir"] == "/scratch/me/r"
    with pytest.raises(ConfigError, match=r"\$NOPE/redux: an environment variable in it is not set"):
        resolve_redux_dir(cfg("$NOPE/redux"), env)


def test_config_readme_tables_are_generated_from_the_schema():
    """Every schema key has a description, and config/README.md's key tables are
    exactly what the schema generates (python -m linecube.config --tables)."""
    from pathlib import Path

    import yaml

    from linecube.config import TABLES_BEGIN, TABLES_END, key_tables, schema_path

    repo = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load(schema_path().read_text())
    for name, sub in schema["properties"].items():
        assert sub.get("description") or sub.get("type") == "object", name
        for key, spec in sub.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{key} has no description"
    text = (repo / "config" / "README.md").read_text()
    block = text.split(TABLES_BEGIN, 1)[1].split(TABLES_END, 1)[0]
    want = key_tables(bundled=yaml.safe_load((repo / "config" / "config.yaml").read_text()))
    assert block == "\n" + want, (
        "config/README.md is out of step with the schema: run python -m linecube.config --tables config/README.md"
    )
    assert "| `ml_env` | `cpu` |" in want and "(`true` in config.yaml)" in want
