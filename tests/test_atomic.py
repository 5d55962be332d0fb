"""linecube.io.atomic: outputs appear whole or not at all."""

import pytest

from linecube.io import atomic as F


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with F.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with F.atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_atomic_path_removes_what_a_killed_write_left(tmp_path):
    # SIGKILL skips the clean-up: the temporary stays until the next write of the same file
    stale = tmp_path / ".8116.h5.ab_cd123.tmp"
    stale.write_text("half")
    other = tmp_path / ".8116.h5.rejects.csv.ab_cd123.tmp"  # another target's: kept
    other.write_text("x")
    with F.atomic_path(tmp_path / "8116.h5") as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["8116.h5", other.name])
