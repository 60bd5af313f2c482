"""Append-only JSON-lines metrics, one file per node (read by `swarm simulate`)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, kind: str, **fields) -> None:
        line = json.dumps({"t": time.time(), "kind": kind, **fields}, separators=(",", ":"))
        with self._lock, open(self.path, "a") as f:
            f.write(line + "\n")
