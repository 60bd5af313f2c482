"""Adapter versions held on this node: verified on arrival, kept on disk, served to peers.

Each version lives in `ADAPTERS/vN/` as a PEFT directory (`adapter_config.json`,
`adapter_model.safetensors`, loadable with `PeftModel.from_pretrained`) plus the trainer's
signed record `version.dsse`, and when the trainer made them: `gguf/adapter-f32.gguf` (the same
adapter for llama.cpp, digest in the record) and `delta.bin` (the compressed exact delta from the
parent version), served as bundles (`swarm.adapters.bundle`). A received version is
used only if the record verifies against a current trainer's key, the weights (as sent, or
rebuilt from the delta) and the GGUF match its digests, and it continues the chain we hold
(higher version; the parent digest matches when we hold the parent).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

from swarm.adapters.bundle import MAX_BUNDLE_BYTES, Bundle, decode_bundle
from swarm.adapters.files import CONFIG_NAME, WEIGHTS_NAME
from swarm.messages import BundleHeader
from swarm.rejections import Reason, VersionRejected
from swarm.versions import AdapterVersion, verify_version

WEIGHTS, CONFIG, RECORD = WEIGHTS_NAME, CONFIG_NAME, "version.dsse"
GGUF, DELTA = "gguf/adapter-f32.gguf", "delta.bin"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
                for name, data in ((WEIGHTS, weights), (CONFIG, config), (RECORD, envelope), (GGUF, gguf),
                                   (DELTA, delta)):
                    if data:
                        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                        (tmp / name).write_bytes(data)
                os.rename(tmp, out)
            self.records[record.version] = record
            for old in sorted(self.records)[: -self.keep]:
                shutil.rmtree(self.path(old), ignore_errors=True)
                del self.records[old]
        return out

    def load(self, trusted_keys: Mapping[str, bytes]) -> None:
        """Re-read the versions kept on disk (a restarted node): each record must verify and match
        its weights; anything else on disk is ignored."""
        for p in self.root.glob("v*"):
            try:
                record = verify_version((p / RECORD).read_bytes(), trusted_keys=trusted_keys,
                                        run_digest=self.run_digest)
                if p.name == f"v{record.version}" and _sha((p / WEIGHTS).read_bytes()) == record.adapter_sha256:
                    self.records[record.version] = record
            except (OSError, VersionRejected):
                continue

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

    def accept(self, data: bytes, *, want_version: int, trusted_keys: Mapping[str, bytes]) -> AdapterVersion:
        """Verify a bundle received from a peer and store it; VersionRejected says why not."""
        b = decode_bundle(data)
        envelope, config, body = b.envelope, b.config, b.body
        record = verify_version(envelope, trusted_keys=trusted_keys, run_digest=self.run_digest)
        if record.version != want_version:
            raise VersionRejected(Reason.WRONG_VERSION, f"asked for v{want_version}, got v{record.version}")
        held = self.latest()
        if held is not None and record.version <= held.version:
            raise VersionRejected(Reason.ROLLBACK, f"v{record.version} is not newer than v{held.version}")
        parent = self.records.get(record.parent_version)
        if parent is not None and parent.adapter_sha256 != record.parent_sha256:
            raise VersionRejected(Reason.FORK, f"v{record.version} does not continue the v{parent.version} we hold")
        weights = self._rebuild(record, body) if b.header.body == "delta" else body
        if _sha(weights) != record.adapter_sha256:
            raise VersionRejected(Reason.DIGEST, "adapter weights do not match the signed digest")
        gguf = b.gguf
        if gguf and _sha(gguf) != record.gguf_sha256:
            raise VersionRejected(Reason.DIGEST, "GGUF adapter does not match the signed digest")
        self.put(record, envelope, config, weights, gguf=gguf, delta=body if b.header.body == "delta" else b"")
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
