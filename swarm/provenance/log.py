"""The provenance log of a run: every version entry, append-only, in an RFC 6962 Merkle tree.

Every trainer and rollout node keeps a full copy in WORKDIR/provenance/ (entries are small):

    entries.log      the exact entry envelopes, each framed by an 8-byte big-endian length;
                     appended and fsynced (a torn tail from a crash is cut off when loading)
    keys.json        key id -> Ed25519 public key of every signer seen (self-authenticating:
                     the key id is the key's sha256; the manifest says which ids may sign)
    checkpoint.note  the newest checkpoint (C2SP tlog-checkpoint signed note) with the witness
                     cosignatures gathered for it; written tmp-then-rename
    updates.jsonl    the owner's manifest updates (swarm.trust) this node accepted, in order
    manifest.toml    the signed manifest: with updates.jsonl, the trust root (written by the node)

Entries are accepted only in chain order: each is signed by a key the manifest (as updated by
the update the entry names) authorises to train, is of this run, and names the previous entry as
its parent (leaf hash and version). A node therefore holds a version only if the whole chain that
leads to it verifies: no gaps, no foreign bases. An update that revokes a key drops the entries
that key signed from the update's fromVersion on.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from crypto.identity import key_id_of
from crypto.merkle import MerkleTree, leaf_hash
from swarm.rejections import Reason, UpdateRejected, VersionRejected
from swarm.trust import TrustRoot
from swarm.versions import AdapterVersion, entry_hash, verify_version

log = logging.getLogger(__name__)
FRAME = 8
MAX_KEYS = 1024


class ProvenanceLog:
    def __init__(self, directory: Path, trust: TrustRoot):
        """`trust`: the signed manifest and the owner's updates to it (who may sign what); the
        updates kept in this directory are applied to it."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.trust = trust
        self.origin, self.run_digest = trust.signed.namespace, trust.signed.digest
        self.lock = threading.RLock()
        self.entries: list[bytes] = []
        self.records: list[AdapterVersion] = []
        self.tree = MerkleTree()  # RFC 6962, with every complete subtree cached: roots and proofs in O(log n)
        self.keys: dict[str, bytes] = {}
        self.checkpoint: bytes | None = None
        """The newest signed checkpoint note we hold for this log (with cosignatures)."""
        self.checkpoint_size = 0
        self._load()

    # -- reading ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.entries)

    def head(self) -> AdapterVersion | None:
        return self.records[-1] if self.records else None

    def index_of(self, version: int) -> int | None:
        """The log index of `version`'s entry, if the log holds it."""
        lo, hi = 0, len(self.records)
        while lo < hi:  # versions increase along the chain
            mid = (lo + hi) // 2
            if self.records[mid].version < version:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(self.records) and self.records[lo].version == version else None

    def entry_for(self, version: int) -> bytes | None:
        i = self.index_of(version)
        return None if i is None else self.entries[i]

    def root(self, size: int | None = None) -> bytes:
        return self.tree.root(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return self.tree.inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        return self.tree.consistency_proof(old_size, size)

    def authorised(self, key_id: str) -> bool:
        """May `key_id` sign checkpoints of this log (a key that was ever allowed to train)?"""
        return self.trust.ever_trainer(key_id)

    # -- growing ------------------------------------------------------------------------------

    def learn_updates(self, envelopes: Iterable[bytes]) -> int:
        """Apply the owner's manifest updates we do not hold yet (UpdateRejected on the first bad
        one; those before it are kept) and drop entries a revocation invalidates. How many were
        dropped."""
        with self.lock:
            before = self.trust.serial
            try:
                for envelope in envelopes:
                    self.trust.apply(envelope)
            finally:
                self._save_updates()
            return self._drop_revoked() if self.trust.serial != before else 0

    def _save_updates(self) -> None:
        if len(self.trust.updates) != self._updates_saved:
            _write_atomic(self.dir / "updates.jsonl", b"".join(u + b"\n" for u in self.trust.updates))
            self._updates_saved = len(self.trust.updates)

    def _drop_revoked(self) -> int:
        for i, record in enumerate(self.records):
            try:
                self.trust.check_signer(record, self.records[i - 1] if i else None)
            except VersionRejected as e:
                log.warning("manifest update #%d: dropping log entries from v%d on (%s)", self.trust.serial,
                            record.version, e)
                dropped = self.size - i
                self.drop_tail(i)
                return dropped
        return 0

    def learn_keys(self, keys: dict[str, bytes]) -> None:
        """Remember public keys (from live records or a peer's keys.json); each must hash to its id."""
        with self.lock:
            fresh = {k: bytes(v) for k, v in keys.items() if k not in self.keys and key_id_of(bytes(v)) == k}
            if fresh and len(self.keys) + len(fresh) <= MAX_KEYS:
                self.keys.update(fresh)
                _write_atomic(self.dir / "keys.json", json.dumps({k: v.hex() for k, v in sorted(self.keys.items())}))

    def verify_next(self, envelope: bytes, parent: AdapterVersion | None, parent_envelope: bytes | None
                    ) -> AdapterVersion:
        return verify_entry(envelope, parent, parent_envelope, keys=self.keys, trust=self.trust)

    def append(self, envelope: bytes) -> AdapterVersion:
        """Verify one entry against the head and append it durably."""
        with self.lock:
            staged = self.staged([envelope])
            self.commit(staged)
            return staged.records[0]

    def staged(self, envelopes: Iterable[bytes]) -> Staged:
        """Verify entries in chain order after our head, keeping nothing yet."""
        with self.lock:
            staged = Staged(self.tree)
            head, head_envelope = self.head(), self.entries[-1] if self.entries else None
            for envelope in envelopes:
                record = self.verify_next(envelope, head, head_envelope)
                staged.add(envelope, record)
                head, head_envelope = record, envelope
            return staged

    def commit(self, staged: Staged, checkpoint: bytes | None = None) -> None:
        """Keep staged entries (appended and fsynced) and, if given, the checkpoint that covers them."""
        with self.lock:
            if staged.base != len(self.entries):
                raise VersionRejected(Reason.INCONSISTENT, "the log grew while a reply was being checked")
            if staged.entries:
                with open(self.dir / "entries.log", "ab", buffering=0) as f:  # unbuffered: nothing left to flush
                    size = f.tell()
                    try:
                        data = memoryview(b"".join(len(e).to_bytes(FRAME, "big") + e for e in staged.entries))
                        while data:
                            data = data[f.write(data):]
                        os.fsync(f.fileno())
                    except OSError:  # e.g. a full disk: cut the torn frame, or the next append would follow it
                        f.truncate(size)
                        raise
                for envelope, record in zip(staged.entries, staged.records):
                    self._add(envelope, record)
            if checkpoint is not None:
                self.set_checkpoint(checkpoint, self.size)

    def drop_tail(self, size: int) -> None:
        """Keep only the first `size` entries (rewritten tmp-then-rename) and forget the checkpoint:
        for a node whose own unwitnessed publications the swarm's history has superseded."""
        with self.lock:
            del self.entries[size:], self.records[size:]
            self.tree.truncate(size)
            _write_atomic(self.dir / "entries.log", b"".join(len(e).to_bytes(FRAME, "big") + e for e in self.entries))
            self.checkpoint, self.checkpoint_size = None, 0
            (self.dir / "checkpoint.note").unlink(missing_ok=True)

    def set_checkpoint(self, note: bytes, size: int) -> None:
        """Keep a (verified) checkpoint note for the first `size` entries; written tmp-then-rename."""
        with self.lock:
            self.checkpoint, self.checkpoint_size = note, size
            _write_atomic(self.dir / "checkpoint.note", note)

    def _add(self, envelope: bytes, record: AdapterVersion) -> None:
        self.entries.append(envelope)
        self.records.append(record)
        self.tree.append(envelope)

    def _load(self) -> None:
        self._updates_saved = -1
        try:
            self.trust.read(self.dir / "updates.jsonl")
        except UpdateRejected as e:  # a damaged file: keep the updates verified before the damage
            log.warning("%s/updates.jsonl: %s", self.dir, e)
        if self.trust.updates:
            self._save_updates()  # with those the node was given beside its manifest
        try:
            self.learn_keys({k: bytes.fromhex(v) for k, v in json.loads((self.dir / "keys.json").read_text()).items()})
        except (OSError, ValueError, AttributeError):
            pass
        path = self.dir / "entries.log"
        data = path.read_bytes() if path.exists() else b""
        pos = 0
        while pos + FRAME <= len(data):
            n = int.from_bytes(data[pos : pos + FRAME], "big")
            envelope = data[pos + FRAME : pos + FRAME + n]
            if len(envelope) < n:
                break
            try:
                self._add(envelope, self.verify_next(envelope, self.head(), self.entries[-1] if self.entries else None))
            except VersionRejected:
                break  # a damaged file: keep the verified prefix
            pos += FRAME + n
        if pos != len(data):  # a torn or damaged tail: cut it so appends continue the verified prefix
            with open(path, "r+b") as f:
                f.truncate(pos)
        self._load_checkpoint()

    def _load_checkpoint(self) -> None:
        from swarm.provenance.checkpoints import checkpoint_size

        try:
            note = (self.dir / "checkpoint.note").read_bytes()
            size = checkpoint_size(note)
        except (OSError, ValueError):
            return
        if size <= self.size:  # re-verified by whoever relies on it (audit, a peer)
            self.checkpoint, self.checkpoint_size = note, size


class Staged:
    """Entries verified to follow a log's head, with the tree they would make; not yet kept.
    Use under the log's lock (the root is computed by appending to the log's tree and undoing it)."""

    def __init__(self, tree: MerkleTree):
        self.base = tree.size
        self._tree = tree
        self.entries: list[bytes] = []
        self.records: list[AdapterVersion] = []

    def add(self, envelope: bytes, record: AdapterVersion) -> None:
        self.entries.append(envelope)
        self.records.append(record)

    def root(self) -> bytes:
        for envelope in self.entries:
            self._tree.append_leaf_hash(leaf_hash(envelope))
        try:
            return self._tree.root()
        finally:
            self._tree.truncate(self.base)


def verify_entry(envelope: bytes, parent: AdapterVersion | None, parent_envelope: bytes | None, *,
                 keys: dict[str, bytes], trust: TrustRoot) -> AdapterVersion:
    """The record of `envelope` if it may follow `parent` (None: the first entry) in a run's log.

    Signature over the exact bytes by a known key (else bad_signature), that key authorised to
    sign this version (else wrong_signer; unknown_update when it names an update we lack), then the
    chain: the parent's version, entry hash and weights digest (else rollback when it does not move
    forward, fork otherwise)."""
    record = verify_version(envelope, trusted_keys=keys, run_digest=trust.signed.digest)
    trust.check_signer(record, parent)
    if parent is None:
        if record.parent_version != -1:
            raise VersionRejected(Reason.FORK, f"v{record.version} names a parent the log does not hold (a gap)")
    elif (record.parent_version, record.parent_entry, record.parent_sha256) != (
            parent.version, entry_hash(parent_envelope), parent.adapter_sha256):
        reason = Reason.ROLLBACK if record.version <= parent.version else Reason.FORK
        raise VersionRejected(reason, f"v{record.version} does not continue v{parent.version}")
    return record


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError:  # e.g. a full disk: leave no half file taking space
        tmp.unlink(missing_ok=True)
        raise
