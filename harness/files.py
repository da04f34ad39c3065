"""Files the harness keeps (sweep state, tuner state, logs, checkpoints): written whole or not at
all, appended durably, read back with a torn tail repaired, and one driver per sweep folder."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class StateFileError(ValueError):
    """A state file cannot be read back (one line naming the file and the fix, for the CLI)."""


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data``: write a uniquely named temporary file beside it, fsync,
    then ``os.replace``, so a crash leaves the old file or the new one, never half of one, and
    two writers never share a temporary file."""
    raw = data if isinstance(data, bytes) else data.encode()
    write_atomic_via(path, lambda tmp: tmp.write_bytes(raw))


def write_atomic_via(path: Path, write: Callable[[Path], object]) -> None:
    """:func:`write_atomic` for a library that writes its own file (``write(tmp)`` writes the
    whole content to the path it is given, e.g. Ax's ``Client.save_to_json_file``): the same
    uniquely named temporary file beside ``path``, fsync, ``os.replace``; removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def append_line(path: Path, record: dict[str, Any], sync: bool = False) -> None:
    """Append one JSON record as a line, in one write that reaches the kernel before this returns
    (so a killed process loses nothing it appended); ``sync`` also fsyncs it to the disk (against
    a machine crash; it costs ~4 ms here, too much for every trial event of a fast sweep)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        if sync:
            os.fsync(f.fileno())


def repair_jsonl(path: Path) -> str | None:
    """Make ``path`` (one JSON document a line) readable again after a crash mid-append.

    A torn last line (no newline, or not JSON) is moved aside into ``PATH.torn-<time>`` and the
    complete lines are kept; returns one line saying so, or None when there was nothing to do.
    A bad line *before* the last cannot come from a torn append: that is refused in one line
    naming the file (nothing is changed), as silently dropping complete records would lose them.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw:
        return None
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: after the last newline ('' when none is torn)
    for i, line in enumerate(complete):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            if i < len(complete) - 1 or tail.strip():
                raise StateFileError(
                    f"{path}: line {i + 1} of {len(complete) + bool(tail)} is not a JSON record "
                    "(not a torn append); restore the file from a backup or start the sweep "
                    "under another --name") from None
            tail = line + (b"\n" + tail if tail else b"")  # the last line is the torn one
            complete = complete[:i]
            break
    if not tail.strip():
        return None
    try:
        json.loads(tail)
    except ValueError:
        pass
    else:  # a whole record whose newline was not written: keep it
        with open(path, "ab") as f:
            f.write(b"\n")
        return None
    backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
    backup.write_bytes(tail)
    write_atomic(path, b"".join(line + b"\n" for line in complete))
    return (f"{path.name}: its last record was cut short by a crash ({len(tail)} bytes); "
            f"moved it aside into {backup.name} and kept the {len(complete)} complete records")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log (after :func:`repair_jsonl`, every line parses)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class SweepLock:
    """One driver per sweep folder: an OS file lock (``fcntl.lockf``) on ``FOLDER/lock``, taken
    before the sweep's state is read and held while the process lives. The kernel frees it the
    moment the process dies, so a stale lock never blocks a resume; ``lockf`` locks are per
    process and not inherited by forked workers."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False (and the lock stays with its holder) when another process has it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the process that holds the lock (for the error line)."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
