"""One writer per run folder: a lock file inside the folder, held for as long as a run, portfolio or ensemble writes
it.

The lock is ``RunDir.lock`` (``<run>/.lock``), created with ``O_CREAT | O_EXCL`` and holding JSON
``{pid, host, started}`` for messages. Who holds it is decided by ``fcntl.flock`` on that file: the OS drops it
when the holder dies, however it dies, so a lock file left by a killed run is stale and taken over (with a
warning). The file lives inside the folder, not beside it, so that a run folder stays self-contained; writers that
clear the folder (``--overwrite``) keep the lock file (``RunDir.contents`` leaves it out) and take the lock before
they delete anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aisle.paths import require_writable
from aisle.rundir import RunDir

__all__ = ["FolderLocked", "hold_run_dir", "is_rank_zero"]

log = logging.getLogger(__name__)

_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth (a portfolio writes its ensemble too)


class FolderLocked(FileExistsError):
    """Another process is writing the folder."""


def is_rank_zero() -> bool:
    """False in the extra processes Lightning's DDP launcher starts (they re-run the same command): they belong to
    the writer that launched them and take no lock."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (ValueError, OSError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _pid_alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run (only a process on this host can be checked)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
        return True  # another host's lock (or one still being written) is respected
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user
    return True


def _locked_message(folder: Path, lock: Path, holder: dict[str, Any]) -> str:
    pid = holder.get("pid", "unknown")
    return (
        f"{folder} is being written by another process (pid {pid} on {holder.get('host', 'this host')}, "
        f"started {holder.get('started', 'just now')}); wait for it to finish, stop it (kill {pid}), or write "
        f"to another folder. If that process no longer runs, delete {lock}."
    )


def _same_file(lock: Path, fd: int) -> bool:
    """The path still names the file we locked (a releasing holder unlinks it before it unlocks)."""
    try:
        st, mine = os.stat(lock), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _open(lock: Path) -> tuple[int, bool] | None:
    """(fd, created) of the lock file, or None when it vanished between the two opens."""
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        pass
    try:
        return os.open(lock, os.O_RDWR), False
    except FileNotFoundError:
        return None


def _try_lock(fd: int, created: bool, folder: Path, lock: Path) -> None:
    """flock the file or raise :class:`FolderLocked`; without flock (some network filesystems) trust the pid."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderLocked(_locked_message(folder, lock, _read_holder(fd))) from None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        holder = _read_holder(fd)
        if not created and _pid_alive(holder):
            raise FolderLocked(_locked_message(folder, lock, holder)) from None


def _acquire(folder: Path, lock: Path) -> int:
    for _ in range(10):  # another writer may release (unlink) the file between our open and our flock
        opened = _open(lock)
        if opened is None:
            continue
        fd, created = opened
        try:
            _try_lock(fd, created, folder, lock)
        except BaseException:
            os.close(fd)
            raise
        if not _same_file(lock, fd):
            os.close(fd)
            continue
        old = _read_holder(fd)
        if not created and old:
            log.warning(
                "%s: taking over the stale lock of pid %s on %s (started %s): that process has ended",
                folder,
                old.get("pid"),
                old.get("host"),
                old.get("started"),
            )
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode(), 0)
        return fd
    raise FolderLocked(f"could not lock {folder}: other processes keep taking and releasing {lock}")


def _release(lock: Path, fd: int) -> None:
    try:
        lock.unlink()  # before unlocking: a process that opened the old file sees it is gone and starts over
    except OSError:
        pass  # gone already, or the folder turned read-only: a lock file nobody holds is taken over later
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)  # also for forked children (loader workers) that share the descriptor
        os.close(fd)


@contextmanager
def hold_run_dir(rd: RunDir) -> Iterator[RunDir]:
    """Be the one writer of a run folder while the block runs (the folder is made if it does not exist).

    Re-entrant within a process; a DDP rank other than 0 takes no lock (its launcher holds it).

    Raises:
        FolderLocked: another live process holds the folder's lock (the message names its pid and what to do).
        PermissionError: the folder cannot be written (the message names it).
    """
    if not is_rank_zero():
        yield rd
        return
    key = rd.lock.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield rd
        finally:
            _HELD[key] -= 1
        return
    require_writable(rd.root, "run folder")
    rd.root.mkdir(parents=True, exist_ok=True)
    fd = _acquire(rd.root, rd.lock)
    _HELD[key] = 1
    try:
        yield rd
    finally:
        del _HELD[key]
        _release(rd.lock, fd)
