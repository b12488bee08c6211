"""Atomic writes: leftovers of killed jobs are cleared, and a failing cleanup never hides the real error."""

import os
import subprocess
import sys

import pytest

from pipeline_lib import atomic
from pipeline_lib.atomic import atomic_path, remove_stale_siblings, write_text


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "features.zarr"
    stale = tmp_path / f".features.zarr.tmp-{dead_pid()}"
    (stale / "block04").mkdir(parents=True)
    (stale / "block04" / "c0").write_bytes(b"half")
    old = tmp_path / f".features.zarr.old-{dead_pid()}"
    old.write_text("x")
    mine = tmp_path / f".features.zarr.tmp-{os.getppid()}"  # a live process (this test's parent)
    mine.mkdir()
    other = tmp_path / ".features.zarr.tmp-notapid"
    other.mkdir()
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "ok").write_text("done")
    assert (target / "ok").read_text() == "done"
    assert not stale.exists() and not old.exists()
    assert mine.exists() and other.exists()  # a live writer's temporary, and names that are not ours
    assert remove_stale_siblings(target) == []


def test_an_interrupt_reaches_the_caller_even_when_cleanup_fails(tmp_path, monkeypatch):
    """Ctrl-C while a writer thread still fills the temporary: rmtree fails with "Directory not empty"; the
    caller must see the KeyboardInterrupt, not that OSError, and the target stays untouched."""
    target = tmp_path / "out.txt"
    write_text(target, "before")

    def busy(p):
        raise OSError(39, "Directory not empty", str(p))

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            monkeypatch.setattr(atomic, "_remove", busy)
            raise KeyboardInterrupt
    assert target.read_text() == "before"
    assert list(tmp_path.glob(".out.txt.tmp-*"))  # the temporary could not be removed
    monkeypatch.undo()
    write_text(target, "after")  # the next write of the artifact clears the leftover of that attempt
    assert target.read_text() == "after" and not list(tmp_path.glob(".out.txt.*"))
