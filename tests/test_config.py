"""linecube.config: data.redux_dir by the SDSS conventions."""

from pathlib import Path

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
    exactly what the schema generates (python docs/tools/config_tables.py --tables)."""
    from pathlib import Path

    import yaml
    from test_archdoc import _tool

    from linecube.config import schema_path

    tools = _tool("config_tables")
    TABLES_BEGIN, TABLES_END, key_tables = tools.TABLES_BEGIN, tools.TABLES_END, tools.key_tables

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
        "config/README.md is out of step with the schema: run python docs/tools/config_tables.py --tables config/README.md"
    )
    assert "| `ml_env` | `cpu` |" in want and "(`true` in config.yaml)" in want


def test_config_wrong_type_and_unknown_key():
    from linecube.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"train.epochs: 'ten' is not of type 'integer'"):
        validate_config({"data": {}, "train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"extract.*'windowbins' was unexpected"):
        validate_config({"data": {}, "extract": {"windowbins": 10}})
    with pytest.raises(ConfigError, match=r"sample.plateifus.0"):
        validate_config({"data": {}, "sample": {"plateifus": ["../etc-1901"]}})


def test_real_data_override_never_reads_the_simulated_catalogues():
    from pathlib import Path

    from linecube.config import load_config, resolve_catalogues

    repo = Path(__file__).resolve().parents[1]
    bundled = resolve_catalogues(load_config(repo / "config" / "config.yaml"))
    assert bundled["data"]["agn_catalog"] == "results/sample/redux/agn.csv"
    assert bundled["data"]["truth"] == "results/sample/redux/truth.csv"
    # a user's override that only points at real data and switches the simulator off
    real = resolve_catalogues(
        load_config(
            repo / "config" / "config.yaml", overrides={"data": {"redux_dir": "/data/redux"}, "simulate": {"enabled": False}}
        )
    )
    assert real["data"]["agn_catalog"] is None and real["data"]["truth"] is None
    asked = resolve_catalogues(
        load_config(
            repo / "config" / "config.yaml",
            overrides={"simulate": {"enabled": False}, "data": {"agn_catalog": "my/agn.fits", "truth": "sim/truth.csv"}},
        )
    )
    assert asked["data"]["agn_catalog"] == "my/agn.fits" and asked["data"]["truth"] == "sim/truth.csv"
    dr17 = resolve_catalogues(load_config(repo / "config" / "config.yaml", repo / "config" / "manga-dr17.yaml"))
    assert dr17["data"]["agn_catalog"] is None and dr17["model"]["flux_scaling"] == "halpha"


def test_config_numbers_from_the_command_line_and_start_up_checks():
    from linecube.config import ConfigError, validate_config

    # snakemake --config 'train={epochs: 5}' passes nested values as text
    c = validate_config({"data": {}, "train": {"epochs": "5", "clipnorm": "null"}, "model": {"filters": "[4, 8]"}})
    assert c["train"]["epochs"] == 5 and c["train"]["clipnorm"] is None and c["model"]["filters"] == [4, 8]
    with pytest.raises(ConfigError, match=r"model.strides: has 2 entries but model.filters has 3"):
        validate_config({"data": {}, "model": {"architecture": "stack", "filters": [4, 8, 16]}})


def test_start_up_checks_name_the_file_and_problem(tmp_path):
    from linecube.config import check_inputs, resolve_catalogues, validate_config

    truth = tmp_path / "truth.csv"
    truth.write_text("plateifu,class\n8000-1901,seyfert\n")
    agn = tmp_path / "agn.csv"
    agn.write_text("plateifu,radio_agn,wise_agn\n8000-1901,true,N/A\n8000-1902,false,false\n")
    cfg = resolve_catalogues(
        validate_config(
            {
                "data": {"lines": str(tmp_path / "nolines.csv"), "truth": str(truth), "agn_catalog": str(agn)},
                "simulate": {"enabled": False},
            }
        )
    )
    errs = "\n".join(check_inputs(cfg))
    assert "nolines.csv" in errs
    assert f"{truth}: missing column(s) is_anomaly" in errs
    assert f"{agn}: column wise_agn must be true/false" in errs and "row 2 ('N/A')" in errs
    ok = resolve_catalogues(validate_config({"data": {}, "simulate": {"enabled": True}}))  # the simulator writes them
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    ok["data"]["lines"] = str(repo / "resources" / "emission_lines.csv")
    assert check_inputs(ok) == []


def test_config_that_would_fail_hours_later_is_refused_at_start_up(tmp_path):
    """NaN / infinite numbers, min_dist above UMAP's spread, a model named twice,
    a line list without H-alpha under halpha scaling or with bad rows, an AGN
    catalogue without a flag column: refused before the first job, naming the key or file."""
    from linecube.config import ConfigError, check_inputs, resolve_catalogues, validate_config

    for over, needle in (
        ({"train": {"learning_rate": float("nan")}}, "train.learning_rate: nan is not a finite number"),
        ({"train": {"clipnorm": float("inf")}}, "train.clipnorm: inf is not a finite number"),
        ({"embed": {"umap_min_dist": 1.5}}, "embed.umap_min_dist"),
        ({"models": ["ae", "ae"]}, "models"),
    ):
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
            validate_config({"data": {}, **over})
    repo_lines = (Path(__file__).resolve().parents[1] / "resources" / "emission_lines.csv").read_text().splitlines()
    cases = {
        "noha.csv": [repo_lines[0]] + [r for r in repo_lines[1:] if not r.startswith("Halpha,")],
        "nan.csv": [repo_lines[0], "Hbeta,nan", "Halpha,6564.6"],
        "neg.csv": [repo_lines[0], "Hbeta,-4862.7", "Halpha,6564.6"],
        "dup.csv": [repo_lines[0], "Halpha,6564.6", "Halpha,6564.6"],
    }
    agn = tmp_path / "agn.csv"
    agn.write_text("plateifu,comment\n8000-1901,bright\n")
    for name, rows in cases.items():
        (tmp_path / name).write_text("\n".join(rows) + "\n")
        cfg = resolve_catalogues(validate_config({"data": {"lines": str(tmp_path / name), "agn_catalog": str(agn)},
                                                  "simulate": {"enabled": False}}))  # fmt: skip
        errs = "\n".join(check_inputs(cfg))
        assert f"data.lines: {tmp_path / name}" in errs, (name, errs)
        assert f"{agn}: no boolean selection columns" in errs
    assert "no Halpha line" in "\n".join(check_inputs(resolve_catalogues(validate_config(
        {"data": {"lines": str(tmp_path / "noha.csv")}, "simulate": {"enabled": False}}))))  # fmt: skip


def test_code_defaults_are_the_schemas():
    """Defaults live in the schema: the layout dataclass (whose fields every
    window_bins/crop default refers to) matches it, and the config dataclasses have none."""
    import dataclasses

    from linecube.config import defaults
    from linecube.data.dataset import AugmentConfig
    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import CubeLayout, load_lines
    from linecube.model.spec import ModelConfig

    ext = defaults("extract")
    assert (CubeLayout.window_bins, CubeLayout.crop) == (ext["window_bins"], ext["crop"])
    assert CubeLayout.n_lines == len(load_lines())
    for cls in (ModelConfig, AugmentConfig, FluxScaler):
        with_default = [f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING]
        assert not with_default, f"{cls.__name__} repeats defaults of the schema: {with_default}"
    m = ModelConfig.from_config({})
    for k, v in defaults("model").items():
        if hasattr(m, k) and k not in ("filters", "strides"):
            assert getattr(m, k) == v, k


def test_bundled_config_holds_only_what_the_bundled_sample_changes():
    """config/config.yaml repeats no schema default (the schema is the one place
    defaults live): every key it sets differs from the default, and the layered
    configs name only keys the schema knows."""
    from pathlib import Path

    import yaml

    from linecube.config import validate_config

    repo = Path(__file__).resolve().parents[1]
    defaults = validate_config({"data": {}})
    for name in ("config.yaml", "paper.yaml", "manga-dr17.yaml"):
        cfg = yaml.safe_load((repo / "config" / name).read_text()) or {}
        for sec, vals in cfg.items():
            assert sec in defaults, f"{name}: unknown section {sec}"
            if name != "config.yaml" or not isinstance(vals, dict):
                continue
            for k, v in vals.items():
                assert defaults[sec][k] != v, f"config/config.yaml repeats the default of {sec}.{k} ({v!r})"
