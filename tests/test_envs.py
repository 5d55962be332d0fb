"""envs/*.yaml pin exactly the versions of constraints.txt, which pyproject.toml's
ranges admit (conda channels are not reachable from the development machine, so
this is how the envs stay correct)."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def constraints() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[_norm(name)] = version
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> list[Requirement]:
    proj = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in [*proj["dependencies"], *(r for extra in proj["optional-dependencies"].values() for r in extra)]
    ]


def env_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    out = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for d in items:
            d = str(d)
            if d.startswith("-e"):
                continue
            m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*==?\s*([^\s]+)$", d)
            if m and m.group(1) not in ("python", "pip"):
                out[_norm(m.group(1))] = m.group(2)
    return out


def test_pyproject_has_ranges_that_admit_the_constraints():
    """Ranges, not pins, in pyproject (linecube installs beside other packages); each
    admits the version constraints.txt pins; Python 3.11 to 3.13."""
    pins = constraints()
    proj = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert proj["requires-python"] == ">=3.11"
    for req in pyproject_requirements():
        assert not any(sp.operator == "==" for sp in req.specifier), f"pyproject.toml: {req} is pinned"
        name = _norm(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name]), f"{req} does not admit constraints.txt's {pins[name]}"
    core = {"numpy", "astropy", "h5py", "keras", "tensorflow-cpu", "snakemake", "umap-learn", "pytest"}
    assert core <= set(pins), core - set(pins)


def test_every_env_pins_the_constraints_versions():
    pins = constraints()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {p.stem for p in envs} == {"data", "ml", "ml-gpu", "analysis"}
    for path in envs:
        env = env_pins(path)
        assert env, path
        for name, version in env.items():
            if name == "tensorflow":  # ml-gpu: tensorflow[and-cuda], the CPU build's version
                assert version == pins["tensorflow-cpu"], path.name
                continue
            assert name in pins, f"{path.name}: {name} is not in constraints.txt"
            assert version == pins[name], f"{path.name}: {name}=={version}, constraints.txt has {pins[name]}"
        base = {"numpy", "astropy", "h5py", "isal", "pandas"}
        assert base <= set(env), f"{path.name} lacks {base - set(env)}"
        text = path.read_text()
        assert "python>=3.11,<3.14" in text and "-e ${LINECUBE_ROOT}" in text
    assert "tensorflow" in env_pins(REPO / "envs" / "ml-gpu.yaml") and "tensorflow-cpu" not in env_pins(
        REPO / "envs" / "ml-gpu.yaml"
    )


def test_rules_use_their_family_env():
    import re as _re

    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for m in _re.finditer(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / m.group(1)).resolve().exists(), f"{smk.name}: {m.group(1)}"
    ml = (REPO / "workflow" / "rules" / "models.smk").read_text()
    assert "conda:\n        ML_ENV" in ml
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert '"cpu": "../../envs/ml.yaml", "gpu": "../../envs/ml-gpu.yaml"' in common


FAKE_CONDA = r"""#!{python}
# Stands in for conda: answers Snakemake's checks, and for `conda env create`
# does what conda does with the pip section (requirements file beside the env
# file, pip run from that folder), then records where pip would install from.
import json, os, sys, yaml
args = sys.argv[1:]
if args[:1] == ["--version"]:
    print("conda 25.5.1")
elif args[:2] == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": os.environ["FAKE_CONDA_PREFIX"], "platform": "linux-64"}}))
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:2] == ["env", "create"]:
    envfile = args[args.index("--file") + 1].strip('"')
    prefix = args[args.index("--prefix") + 1].strip('"')
    spec = yaml.safe_load(open(envfile))
    pip = [d for d in spec["dependencies"] if isinstance(d, dict)][0]["pip"]
    workdir = os.path.dirname(os.path.abspath(envfile))
    req = os.path.join(workdir, "condaenv.fake.requirements.txt")
    open(req, "w").write("\n".join(pip) + "\n")
    os.chdir(workdir)
    from pip._internal.network.session import PipSession
    from pip._internal.req.req_file import parse_requirements
    editable = [os.path.abspath(r.requirement) for r in parse_requirements(req, session=PipSession()) if r.is_editable]
    with open(os.environ["FAKE_CONDA_LOG"], "a") as fh:
        fh.write(json.dumps({{"env": spec["name"], "envfile": envfile, "editable": editable}}) + "\n")
    os.makedirs(os.path.join(prefix, "conda-meta"), exist_ok=True)
elif args[:1] == ["clean"]:
    pass
else:
    sys.exit("fake conda: unexpected " + " ".join(args))
"""


def test_sdm_conda_installs_linecube_from_this_checkout(tmp_path):
    """Snakemake's own env creation, up to the conda call: the pip line of every
    env resolves to the checkout (it has pyproject.toml), not .snakemake/."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from fixtures import make_workdir, snakemake_bin

    wd = make_workdir(tmp_path / "wf", {"simulate": {"enabled": True, "n_galaxies": 14}, "ml_env": "gpu"})
    shutil.copy2(REPO / "pyproject.toml", wd / "pyproject.toml")
    (wd / "src").mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "conda").write_text(FAKE_CONDA.format(python=sys.executable))
    (bindir / "conda").chmod(0o755)
    log = tmp_path / "conda.log"
    env = dict(
        os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_CONDA_LOG=str(log), FAKE_CONDA_PREFIX=str(tmp_path / "base")
    )
    env.pop("LINECUBE_ROOT", None)
    cmd = [snakemake_bin(), "--sdm", "conda", "--conda-create-envs-only", "--cores", "1", "--configfile", "test-config.yaml"]
    p = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    made = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert {m["env"] for m in made} >= {"linecube-data", "linecube-ml-gpu", "linecube-analysis"}, made
    for m in made:
        assert "/.snakemake/conda/" in m["envfile"]  # Snakemake's copy, as conda sees it
        assert m["editable"] == [str(wd.resolve())], m
        assert (Path(m["editable"][0]) / "pyproject.toml").exists()
