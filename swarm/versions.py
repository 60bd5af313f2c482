"""A version entry: what a trainer vouches for when it publishes adapter version v.

One entry per version, an in-toto Statement v1 in a DSSE envelope (JSON encoding, so standard
in-toto / DSSE tools read it) signed by the trainer's Ed25519 key:

    subject        every file of the version directory by name and sha256 (weights, PEFT config,
                   GGUF LoRA when published)
    predicateType  PREDICATE_TYPE (ours)
    predicate      run id and manifest digest, the manifest update it was made under (its
                   serial, swarm.trust), version, step, the parent version and its entry's
                   leaf hash (RFC 6962, so entries chain and the log can prove them), the parent's
                   weights digest (for deltas), base model digest, trainer key id, digest of the
                   GRPO settings, a digest over the sorted name/digest list of the subject (a
                   rename or a dropped file changes it), and the trajectory chunks consumed: each
                   chunk's digest, its producer's key id and the digest of the producer's signed
                   envelope, so a chunk's origin is provable.

The exact envelope bytes are the entry (the provenance log's leaf); verification checks the
signature over those bytes, then parses only them. Entries stay under MAX_VERSION_BYTES.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crypto.canonical import canonical_json, parse_json
from crypto.envelope import sign_envelope, verify_envelope
from crypto.errors import CryptoError
from crypto.identity import Identity
from swarm.adapters.files import CONFIG_NAME, WEIGHTS_NAME
from swarm.rejections import HEX64, Reason, VersionRejected

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://echo-swarm.dev/provenance/adapter-version/v1"
MAX_VERSION_BYTES = 64 * 1024
WEIGHTS_FILE, CONFIG_FILE, GGUF_FILE = WEIGHTS_NAME, CONFIG_NAME, "gguf/adapter-f32.gguf"
VERSION_FILES = (WEIGHTS_FILE, CONFIG_FILE, GGUF_FILE)
"""The files a version may have; weights and config always."""
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ChunkAttestation:
    """One trajectory chunk a version consumed, and who made it."""

    digest: str
    """sha256 of the chunk's wire bytes (the payload its producer signed)."""
    producer: str
    """The producer's key id."""
    envelope: str
    """sha256 of the producer's signed envelope: with the producer's key, proves the chunk's origin."""


@dataclass(frozen=True)
class AdapterVersion:
    run_id: str
    run_digest: str
    """The manifest digest the entry was made under."""
    version: int
    step: int
    parent_version: int
    """-1 for the first version."""
    parent_entry: str
    """Leaf hash (hex) of the parent version's entry; "" for the first version."""
    parent_sha256: str
    """The parent's weights digest (what a delta applies to); "" for the first version."""
    files: tuple[tuple[str, str], ...]
    """(name, sha256) of every file of the version directory, sorted by name."""
    base_sha256: str
    trainer_key_id: str
    grpo_digest: str
    chunks: tuple[ChunkAttestation, ...]
    created_at: float
    manifest_serial: int = 0
    """The manifest update (swarm.trust) whose keys the trainer signed under; 0: the manifest itself."""

    @property
    def digests(self) -> dict[str, str]:
        return dict(self.files)

    @property
    def adapter_sha256(self) -> str:
        return self.digests[WEIGHTS_FILE]

    @property
    def config_sha256(self) -> str:
        return self.digests[CONFIG_FILE]

    @property
    def gguf_sha256(self) -> str:
        return self.digests.get(GGUF_FILE, "")

    @property
    def files_digest(self) -> str:
        return files_digest(self.files)

    def statement(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": name, "digest": {"sha256": sha}} for name, sha in self.files],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "runId": self.run_id, "manifestDigest": self.run_digest, "manifestSerial": self.manifest_serial,
                "version": self.version,
                "step": self.step, "parentVersion": self.parent_version, "parentEntry": self.parent_entry,
                "parentSha256": self.parent_sha256, "baseSha256": self.base_sha256,
                "trainerKeyId": self.trainer_key_id, "grpoDigest": self.grpo_digest,
                "filesDigest": self.files_digest,
                "chunks": [{"digest": c.digest, "producer": c.producer, "envelope": c.envelope} for c in self.chunks],
                "createdAt": self.created_at,
            },
        }


def files_digest(files: tuple[tuple[str, str], ...]) -> str:
    """sha256 over the sorted "name<TAB>sha256<LF>" lines of a version's files."""
    return hashlib.sha256("".join(f"{n}\t{d}\n" for n, d in sorted(files)).encode()).hexdigest()


def settings_digest(section: Any) -> str:
    """sha256 of a manifest section's canonical JSON (the GRPO settings an entry was trained with)."""
    return hashlib.sha256(canonical_json(dataclasses.asdict(section))).hexdigest()


def entry_hash(envelope: bytes) -> str:
    """The RFC 6962 leaf hash (hex) of an entry: what children name as `parent_entry` and the log hashes."""
    return hashlib.sha256(b"\x00" + envelope).hexdigest()


def sign_version(record: AdapterVersion, trainer: Identity) -> bytes:
    envelope = sign_envelope(PAYLOAD_TYPE, canonical_json(record.statement()), [trainer], encoding="json")
    if len(envelope) > MAX_VERSION_BYTES:
        raise VersionRejected(Reason.OVERSIZE, f"entry of {len(envelope)} bytes (too many chunks for one version)")
    return envelope


def verify_version(envelope: bytes, *, trusted_keys: Mapping[str, bytes], run_digest: str) -> AdapterVersion:
    """Signature over the exact bytes by one of `trusted_keys`, then a strict parse of those bytes."""
    if len(envelope) > MAX_VERSION_BYTES:
        raise VersionRejected(Reason.OVERSIZE, f"{len(envelope)} bytes")
    try:
        verified = verify_envelope(envelope, trusted_keys=trusted_keys, payload_types={PAYLOAD_TYPE},
                                   max_size=MAX_VERSION_BYTES)
        doc = parse_json(verified.payload, max_size=MAX_VERSION_BYTES)
    except CryptoError as e:
        raise VersionRejected(Reason.BAD_SIGNATURE, str(e)) from None
    record = parse_statement(doc)
    if record.run_digest != run_digest:
        raise VersionRejected(Reason.WRONG_RUN, "entry of another run manifest")
    if record.trainer_key_id not in verified.signer_key_ids:
        raise VersionRejected(Reason.WRONG_SIGNER, "entry names another trainer than the one that signed it")
    return record


def parse_statement(doc: Any) -> AdapterVersion:
    """The typed entry of a statement dict; every malformation is VersionRejected(schema)."""
    try:
        _keys(doc, {"_type", "subject", "predicateType", "predicate"})
        if doc["_type"] != STATEMENT_TYPE or doc["predicateType"] != PREDICATE_TYPE:
            raise ValueError("not an adapter-version statement (type confusion)")
        files = tuple(_subject(s) for s in _list(doc["subject"], len(VERSION_FILES)))
        names = [n for n, _ in files]
        if names != sorted(set(names)) or not {WEIGHTS_FILE, CONFIG_FILE} <= set(names):
            raise ValueError("subject must name weights and config once each, sorted")
        p = doc["predicate"]
        _keys(p, {"runId", "manifestDigest", "manifestSerial", "version", "step", "parentVersion", "parentEntry", "parentSha256",
                  "baseSha256", "trainerKeyId", "grpoDigest", "filesDigest", "chunks", "createdAt"})
        record = AdapterVersion(
            run_id=_match(p["runId"], _RUN_ID), run_digest=_hex(p["manifestDigest"]),
            version=_int(p["version"], 0), step=_int(p["step"], 0), parent_version=_int(p["parentVersion"], -1),
            parent_entry=_hex(p["parentEntry"], empty=True), parent_sha256=_hex(p["parentSha256"], empty=True),
            files=files, base_sha256=_hex(p["baseSha256"], empty=True), trainer_key_id=_hex(p["trainerKeyId"]),
            grpo_digest=_hex(p["grpoDigest"]),
            chunks=tuple(_chunk(c) for c in _list(p["chunks"], 4096)), created_at=_number(p["createdAt"]),
            manifest_serial=_int(p["manifestSerial"], 0),
        )
        if p["filesDigest"] != record.files_digest:
            raise ValueError("filesDigest does not match the subject")
        first = record.parent_version == -1
        if record.parent_version >= record.version or first != (record.parent_entry == "" == record.parent_sha256):
            raise ValueError("parent fields inconsistent")
        return record
    except (ValueError, TypeError, KeyError) as e:
        raise VersionRejected(Reason.SCHEMA, f"version entry: {e}") from None


def _keys(doc: Any, keys: set[str]) -> None:
    if not isinstance(doc, dict) or set(doc) != keys:
        raise ValueError(f"fields must be exactly {sorted(keys)}")


def _list(value: Any, limit: int) -> list:
    if not isinstance(value, list) or len(value) > limit:
        raise ValueError("a list is malformed or too long")
    return value


def _subject(s: Any) -> tuple[str, str]:
    _keys(s, {"name", "digest"})
    _keys(s["digest"], {"sha256"})
    if s["name"] not in VERSION_FILES:  # also rules out "..", absolute paths and symlink tricks
        raise ValueError(f"unexpected file {str(s['name'])[:64]!r}")
    return s["name"], _hex(s["digest"]["sha256"])


def _chunk(c: Any) -> ChunkAttestation:
    _keys(c, {"digest", "producer", "envelope"})
    return ChunkAttestation(_hex(c["digest"]), _hex(c["producer"]), _hex(c["envelope"]))


def _hex(value: Any, empty: bool = False) -> str:
    if not (isinstance(value, str) and (HEX64.match(value) or (empty and value == ""))):
        raise ValueError("expected 64 lowercase hex digits")
    return value


def _match(value: Any, pattern: re.Pattern) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError("malformed name")
    return value


def _int(value: Any, minimum: int) -> int:
    if type(value) is not int or not minimum <= value < 2**62:  # an integer must stay an integer
        raise ValueError("expected an integer in range")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    return float(value)
