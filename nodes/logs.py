"""The node's log: one line per event a user cares about, on stderr and in WORKDIR/node.log.

Third-party libraries (the GGUF writer, hivemind, transformers, ...) speak at WARNING and above
only: their INFO lines named temp files nobody needs. Repeating conditions (a trainer that does
not answer, one that is not taking chunks) are logged once per period with a count, not twenty
times a second.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
import time
from pathlib import Path

from nodes.disk import is_full

FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"
QUIET = ("gguf", "hivemind", "transformers", "peft", "torch", "urllib3", "httpx", "filelock", "huggingface_hub",
         "asyncio")
LOG_BYTES, LOG_BACKUPS = 10 * 1024 * 1024, 3


def setup_logging() -> None:
    os.environ.setdefault("HIVEMIND_LOGLEVEL", "ERROR")
    logging.basicConfig(level=logging.INFO, format=FORMAT, datefmt=DATEFMT, stream=sys.stderr)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def log_to_workdir(workdir: Path) -> Path:
    """Also write the log to WORKDIR/node.log (rotated at 10 MiB, 3 old files kept)."""
    path = Path(workdir) / "node.log"
    handler = WorkdirLog(path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    logging.getLogger().addHandler(handler)
    return path


class WorkdirLog(logging.handlers.RotatingFileHandler):
    """node.log, where a line the full disk refuses is counted (`lost`), not a traceback on stderr:
    the node goes on (nodes.disk), and its lines reach the file again once there is space."""

    lost = 0

    def handleError(self, record: logging.LogRecord) -> None:
        if is_full(sys.exc_info()[1]):
            self.lost += 1
        else:
            super().handleError(record)


def lines_lost() -> int:
    """node.log lines a full disk refused so far (for status.json's `disk.skipped`)."""
    return sum(h.lost for h in logging.getLogger().handlers if isinstance(h, WorkdirLog))


class Throttled:
    """Log a repeating condition at most once per `period_s` per key, saying how often it recurred."""

    def __init__(self, logger: logging.Logger, period_s: float = 10.0):
        self.logger, self.period_s = logger, period_s
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def info(self, key: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (-self.period_s, 0))
            if now - last < self.period_s:
                self._last[key] = (last, suppressed + 1)
                return
            self._last[key] = (now, 0)
        if suppressed:
            message += f" (and {suppressed} more time(s) in the last {now - last:.0f}s)"
        self.logger.info(message, *args)
