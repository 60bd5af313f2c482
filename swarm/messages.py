"""The small wire messages of the three P2P protocols, typed, with one strict decoder.

    protocol  request            reply
    status    StatusRequest      Verdict      (trainers: groups still usable, newest version)
    chunks    sealed chunk       Verdict      (trainers: the chunk's fate + the same status)
    adapter   AdapterRequest     bundle       (every holder; the bundle starts with BundleHeader)

Each message is a frozen dataclass whose fields are plain JSON types. `decode(cls, data)` is the
only way bytes from a peer become a message: size limit first, then canonical-JSON parsing (no
duplicate keys, no NaN), then an exact field set, exact types (a bool is never an int) and the
ranges each class declares in `check`. Anything else is a `RequestRejected` naming the field.

Why dataclasses behind one validator rather than msgspec: these messages have four to five
scalar fields and are decoded a few hundred times a second at most; the chunk itself (the one
large message) is safetensors with its own strict reader (`swarm.chunk`). One small validator
over the standard library costs no dependency and matches how records and the manifest are
typed here.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from crypto.canonical import canonical_json, parse_json
from crypto.errors import CanonicalError
from swarm.rejections import Reason, RequestRejected

M = TypeVar("M", bound="Message")


class Message:
    """Base of every wire message: `encode` to canonical JSON, `decode` strictly."""

    MAX_BYTES: ClassVar[int] = 1024

    def check(self) -> str | None:
        """A problem with field values (ranges, choices), or None."""
        return None

    def encode(self) -> bytes:
        return canonical_json(dataclasses.asdict(self))


def decode(cls: type[M], data: bytes) -> M:
    """Parse untrusted bytes as a `cls` message, or raise RequestRejected with the reason."""
    if len(data) > cls.MAX_BYTES:
        raise RequestRejected(Reason.OVERSIZE, f"{cls.__name__}: {len(data)} bytes > {cls.MAX_BYTES}")
    try:
        doc = parse_json(bytes(data), max_size=cls.MAX_BYTES)
    except CanonicalError as e:
        raise RequestRejected(Reason.FORMAT, f"{cls.__name__}: {e}") from None
    if not isinstance(doc, dict):
        raise RequestRejected(Reason.SCHEMA, f"{cls.__name__} must be a JSON object")
    fields, hints = _schema(cls)
    extra = set(doc) - set(fields)
    missing = [n for n, f in fields.items() if n not in doc and f.default is dataclasses.MISSING]
    if extra or missing:
        raise RequestRejected(Reason.SCHEMA, f"{cls.__name__}: unexpected {sorted(extra)} / missing {missing}")
    for name, value in doc.items():
        if not _is(value, hints[name]):
            raise RequestRejected(Reason.SCHEMA, f"{cls.__name__}.{name} has the wrong type")
    message = cls(**doc)
    problem = message.check()
    if problem:
        raise RequestRejected(Reason.SCHEMA, f"{cls.__name__}: {problem}")
    return message


@functools.cache
def _schema(cls: type) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    """A message class's fields and resolved type hints (resolving them costs more than decoding)."""
    return {f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)


def _is(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and -(2**62) <= value < 2**62
    return isinstance(value, hint)


@dataclass(frozen=True)
class StatusRequest(Message):
    """`status`: no fields. The asker's identity is the authenticated libp2p peer id."""

    MAX_BYTES: ClassVar[int] = 64


@dataclass(frozen=True)
class Verdict(Message):
    """A trainer's reply to `status` and to every chunk: the chunk's fate (`ok`, `reason` when
    refused) and the trainer's state: groups it can still use, its newest adapter version."""

    ok: bool
    need: int
    version: int
    reason: str | None = None
    MAX_BYTES: ClassVar[int] = 512

    def check(self) -> str | None:
        if self.need < 0 or self.version < -1:
            return "need must be >= 0 and version >= -1"
        if self.reason is not None and self.reason not in {r.value for r in Reason}:
            return f"unknown reason {self.reason[:32]!r}"
        if self.ok == (self.reason is not None):
            return "a refusal carries a reason, an acceptance none"
        return None


@dataclass(frozen=True)
class AdapterRequest(Message):
    """`adapter`: version `version`, please; I hold `have` (-1: none), so a delta from it will do;
    `gguf`: send the GGUF LoRA too (llama.cpp nodes)."""

    version: int
    have: int = -1
    gguf: bool = False
    MAX_BYTES: ClassVar[int] = 256

    def check(self) -> str | None:
        return None if self.version >= 0 and self.have >= -1 else "version must be >= 0, have >= -1"


BODY_KINDS = ("full", "delta")


@dataclass(frozen=True)
class BundleHeader(Message):
    """First part of an adapter bundle: whether the body is the full weights or a delta from the
    asker's version, and whether a GGUF part follows."""

    body: str
    gguf: bool
    MAX_BYTES: ClassVar[int] = 256

    def check(self) -> str | None:
        return None if self.body in BODY_KINDS else f"body must be one of {BODY_KINDS}"
