"""One run per scene work folder at a time: `with scene_lock(WORK / scene.key): ...`.

Two runs writing one scene's files at once (a notebook and the CLI, a run started twice) corrupt each
other's results: COLMAP's database reports "database is locked" and the scene is lost. The lock is
`fcntl.flock` on `WORK/<scene>/.lock`, so the kernel releases it when its holder exits, even when
killed: a stale lock file never blocks a later run. The file records who holds it (PID, host,
command line), which the refused run names in its message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
POLL_SECONDS = 0.2


class SceneLockedError(RuntimeError):
    """Another process holds a scene's work folder; the message names it and how to proceed."""


def holder(lock_path: Path) -> dict:
    """{"pid", "host", "command", "since"} of the process that took `lock_path` last ({} if unknown)."""
    try:
        return json.loads(Path(lock_path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(lock_path: Path) -> str:
    info = holder(lock_path)
    if not info:
        return "another process (it has not recorded itself yet)"
    return f"process {info.get('pid')} on {info.get('host')} since {info.get('since')} (command: {info.get('command')})"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _record(fd: int) -> None:
    """Write this process's identity into the lock file it now holds."""
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join(sys.orig_argv),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


@contextlib.contextmanager
def scene_lock(folder: Path, timeout: float | None = 0.0) -> Iterator[Path]:
    """Hold `folder`/.lock (creating `folder`) for the block; yields the lock file's path.

    `timeout`: seconds to wait for another holder to finish; 0 stops at once, None waits for ever.
    Raises SceneLockedError, naming the holder, when the lock is still held after `timeout`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, lock_path, timeout)
        _record(fd)
        try:
            yield lock_path
        finally:
            os.ftruncate(fd, 0)  # still held: no later holder's record is erased
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, lock_path: Path, timeout: float | None) -> None:
    """Take the lock on `fd`, polling until `timeout` seconds have passed (None: no limit)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = False
    while not _try_lock(fd):
        if deadline is not None and time.monotonic() >= deadline:
            raise SceneLockedError(
                f"{lock_path.parent}: in use by {_describe(lock_path)}. Wait for that run to finish, stop it "
                f"(kill {holder(lock_path).get('pid', 'PID')}), or give this run another work folder (--work); "
                f"the lock ({lock_path}) frees itself when its holder exits"
            )
        if not waiting:
            logger.info("%s: in use by %s; waiting", lock_path.parent, _describe(lock_path))
            waiting = True
        time.sleep(POLL_SECONDS)
