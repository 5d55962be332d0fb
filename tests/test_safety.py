"""Safety: models load in Keras safe mode, nothing unpickles or evals what it
reads, and wildcards match only digits (and the plate-IFU dash)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_a_model_with_arbitrary_code_is_refused(tmp_path):
    keras = pytest.importorskip("keras")
    from linecube.model.autoencoder import load_model

    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)  # code inside the file
    keras.Model(inp, out).save(tmp_path / "evil.keras")
    with pytest.raises(ValueError, match="(?i)lambda|safe"):
        load_model(tmp_path / "evil.keras")


def test_no_pickle_eval_or_exec_in_the_code():
    pattern = re.compile(r"\b(pickle|cloudpickle|dill|marshal)\b|(?<![\w.])eval\(|(?<![\w.])exec\(|allow_pickle\s*=\s*True")
    for p in list((REPO / "src").rglob("*.py")) + list((REPO / "scripts").glob("*.py")):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{p.relative_to(REPO)}:{i}: {line.strip()}"


def test_wildcard_constraints_only_digits():
    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    block = text[text.index("wildcard_constraints:") :].split("\n\n")[0]
    cons = dict(re.findall(r"(\w+)=r\"([^\"]+)\"", block))
    assert set(cons) >= {"plate", "ifudsgn", "model"}
    for good, key in (("8485", "plate"), ("12701", "ifudsgn"), ("ae", "model")):
        assert re.fullmatch(cons[key], good)
    for bad in ("84a5", "../8485", "8485/..", "8485-1901", ""):
        assert not re.fullmatch(cons["plate"], bad)
    assert not re.fullmatch(cons["ifudsgn"], "1901/../../x")


@pytest.mark.slow
def test_snakemake_refuses_a_non_numeric_plate_target(tmp_path):
    from fixtures import make_workdir, run

    wd = make_workdir(tmp_path / "wf", {"simulate": {"enabled": True, "n_galaxies": 14, "seed": 1}})
    p = run(wd, "-n", "results/extract/..%2Fetc.h5", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "MissingRuleException" in out or "No rule to produce" in out
