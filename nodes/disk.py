"""A full workdir pauses what needs the disk; the node stays up and resumes by itself.

Writes the run cannot do without (a spooled chunk, a fetched adapter version, the trainer's
checkpoint and published version) wait while the disk is full: the worker keeps what it could not
write in memory and retries with a backoff, and the node's state says `paused: disk full (<what>)`
until the write goes through. One log line when the node pauses, one when it resumes (that one
repeats where and since when: node.log itself may not have taken the first). Writes that only
report (metrics.jsonl, status.json, node.log) are skipped while the disk is full, and counted.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path

log = logging.getLogger("echo_swarm.node")
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
BACKOFF_S = (0.5, 5.0)
"""First and longest wait between retries of a write the full disk refused."""


def is_full(error: BaseException | None) -> bool:
    """A write refused for lack of space (or quota): wait for space, nothing is wrong with the data."""
    return isinstance(error, OSError) and error.errno in FULL_ERRNOS


def append_whole(path: Path, data: bytes) -> None:
    """Append all of `data` or none of it: a failed append is cut back off, so the next line does
    not run into a torn one."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            os.ftruncate(fd, size)  # shrinking needs no space
            raise
    finally:
        os.close(fd)


class Disk:
    """The node's workdir: which work waits on it for space, and which report writes it skipped."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.waiting: dict[str, str] = {}
        """What waits (spool, adapters, publish, ...) -> the path its write failed on, oldest first."""
        self.skipped: Counter[str] = Counter()
        """Report writes lost to a full disk, by file name."""
        self._since = 0.0
        self._retries = 0  # since the pause began: the backoff grows with them
        self._lock = threading.Lock()

    @property
    def paused(self) -> str | None:
        """'disk full (<what>)', naming the work that waits longest, or None."""
        with self._lock:
            return f"disk full ({next(iter(self.waiting))})" if self.waiting else None

    def full(self, what: str, path: Path | str, error: OSError) -> None:
        """`what` could not write `path` (`error` must be a full disk: anything else is re-raised).
        The caller keeps its data and tries again after `wait`."""
        if not is_full(error):
            raise error
        with self._lock:
            first = not self.waiting
            self.waiting.setdefault(what, str(path))
            self._retries += 1
            if first:
                self._since = time.monotonic()
        if first:
            log.warning("disk full: paused %s (writing %s: %s); resumes by itself once space is freed", what, path,
                        error.strerror)

    def ok(self, what: str) -> None:
        """`what` wrote again (or needs the disk no longer); the node resumes once nothing waits."""
        with self._lock:
            path = self.waiting.pop(what, None)
            resumed = path is not None and not self.waiting
            if resumed:
                self._retries = 0
        if resumed:
            log.info("disk space is back: resumed %s after %.0fs paused (disk full writing %s)", what,
                     time.monotonic() - self._since, path)

    def forget_waits(self) -> None:
        """The work that waited is gone (its worker stopped: the node changes roles); it no longer
        pauses the node."""
        with self._lock:
            self.waiting.clear()
            self._retries = 0

    def wait(self, stop: threading.Event) -> None:
        """The backoff before a waiting write tries again (returns early when `stop` is set)."""
        first, longest = BACKOFF_S
        stop.wait(min(longest, first * 2 ** max(0, self._retries - 1)))

    def skip(self, name: str, error: OSError) -> None:
        """A report write lost to a full disk: counted, not raised (anything else is re-raised)."""
        if not is_full(error):
            raise error
        with self._lock:
            self.skipped[name] += 1

    def summary(self, log_lines_lost: int = 0) -> dict:
        """For status.json (with the node.log lines the full disk refused, counted by the log)."""
        with self._lock:
            skipped = {**self.skipped, **({"node.log": log_lines_lost} if log_lines_lost else {})}
            return {"waiting": dict(self.waiting), "skipped": skipped}
