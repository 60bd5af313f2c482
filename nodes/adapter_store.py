"""Adapter versions held on this node: verified on arrival, kept on disk, served to peers.

Each version lives in `ADAPTERS/vN/` as a PEFT directory (`adapter_config.json`,
`adapter_model.safetensors`, loadable with `PeftModel.from_pretrained`) plus the trainer's
signed record `version.dsse`. The wire bundle is three length-prefixed parts:
record envelope, config JSON, safetensors weights. A received version is used only if the
record verifies against a current trainer's key, the weights match its digest, and it
continues the chain we hold (higher version; the parent digest matches when we hold the parent).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

from swarm.versions import AdapterVersion, VersionError, verify_version

MAX_BUNDLE_BYTES = 256 << 20
WEIGHTS, CONFIG, RECORD = "adapter_model.safetensors", "adapter_config.json", "version.dsse"


def pack_bundle(record: bytes, config: bytes, weights: bytes) -> bytes:
    return b"".join(len(part).to_bytes(8, "big") + part for part in (record, config, weights))


def unpack_bundle(data: bytes) -> tuple[bytes, bytes, bytes]:
    parts, pos = [], 0
    for _ in range(3):
        if pos + 8 > len(data):
            raise VersionError("format", "truncated adapter bundle")
        n = int.from_bytes(data[pos : pos + 8], "big")
        if pos + 8 + n > len(data):
            raise VersionError("format", "truncated adapter bundle")
        parts.append(data[pos + 8 : pos + 8 + n])
        pos += 8 + n
    if pos != len(data):
        raise VersionError("format", "trailing bytes after adapter bundle")
    return parts[0], parts[1], parts[2]


class AdapterStore:
    def __init__(self, root: Path, run_digest: str, keep: int = 6):
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

    def put(self, record: AdapterVersion, envelope: bytes, config: bytes, weights: bytes) -> Path:
        """Store a version we already verified (or produced). Written tmp-then-rename."""
        out = self.path(record.version)
        with self._lock:
            if not out.exists():
                tmp = self.root / f".v{record.version}.tmp{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                for name, data in ((WEIGHTS, weights), (CONFIG, config), (RECORD, envelope)):
                    (tmp / name).write_bytes(data)
                os.rename(tmp, out)
            self.records[record.version] = record
            for old in sorted(self.records)[: -self.keep]:
                shutil.rmtree(self.path(old), ignore_errors=True)
                del self.records[old]
        return out

    def bundle(self, version: int) -> bytes | None:
        p = self.path(version)
        try:
            return pack_bundle((p / RECORD).read_bytes(), (p / CONFIG).read_bytes(), (p / WEIGHTS).read_bytes())
        except OSError:
            return None

    def accept(self, data: bytes, *, want_version: int, trusted_keys: Mapping[str, bytes]) -> AdapterVersion:
        """Verify a bundle received from a peer and store it; VersionError says why not."""
        envelope, config, weights = unpack_bundle(data)
        record = verify_version(envelope, trusted_keys=trusted_keys, run_digest=self.run_digest)
        if record.version != want_version:
            raise VersionError("wrong_version", f"asked for v{want_version}, got v{record.version}")
        if hashlib.sha256(weights).hexdigest() != record.adapter_sha256:
            raise VersionError("digest", "adapter weights do not match the signed digest")
        held = self.latest()
        if held is not None and record.version <= held.version:
            raise VersionError("rollback", f"v{record.version} is not newer than v{held.version}")
        parent = self.records.get(record.parent_version)
        if parent is not None and parent.adapter_sha256 != record.parent_sha256:
            raise VersionError("fork", f"v{record.version} does not continue the v{parent.version} we hold")
        self.put(record, envelope, config, weights)
        return record
