"""linecube.runlog: a rule script's output, C-level too, and its traceback go to its
log (run in a fresh process, as Snakemake runs a script)."""

import subprocess
import sys

CODE = """
import os, sys
from linecube.runlog import rule_log
path = sys.argv[1]
with rule_log(path) as log:
    log.info("extracted %d", 3)
    print("from python")
    os.write(2, b"from C\\n")
with rule_log(path):
    1 / 0
"""


def test_everything_a_job_prints_lands_in_its_log(tmp_path):
    path = tmp_path / "logs" / "job.log"
    p = subprocess.run([sys.executable, "-c", CODE, str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0  # the failure still fails the job
    text = path.read_text()
    for needle in ("INFO extracted 3", "from python", "from C", "ZeroDivisionError", "Traceback"):
        assert needle in text, needle
    assert "from python" not in p.stdout and "from C" not in p.stderr
