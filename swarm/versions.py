"""Signed adapter-version records: what a trainer vouches for when it publishes version v.

The record names the adapter by sha256, links to its parent (version and digest) so receivers
can refuse rollbacks and forks, and lists the digests of the trajectory chunks it consumed
(the seed of the provenance log). It travels with the adapter over P2P streams, never in the DHT.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crypto.canonical import canonical_json, parse_json
from crypto.envelope import sign_envelope, verify_envelope
from crypto.errors import CryptoError
from crypto.identity import Identity
from swarm.rejections import HEX64, Reason, VersionRejected

VERSION_TYPE = "application/vnd.echo-swarm.adapter-version+json"
MAX_VERSION_BYTES = 256 * 1024


@dataclass(frozen=True)
class AdapterVersion:
    run_digest: str
    version: int
    step: int
    adapter_sha256: str
    parent_version: int
    """-1 for the first version."""
    parent_sha256: str
    base_sha256: str
    trainer_key_id: str
    chunks: tuple
    """sha256 of every trajectory chunk consumed since the parent version."""
    created_at: float
    gguf_sha256: str = ""
    """sha256 of the same adapter as a GGUF LoRA file for llama.cpp nodes; "" if not exported."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["chunks"] = list(self.chunks)
        return d


def sign_version(record: AdapterVersion, trainer: Identity) -> bytes:
    return sign_envelope(VERSION_TYPE, canonical_json(record.to_dict()), [trainer])


def verify_version(envelope: bytes, *, trusted_keys: Mapping[str, bytes], run_digest: str) -> AdapterVersion:
    try:
        verified = verify_envelope(envelope, trusted_keys=trusted_keys, payload_types={VERSION_TYPE},
                                   max_size=MAX_VERSION_BYTES)
        doc = parse_json(verified.payload, max_size=MAX_VERSION_BYTES)
    except CryptoError as e:
        raise VersionRejected(Reason.BAD_SIGNATURE, str(e)) from None
    fields = {f.name: f.type for f in dataclasses.fields(AdapterVersion)}
    if not isinstance(doc, dict) or set(doc) != set(fields):
        raise VersionRejected(Reason.SCHEMA, "adapter version record has the wrong fields")
    try:
        record = AdapterVersion(**{**doc, "chunks": tuple(doc["chunks"])})
        ok = (
            all(isinstance(getattr(record, k), int) and not isinstance(getattr(record, k), bool)
                for k in ("version", "step", "parent_version"))
            and all(HEX64.match(c) for c in record.chunks)
            and HEX64.match(record.adapter_sha256)
            and (record.gguf_sha256 == "" or HEX64.match(record.gguf_sha256))
            and isinstance(record.created_at, (int, float))
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise VersionRejected(Reason.SCHEMA, "adapter version record has malformed fields")
    if record.run_digest != run_digest:
        raise VersionRejected(Reason.WRONG_RUN, "adapter version of another run")
    if record.trainer_key_id not in verified.signer_key_ids:
        raise VersionRejected(Reason.WRONG_SIGNER, "record names another trainer than the one that signed it")
    return record
