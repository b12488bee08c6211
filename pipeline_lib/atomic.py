"""Atomic writes: a killed job never leaves a half-written artifact that a rerun would trust."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_siblings(path: Path) -> list[Path]:
    """Remove the ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` leftovers of ``path`` whose process is gone (a
    killed job's half-written temporary). Returns what was removed. Snakemake never runs two jobs writing one
    output at once, so a leftover of a dead process belongs to no one."""
    removed = []
    for p in path.parent.glob(f".{path.name}.*-*"):
        kind, _, pid = p.name[len(path.name) + 2:].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            _remove_quietly(p)
            removed.append(p)
    if removed:
        log.info("removed leftovers of killed jobs: %s", ", ".join(str(p) for p in removed))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path`` (file or directory).

    On any exception the temporary is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    tmp = _tmp_sibling(path)
    _remove(tmp)
    try:
        yield tmp
        if path.exists() and path.is_dir() and tmp.is_dir():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        # never raise from here: an interrupt or error of the block must reach the caller as itself (a writer
        # thread still filling the temporary can make rmtree fail with "Directory not empty")
        _remove_quietly(tmp)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _remove_quietly(p: Path, attempts: int = 3) -> None:
    for _ in range(attempts):
        try:
            _remove(p)
            return
        except OSError:
            continue
    if p.exists():
        log.warning("could not remove the temporary %s; the next write of its artifact removes it", p)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)

