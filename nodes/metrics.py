"""The metrics contract: typed events, one JSON line each in WORKDIR/metrics.jsonl.

Workers write these events; `swarm simulate`'s report reads them back through `read_event`,
which checks each line against the same classes, so the schema is declared once, here.

    kind        written by   when
    role        any node     its role worker changes
    chunk       rollout      a chunk was generated (and sent, or spooled)
    adopt       rollout      it now generates with a newer adapter version
    step        trainer      a GRPO step finished
    accounting  trainer      after each step and within ~0.5 s of a rejection
    done        trainer      the run's last step is done
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nodes.disk import Disk, append_whole


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = ""

    def to_json(self, t: float) -> str:
        return json.dumps({"t": t, "kind": self.kind, **dataclasses.asdict(self)}, separators=(",", ":"))


@dataclass(frozen=True)
class RoleEvent(Event):
    kind: ClassVar[str] = "role"
    role: str


@dataclass(frozen=True)
class ChunkEvent(Event):
    kind: ClassVar[str] = "chunk"
    version: int
    samples: int
    tokens: int
    gen_s: float
    """Engine time generating the chunk."""
    busy_s: float
    """Generate + sign + seal + send: what the node can deliver, overheads included."""
    engine: str
    sent: bool
    """False: spooled, no trainer took it yet."""
    witness_s: float = 0.0
    """CPU time spent since the previous chunk verifying and countersigning the provenance log
    (on the thread that follows the trainer, beside generation; not in busy_s)."""
    spool_dropped: int = 0
    """Spooled chunks this one pushed out of a full spool (lost before any trainer saw them)."""


@dataclass(frozen=True)
class AdoptEvent(Event):
    """The rollout's engine switched to `version`: with the version's publication time (the
    trainer's step event) this is the version's dissemination latency to this node."""

    kind: ClassVar[str] = "adopt"
    version: int


@dataclass(frozen=True)
class StepEvent(Event):
    kind: ClassVar[str] = "step"
    step: int
    version: int
    reward_mean: float
    samples: int
    step_s: float
    """Wall time of the step, waiting for data included."""
    wait_s: float
    """Time the learner waited for enough fresh groups."""
    lags: dict = field(default_factory=dict)
    """policy lag (str) -> chunks of that lag in the batch."""
    loss: float | None = None


@dataclass(frozen=True)
class AccountingEvent(Event):
    """accepted == consumed + sum(dropped) + buffered at every line."""

    kind: ClassVar[str] = "accounting"
    accepted: int
    consumed: int
    buffered: int
    dropped: dict = field(default_factory=dict)
    """reason -> accepted chunks dropped before use (e.g. stale)."""
    rejected: dict = field(default_factory=dict)
    """reason -> chunks refused at the door."""


@dataclass(frozen=True)
class DoneEvent(Event):
    kind: ClassVar[str] = "done"
    steps: int
    version: int


EVENT_TYPES: dict[str, type[Event]] = {cls.kind: cls for cls in (RoleEvent, ChunkEvent, AdoptEvent, StepEvent,
                                                                  AccountingEvent, DoneEvent)}


class MetricsLog:
    def __init__(self, path: Path, disk: Disk | None = None):
        """`disk`: where a line lost to a full disk is counted (the run goes on without it)."""
        self.path = Path(path)
        self.disk = disk
        self._lock = threading.Lock()

    def write(self, event: Event) -> None:
        line = event.to_json(time.time())
        with self._lock:
            try:
                append_whole(self.path, (line + "\n").encode())
            except OSError as e:
                if self.disk is None:
                    raise
                self.disk.skip(self.path.name, e)


def read_event(raw: Any) -> dict | None:
    """A parsed metrics line if it is a well-formed event, else None. Known kinds must carry
    their fields with the declared types; unknown kinds pass (newer nodes may log more)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str) or not _is_number(raw.get("t")):
        return None
    cls = EVENT_TYPES.get(raw["kind"])
    if cls is None:
        return raw
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = raw.get(f.name, None if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                        else _default(f))
        if not _matches(value, hints[f.name]):
            return None
    return raw


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _matches(value: Any, hint: Any) -> bool:
    if hint is float:
        return _is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is not None and type(None) in typing.get_args(hint):  # Optional
        return value is None or any(_matches(value, h) for h in typing.get_args(hint) if h is not type(None))
    return isinstance(value, hint)
