"""The `log` protocol: a node brings its copy of the provenance log up to a peer's, and checks it.

    request   LogRequest {have: entries the asker holds}
    reply     parts: LogHeader {size, count}, the peer's checkpoint note (signed, cosigned),
              its keys.json, the owner's manifest updates it holds (one per line), the
              consistency proof from `have` to `size` (32-byte hashes), then `count` entries
              from index `have`

The asker verifies everything before keeping anything: each entry continues the chain and is
signed by an authorised key; the proof shows the new tree extends the one it held; the checkpoint
is signed by an authorised trainer and commits to exactly the resulting tree. Manifest updates
are self-authenticating (signed by the owner), so they are applied first, whatever else the reply
holds: that is how a revocation spreads even through a peer that would rather hide it. Then, as a witness,
it countersigns the checkpoint (swarm.provenance.checkpoints). A peer that shows us a history
that does not extend ours is refused (`inconsistent`) and our log is left unchanged.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from crypto.errors import CryptoError
from crypto.merkle import verify_consistency
from swarm.adapters.bundle import pack_parts, split_parts
from swarm.messages import Message, decode
from swarm.provenance.checkpoints import verify_checkpoint
from swarm.provenance.log import ProvenanceLog
from swarm.rejections import Reason, Rejection, VersionRejected

MAX_ENTRIES_PER_REPLY = 512
MAX_LOG_REPLY = 64 * 1024 * (MAX_ENTRIES_PER_REPLY + 8)
HASH = 32


@dataclass(frozen=True)
class LogRequest(Message):
    have: int
    MAX_BYTES: ClassVar[int] = 128

    def check(self) -> str | None:
        return None if self.have >= 0 else "have must be >= 0"


@dataclass(frozen=True)
class LogHeader(Message):
    size: int
    count: int
    MAX_BYTES: ClassVar[int] = 256

    def check(self) -> str | None:
        return None if 0 <= self.count <= min(self.size, MAX_ENTRIES_PER_REPLY) else "count out of range"


def log_reply(log: ProvenanceLog, request: bytes) -> bytes:
    """What we answer a `log` request with (b"" when it is malformed or we have no checkpoint yet)."""
    try:
        have = decode(LogRequest, request).have
    except Rejection:
        return b""
    with log.lock:
        keys = json.dumps({k: v.hex() for k, v in sorted(log.keys.items())}).encode()
        updates = b"\n".join(log.trust.updates)
        size = log.checkpoint_size if log.checkpoint is not None else 0
        if have > size or log.checkpoint is None:
            # Nothing to give but the owner's updates (a revocation may be why the asker is ahead).
            return pack_parts(LogHeader(size=min(size, have), count=0).encode(), b"", keys, updates, b"") \
                if log.trust.updates else b""
        entries = log.entries[have : min(size, have + MAX_ENTRIES_PER_REPLY)]
        proof = b"".join(log.consistency_proof(have, size)) if 0 < have < size else b""
        return pack_parts(LogHeader(size=size, count=len(entries)).encode(), log.checkpoint, keys, updates, proof,
                          *entries)


def apply_reply(log: ProvenanceLog, data: bytes, countersign: Callable[[bytes], bytes] | None = None) -> bool:
    """Verify a peer's reply and extend our log with it; True when we now hold the peer's whole
    (checkpointed) history. VersionRejected says why a reply is refused. `countersign(note)`: the
    verified checkpoint as we keep it (a witness adds its cosignature: one write, not two)."""
    if not data:
        return False
    parts = split_parts(data, max_parts=5 + MAX_ENTRIES_PER_REPLY)
    if len(parts) < 5:
        raise VersionRejected(Reason.FORMAT, "log reply has too few parts")
    try:
        header = decode(LogHeader, parts[0])
        keys = {k: bytes.fromhex(v) for k, v in json.loads(parts[2]).items()}
    except (Rejection, ValueError, AttributeError, TypeError) as e:
        raise VersionRejected(Reason.SCHEMA, f"log reply: {e}") from None
    note, updates, proof, entries = parts[1], parts[3], parts[4], parts[5:]
    if len(entries) != header.count or len(proof) % HASH:
        raise VersionRejected(Reason.FORMAT, "log reply parts do not match its header")
    with log.lock:
        if log.learn_updates(u for u in updates.split(b"\n") if u):
            return False  # a revocation cut our log: ask again from where it now ends
        have = log.size
        if not note and header.count == 0:
            return False  # the peer holds less than we do (or no checkpoint): nothing more to learn from it
        if have + header.count > header.size:
            raise VersionRejected(Reason.INCONSISTENT, f"peer's log of {header.size} entries is behind ours ({have})")
        log.learn_keys(keys)
        old_root = log.root()
        staged = log.staged(entries)  # verified against our head; not yet kept
        if have + len(entries) < header.size:
            log.commit(staged)  # a partial reply: the rest comes with the next request
            return False
        new_root = staged.root()
        if 0 < have < header.size:
            try:
                verify_consistency(have, header.size, old_root, new_root, [proof[i : i + HASH]
                                                                         for i in range(0, len(proof), HASH)])
            except CryptoError as e:
                raise VersionRejected(Reason.INCONSISTENT, f"consistency proof: {e}") from None
        verify_checkpoint(note, log, size=header.size, root=new_root)
        log.commit(staged, checkpoint=countersign(note) if countersign is not None else note)
        return True
