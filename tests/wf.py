"""Run the real Snakefile in a scratch copy of the workflow (as a user's clone)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COPY = ("Snakefile", "workflow", "config", "resources", "scripts", "envs", "profiles")


def snakemake_bin() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else "snakemake"


def make_workdir(dest: Path, config: dict) -> Path:
    """Copy the workflow into ``dest`` and write ``dest/test-config.yaml``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest / name)
    (dest / "test-config.yaml").write_text(yaml.safe_dump(config))
    return dest


def run(
    workdir: Path, *args: str, check: bool = True, timeout: int = 900, configfile: str = "test-config.yaml"
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    cmd = [snakemake_bin(), *args, "--cores", "2", "--configfile", configfile]
    p = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        logs = ""
        for f in sorted((workdir / "logs").rglob("*.log")) if (workdir / "logs").exists() else []:
            logs += f"\n--- {f}\n" + f.read_text()[-3000:]
        raise AssertionError(f"snakemake {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}{logs}")
    return p


def write_config(workdir: Path, name: str, config: dict) -> str:
    (workdir / name).write_text(yaml.safe_dump(config))
    return name


def planned_jobs(workdir: Path, *targets: str, configfile: str = "test-config.yaml") -> dict[str, int]:
    """Jobs a dry run would execute, by rule (the 'Job stats' table)."""
    p = run(workdir, "-n", "--quiet", "rules", *targets, configfile=configfile)
    if "Nothing to be done" in p.stdout + p.stderr:
        return {}
    counts: dict[str, int] = {}
    started = False
    for line in (p.stdout + p.stderr).splitlines():
        parts = line.split()
        if line.startswith("job") and "count" in line:
            started = True
            continue
        if started and len(parts) == 2 and parts[1].isdigit() and not line.startswith("-"):
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


_RULES_PY = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    w = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])]),
                     snakefile=Path("Snakefile"), workdir=Path("."))._workflow
    out = {r.name: {"local": r.name in w._localrules, "retries": r._restart_times,
                    "protected": [str(f) for f in r.output if getattr(f, "is_protected", False) or f.flags.get("protected")]}
           for r in w.rules}
print("RULES" + json.dumps(out))
"""


def rule_properties(workdir: Path, configfile: str = "test-config.yaml") -> dict:
    """Each rule of the workflow as Snakemake parsed it: a localrule?, its own retries
    (None = the --retries default), protected outputs."""
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run(
        [sys.executable, "-c", _RULES_PY, configfile], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RULES")]
    assert line, p.stdout[-2000:] + p.stderr[-3000:]
    return json.loads(line[0][5:])
