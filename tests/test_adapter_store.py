"""Adapter versions between two stores as between two peers: full first, then deltas against the
version the asker holds, the GGUF only when asked; every digest checked on arrival."""
from __future__ import annotations

import json
import time

import pytest
import torch

from crypto.identity import Identity
from swarm.adapters.bundle import pack_parts, split_parts
from swarm.adapters.delta import pack_delta
from swarm.adapters.files import adapter_bytes, sha256_hex
from swarm.adapters.store import DELTA, GGUF, WEIGHTS, AdapterStore
from swarm.rejections import VersionRejected
from swarm.versions import AdapterVersion, sign_version

RUN = "ab" * 32
NAMES = ("base_model.model.layers.0.self_attn.q_proj.lora_A.weight",
         "base_model.model.layers.0.self_attn.q_proj.lora_B.weight")


class Trainer:
    """Publishes versions the way the trainer worker does: record, weights, delta, GGUF."""

    def __init__(self, tmp_path):
        self.identity = Identity.generate()
        self.store = AdapterStore(tmp_path / "trainer", RUN)
        self.tensors: dict[int, dict] = {}
        gen = torch.Generator().manual_seed(0)
        self.state = {n: torch.randn(8, 16, generator=gen) for n in NAMES}

    @property
    def keys(self) -> dict[str, bytes]:
        return {self.identity.key_id: self.identity.public_key}

    def publish(self, version: int) -> AdapterVersion:
        self.state = {n: t + 1e-3 * torch.randn_like(t) for n, t in self.state.items()} if version else self.state
        weights = adapter_bytes(self.state)
        gguf = f"gguf of v{version}".encode()
        parent = self.store.latest()
        record = AdapterVersion(
            run_digest=RUN, version=version, step=version, adapter_sha256=sha256_hex(weights),
            parent_version=parent.version if parent else -1, parent_sha256=parent.adapter_sha256 if parent else "",
            base_sha256="cd" * 32, trainer_key_id=self.identity.key_id, chunks=(), created_at=time.time(),
            gguf_sha256=sha256_hex(gguf))
        delta = pack_delta(self.tensors[parent.version], self.state, parent.adapter_sha256,
                           record.adapter_sha256) if parent else b""
        self.tensors[version] = dict(self.state)
        self.store.put(record, sign_version(record, self.identity), b"{}", weights, gguf=gguf, delta=delta)
        return record


def header(bundle: bytes) -> dict:
    return json.loads(split_parts(bundle)[0])


def test_first_version_full_then_deltas_rebuild_the_exact_weights(tmp_path):
    trainer, peer = Trainer(tmp_path), AdapterStore(tmp_path / "peer", RUN)
    trainer.publish(0)
    first = trainer.store.bundle(0, have=-1)
    assert header(first) == {"body": "full", "gguf": False}
    peer.accept(first, want_version=0, trusted_keys=trainer.keys)
    for v in (1, 2):
        trainer.publish(v)
        full, delta = trainer.store.bundle(v), trainer.store.bundle(v, have=v - 1)
        assert header(delta)["body"] == "delta" and len(delta) < 0.9 * len(full)
        peer.accept(delta, want_version=v, trusted_keys=trainer.keys)
        assert (peer.path(v) / WEIGHTS).read_bytes() == (trainer.store.path(v) / WEIGHTS).read_bytes()
        assert (peer.path(v) / DELTA).is_file()  # so this peer can relay the delta too
    # an asker that skipped a version gets the full weights
    assert header(trainer.store.bundle(2, have=0))["body"] == "full"


def test_gguf_travels_only_when_asked_and_must_match_its_digest(tmp_path):
    trainer, peer = Trainer(tmp_path), AdapterStore(tmp_path / "peer", RUN)
    trainer.publish(0)
    bundle = trainer.store.bundle(0, gguf=True)
    assert header(bundle) == {"body": "full", "gguf": True}
    forged = pack_parts(*split_parts(bundle)[:4], b"another gguf")
    with pytest.raises(VersionRejected, match="GGUF"):
        peer.accept(forged, want_version=0, trusted_keys=trainer.keys)
    peer.accept(bundle, want_version=0, trusted_keys=trainer.keys)
    assert (peer.path(0) / GGUF).read_bytes() == b"gguf of v0"


def test_bad_deltas_and_bundles_are_refused(tmp_path):
    trainer, peer = Trainer(tmp_path), AdapterStore(tmp_path / "peer", RUN)
    trainer.publish(0)
    trainer.publish(1)
    delta = trainer.store.bundle(1, have=0)
    with pytest.raises(VersionRejected, match="do not hold"):  # a delta is useless without its parent
        peer.accept(delta, want_version=1, trusted_keys=trainer.keys)
    peer.accept(trainer.store.bundle(0), want_version=0, trusted_keys=trainer.keys)
    parts = split_parts(delta)
    body = bytearray(parts[3])
    body[len(body) // 2] ^= 1
    with pytest.raises(VersionRejected, match="delta"):
        peer.accept(pack_parts(*parts[:3], bytes(body)), want_version=1, trusted_keys=trainer.keys)
    with pytest.raises(VersionRejected, match="header"):
        peer.accept(pack_parts(b"{}", *parts[1:]), want_version=1, trusted_keys=trainer.keys)
    with pytest.raises(VersionRejected, match="parts"):
        peer.accept(pack_parts(*parts, b"extra"), want_version=1, trusted_keys=trainer.keys)
    peer.accept(delta, want_version=1, trusted_keys=trainer.keys)  # nothing refused was kept
    assert peer.latest().version == 1
