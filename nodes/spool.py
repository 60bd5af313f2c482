"""A rollout's spool: signed chunks kept on disk while no trainer takes them.

Chunks are spooled signed but not sealed: they are sealed at send time to whoever trains then,
so nothing is lost across a trainer failover; whether a spooled chunk is still fresh enough is
the trainer's call. Bounded: when full, the oldest chunk goes first (once the new one is written:
a write the full disk refuses drops nothing).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("echo_swarm.rollout")
SPOOL_LIMIT = 64


class ChunkSpool:
    def __init__(self, directory: Path, limit: int = SPOOL_LIMIT):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.limit = limit

    def put(self, envelope: bytes) -> bool:
        """Keep a signed chunk (tmp-then-rename); True if the spool was full and dropped one.
        OSError (e.g. ENOSPC) when it could not be written: nothing kept, nothing dropped."""
        path = self.dir / f"{time.time_ns()}.chunk"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(envelope)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.rename(path)
        files = sorted(self.dir.glob("*.chunk"))
        dropped = files[: max(0, len(files) - self.limit)]  # never the new one: its name sorts last
        for old in dropped:
            old.unlink(missing_ok=True)
            log.warning("spool full: dropped the oldest chunk %s", old.name)
        return bool(dropped)

    def flush(self, send: Callable[[bytes], bool]) -> bool:
        """Send spooled chunks oldest first; stop at the first one not delivered. True if empty."""
        for path in sorted(self.dir.glob("*.chunk")):
            if not send(path.read_bytes()):
                return False
            path.unlink(missing_ok=True)
        return True
