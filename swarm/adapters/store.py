"""Adapter versions held on this node: verified on arrival, kept on disk, served to peers.

Each version lives in `ADAPTERS/vN/` as a PEFT directory (`adapter_config.json`,
`adapter_model.safetensors`, loadable with `PeftModel.from_pretrained`) plus the trainer's
signed record `version.dsse`, and when the trainer made them: `gguf/adapter-f32.gguf` (the same
adapter for llama.cpp, digest in the record) and `delta.bin` (the compressed exact delta from the
parent version), served as bundles (`swarm.adapters.bundle`). A received version is
used only if its entry is in the node's verified provenance log (`swarm.provenance`) and every
file (weights as sent or rebuilt from the delta, config, GGUF) matches the entry's digests.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

from swarm.adapters.bundle import MAX_BUNDLE_BYTES, Bundle, decode_bundle
from swarm.messages import BundleHeader
from swarm.provenance.log import ProvenanceLog
from swarm.rejections import Reason, VersionRejected
from swarm.versions import CONFIG_FILE, GGUF_FILE, WEIGHTS_FILE, AdapterVersion

WEIGHTS, CONFIG, GGUF = WEIGHTS_FILE, CONFIG_FILE, GGUF_FILE
RECORD, DELTA = "version.dsse", "delta.bin"
"""The entry (signed in-toto statement) of the version, and the delta from its parent."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_files(record: AdapterVersion, files: Mapping[str, bytes], partial: bool = False) -> None:
    """Every file re-hashes to the entry's subject; none missing (a GGUF may be left out when
    `partial`: llama.cpp-free nodes do not fetch it), none extra."""
    expected = record.digests
    extra = set(files) - set(expected)
    missing = set(expected) - set(files) - ({GGUF} if partial else set())
    if extra or missing:
        raise VersionRejected(Reason.DIGEST, f"v{record.version}: extra {sorted(extra)}, missing {sorted(missing)}")
    for name, data in files.items():
        if _sha(data) != expected[name]:
            raise VersionRejected(Reason.DIGEST, f"v{record.version}: {name} does not match the signed digest")


class AdapterStore:
    def __init__(self, root: Path, run_digest: str, keep: int = 6):
        """`keep`: versions kept on disk (nodes pass `swarm.sync.versions_kept`)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_digest = run_digest
        self.keep = keep
        self._lock = threading.Lock()
        self.records: dict[int, AdapterVersion] = {}

    def path(self, version: int) -> Path:
        return self.root / f"v{version}"

    def latest(self) -> AdapterVersion | None:
        return self.records[max(self.records)] if self.records else None

    def put(self, record: AdapterVersion, envelope: bytes, config: bytes, weights: bytes, *,
            gguf: bytes = b"", delta: bytes = b"") -> Path:
        """Store a version we already verified (or produced). Written tmp-then-rename."""
        out = self.path(record.version)
        with self._lock:
            if not out.exists():
                tmp = self.root / f".v{record.version}.tmp{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    for name, data in ((WEIGHTS, weights), (CONFIG, config), (RECORD, envelope), (GGUF, gguf),
                                       (DELTA, delta)):
                        if data:
                            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                            (tmp / name).write_bytes(data)
                    os.rename(tmp, out)
                except OSError:  # e.g. a full disk: nothing stored, no half version taking space
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            self.records[record.version] = record
            for old in sorted(self.records)[: -self.keep]:
                shutil.rmtree(self.path(old), ignore_errors=True)
                del self.records[old]
        return out

    def load(self, log: ProvenanceLog) -> None:
        """Re-read the versions kept on disk (a restarted node): each must be the log's entry for
        its version, with files that match it. Anything else is removed: a version written but
        never logged (killed in between) must not shadow the one published again."""
        for p in self.root.glob("v*"):
            try:
                version = int(p.name[1:])
                if (p / RECORD).read_bytes() != log.entry_for(version):
                    raise VersionRejected(Reason.UNLOGGED, p.name)
                record = log.records[log.index_of(version)]
                check_files(record, {name: (p / name).read_bytes() for name, _ in record.files if (p / name).exists()},
                            partial=True)
                self.records[version] = record
            except (OSError, ValueError, VersionRejected):
                shutil.rmtree(p, ignore_errors=True)

    def forget_unlogged(self, log: ProvenanceLog) -> list[int]:
        """Remove versions whose entry is no longer the log's (superseded history); their numbers."""
        with self._lock:
            gone = [v for v in self.records if (self.path(v) / RECORD).read_bytes() != log.entry_for(v)]
            for v in gone:
                shutil.rmtree(self.path(v), ignore_errors=True)
                del self.records[v]
        return gone

    def bundle(self, version: int, have: int = -1, gguf: bool = False) -> bytes | None:
        """Version `version` for a peer holding `have`: the delta when `have` is its parent."""
        p, record = self.path(version), self.records.get(version)
        if record is None:
            return None
        try:
            delta = (p / DELTA).read_bytes() if have == record.parent_version and (p / DELTA).is_file() else b""
            extra = (p / GGUF).read_bytes() if gguf and record.gguf_sha256 and (p / GGUF).is_file() else b""
            header = BundleHeader(body="delta" if delta else "full", gguf=bool(extra))
            return Bundle(header, (p / RECORD).read_bytes(), (p / CONFIG).read_bytes(),
                          delta or (p / WEIGHTS).read_bytes(), extra).encode()
        except OSError:
            return None

    def accept(self, data: bytes, *, want_version: int, log: ProvenanceLog) -> AdapterVersion:
        """Verify a bundle received from a peer and store it; VersionRejected says why not.

        The version's entry must already be in our verified log (so its whole chain verified and
        its signer was authorised); the bundle must carry exactly that entry, and every file must
        match the entry's subject digests (config included: a relay cannot change lora_alpha)."""
        b = decode_bundle(data)
        logged = log.entry_for(want_version)
        if logged is None:
            raise VersionRejected(Reason.UNLOGGED, f"v{want_version} is not in our verified provenance log")
        if b.envelope != logged:
            raise VersionRejected(Reason.EQUIVOCATION, f"the bundle's entry for v{want_version} is not the logged one")
        record = log.records[log.index_of(want_version)]
        held = self.latest()
        if held is not None and record.version <= held.version:
            raise VersionRejected(Reason.ROLLBACK, f"v{record.version} is not newer than v{held.version}")
        weights = self._rebuild(record, b.body) if b.header.body == "delta" else b.body
        files = {WEIGHTS: weights, CONFIG: b.config, **({GGUF: b.gguf} if b.gguf else {})}
        check_files(record, files, partial=GGUF not in files)
        self.put(record, b.envelope, b.config, weights, gguf=b.gguf, delta=b.body if b.header.body == "delta" else b"")
        return record

    def _rebuild(self, record: AdapterVersion, delta: bytes) -> bytes:
        """The weights of `record` from the parent we hold and a delta (exact, see adapters.py)."""
        from swarm.adapters.delta import unpack_delta
        from swarm.adapters.files import AdapterError, adapter_bytes, load_version

        parent = self.records.get(record.parent_version)
        if parent is None:
            raise VersionRejected(Reason.FORMAT, f"got a delta against v{record.parent_version}, which we do not hold")
        try:
            tensors = load_version(self.path(parent.version), parent.adapter_sha256)
            return adapter_bytes(unpack_delta(delta, tensors, parent.adapter_sha256, MAX_BUNDLE_BYTES))
        except AdapterError as e:
            raise VersionRejected(Reason.DIGEST, f"delta: {e.detail}") from None
