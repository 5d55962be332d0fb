"""envs/*.yaml pin exactly the versions of pyproject.toml (conda channels are not
reachable from the development machine, so this is how the envs stay correct)."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pyproject_pins() -> dict[str, str]:
    proj = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"]) + [r for extra in proj["optional-dependencies"].values() for r in extra]
    pins = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;\s]+)$", r.strip())
        assert m, f"pyproject.toml: {r!r} is not pinned with =="
        name = m.group(1).lower()
        if name in pins:
            assert pins[name] == m.group(3), f"{name} pinned twice with different versions"
        pins[name] = m.group(3)
    return pins


def env_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    out = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for d in items:
            d = str(d)
            if d.startswith("-e"):
                continue
            m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==?\s*([^\s]+)$", d)
            if m and m.group(1) not in ("python", "pip"):
                out[m.group(1).lower()] = m.group(2)
    return out


def test_every_env_pins_the_pyproject_versions():
    pins = pyproject_pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {p.stem for p in envs} == {"data", "ml", "analysis"}
    for path in envs:
        env = env_pins(path)
        assert env, path
        for name, version in env.items():
            assert name in pins, f"{path.name}: {name} is not a dependency in pyproject.toml"
            assert version == pins[name], f"{path.name}: {name}=={version}, pyproject.toml has {pins[name]}"
        base = {n for n in pins if n in ("numpy", "astropy", "h5py", "isal", "pandas")}
        assert base <= set(env), f"{path.name} lacks {base - set(env)}"
        text = path.read_text()
        assert "python=3.11" in text and "-e ../" in text


def test_rules_use_their_family_env():
    import re as _re

    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for m in _re.finditer(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / m.group(1)).resolve().exists(), f"{smk.name}: {m.group(1)}"
    ml = (REPO / "workflow" / "rules" / "models.smk").read_text()
    assert "envs/ml.yaml" in ml
