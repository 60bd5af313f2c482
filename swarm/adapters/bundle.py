"""The adapter bundle: how one version travels in a reply to an `adapter` request.

Length-prefixed parts (8-byte big-endian lengths): a `BundleHeader` (full weights or a delta from
the asker's version; GGUF or not), the trainer's signed version record, the PEFT config JSON, the
body (weights, or the compressed exact delta of `swarm.adapters.delta`), and the GGUF LoRA when
the header says so. The parts are checked against the header before anything is verified.
"""
from __future__ import annotations

from dataclasses import dataclass

from swarm.messages import BundleHeader, decode
from swarm.rejections import Reason, Rejection, VersionRejected

MAX_BUNDLE_BYTES = 256 << 20
MAX_PARTS = 5


@dataclass(frozen=True)
class Bundle:
    header: BundleHeader
    envelope: bytes
    config: bytes
    body: bytes
    gguf: bytes = b""

    def encode(self) -> bytes:
        gguf = [self.gguf] if self.header.gguf else []
        return pack_parts(self.header.encode(), self.envelope, self.config, self.body, *gguf)


def pack_parts(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def split_parts(data: bytes, max_parts: int = MAX_PARTS) -> list[bytes]:
    parts, pos = [], 0
    while pos < len(data):
        if len(parts) == max_parts or pos + 8 > len(data):
            raise VersionRejected(Reason.FORMAT, "malformed adapter bundle")
        n = int.from_bytes(data[pos : pos + 8], "big")
        if pos + 8 + n > len(data):
            raise VersionRejected(Reason.FORMAT, "truncated adapter bundle")
        parts.append(data[pos + 8 : pos + 8 + n])
        pos += 8 + n
    return parts


def decode_bundle(data: bytes) -> Bundle:
    """Split a peer's bundle into its parts; VersionRejected(format | schema) when they do not fit."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise VersionRejected(Reason.OVERSIZE, f"{len(data)} bytes")
    parts = split_parts(data)
    if len(parts) < 4:
        raise VersionRejected(Reason.FORMAT, "adapter bundle has too few parts")
    try:
        header = decode(BundleHeader, parts[0])
    except Rejection as e:
        raise VersionRejected(e.reason, f"bundle header: {e.detail}") from None
    if len(parts) != 4 + header.gguf:
        raise VersionRejected(Reason.FORMAT, "adapter bundle parts do not match its header")
    return Bundle(header, *parts[1:])
