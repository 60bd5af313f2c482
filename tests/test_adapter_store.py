"""Adapter versions between two stores as between two peers: full first, then deltas against the
version the asker holds, the GGUF only when asked; every digest checked on arrival."""
from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
from conftest import trust_root

from crypto.identity import Identity
from swarm.adapters.bundle import pack_parts, split_parts
from swarm.adapters.delta import pack_delta
from swarm.adapters.files import adapter_bytes, sha256_hex
from swarm.adapters.store import DELTA, GGUF, WEIGHTS, AdapterStore
from swarm.provenance import checkpoints
from swarm.provenance.log import ProvenanceLog
from swarm.provenance.sync import LogRequest, apply_reply, log_reply
from swarm.rejections import VersionRejected
from swarm.versions import AdapterVersion, entry_hash, sign_version

RUN = "ab" * 32
NAMES = ("base_model.model.layers.0.self_attn.q_proj.lora_A.weight",
         "base_model.model.layers.0.self_attn.q_proj.lora_B.weight")


class Trainer:
    """Publishes versions the way the trainer worker does: entry, weights, config, delta, GGUF,
    then the entry into its provenance log with a signed checkpoint."""

    def __init__(self, tmp_path):
        self.identity = Identity.generate()
        self.store = AdapterStore(tmp_path / "trainer", RUN)
        self.log = new_log(tmp_path / "trainer-log", self.identity)
        self.tensors: dict[int, dict] = {}
        gen = torch.Generator().manual_seed(0)
        self.state = {n: torch.randn(8, 16, generator=gen) for n in NAMES}

    def entry(self, version: int, weights: bytes, config: bytes, gguf: bytes) -> AdapterVersion:
        head = self.log.head()
        files = {"adapter_model.safetensors": weights, "adapter_config.json": config, "gguf/adapter-f32.gguf": gguf}
        return AdapterVersion(
            run_id="test", run_digest=RUN, version=version, step=version,
            parent_version=head.version if head else -1,
            parent_entry=entry_hash(self.log.entries[-1]) if head else "",
            parent_sha256=head.adapter_sha256 if head else "",
            files=tuple(sorted((n, sha256_hex(d)) for n, d in files.items())), base_sha256="cd" * 32,
            trainer_key_id=self.identity.key_id, grpo_digest="ef" * 32, chunks=(), created_at=time.time())

    def publish(self, version: int) -> AdapterVersion:
        self.state = {n: t + 1e-3 * torch.randn_like(t) for n, t in self.state.items()} if version else self.state
        weights = adapter_bytes(self.state)
        gguf = f"gguf of v{version}".encode()
        parent = self.store.latest()
        record = self.entry(version, weights, CONFIG, gguf)
        delta = pack_delta(self.tensors[parent.version], self.state, parent.adapter_sha256,
                           record.adapter_sha256) if parent else b""
        self.tensors[version] = dict(self.state)
        envelope = sign_version(record, self.identity)
        self.store.put(record, envelope, CONFIG, weights, gguf=gguf, delta=delta)
        self.log.append(envelope)
        self.log.set_checkpoint(checkpoints.sign(self.log, self.identity), self.log.size)
        return record


CONFIG = b'{"lora_alpha": 16, "r": 8}'


def new_log(path, *keys: Identity) -> ProvenanceLog:
    log = ProvenanceLog(path, trust_root("test", RUN, open_training=True))
    log.learn_keys({k.key_id: k.public_key for k in keys})
    return log


def synced(peer_log: ProvenanceLog, trainer: Trainer) -> ProvenanceLog:
    """What the `log` protocol does between two nodes, in process."""
    assert apply_reply(peer_log, log_reply(trainer.log, LogRequest(have=peer_log.size).encode()))
    return peer_log


def header(bundle: bytes) -> dict:
    return json.loads(split_parts(bundle)[0])


def test_first_version_full_then_deltas_rebuild_the_exact_weights(tmp_path):
    trainer, peer = Trainer(tmp_path), AdapterStore(tmp_path / "peer", RUN)
    log = new_log(tmp_path / "peer-log")
    trainer.publish(0)
    first = trainer.store.bundle(0, have=-1)
    assert header(first) == {"body": "full", "gguf": False}
    peer.accept(first, want_version=0, log=synced(log, trainer))
    for v in (1, 2):
        trainer.publish(v)
        full, delta = trainer.store.bundle(v), trainer.store.bundle(v, have=v - 1)
        assert header(delta)["body"] == "delta" and len(split_parts(delta)[3]) < 0.9 * len(split_parts(full)[3])
        peer.accept(delta, want_version=v, log=synced(log, trainer))
        assert (peer.path(v) / WEIGHTS).read_bytes() == (trainer.store.path(v) / WEIGHTS).read_bytes()
        assert (peer.path(v) / DELTA).is_file()  # so this peer can relay the delta too
    # an asker that skipped a version gets the full weights
    assert header(trainer.store.bundle(2, have=0))["body"] == "full"


def test_gguf_travels_only_when_asked_and_must_match_its_digest(tmp_path):
    trainer, peer = Trainer(tmp_path), AdapterStore(tmp_path / "peer", RUN)
    log = new_log(tmp_path / "peer-log")
    trainer.publish(0)
    bundle = trainer.store.bundle(0, gguf=True)
    assert header(bundle) == {"body": "full", "gguf": True}
    forged = pack_parts(*split_parts(bundle)[:4], b"another gguf")
    with pytest.raises(VersionRejected, match="gguf"):
        peer.accept(forged, want_version=0, log=synced(log, trainer))
    peer.accept(bundle, want_version=0, log=synced(log, trainer))
    assert (peer.path(0) / GGUF).read_bytes() == b"gguf of v0"


def test_bad_deltas_and_bundles_are_refused(tmp_path):
    trainer, peer = Trainer(tmp_path), AdapterStore(tmp_path / "peer", RUN)
    log = new_log(tmp_path / "peer-log")
    trainer.publish(0)
    trainer.publish(1)
    delta = trainer.store.bundle(1, have=0)
    with pytest.raises(VersionRejected, match="do not hold"):  # a delta is useless without its parent
        peer.accept(delta, want_version=1, log=synced(log, trainer))
    peer.accept(trainer.store.bundle(0), want_version=0, log=synced(log, trainer))
    parts = split_parts(delta)
    body = bytearray(parts[3])
    body[len(body) // 2] ^= 1
    with pytest.raises(VersionRejected, match="delta"):
        peer.accept(pack_parts(*parts[:3], bytes(body)), want_version=1, log=synced(log, trainer))
    with pytest.raises(VersionRejected, match="header"):
        peer.accept(pack_parts(b"{}", *parts[1:]), want_version=1, log=synced(log, trainer))
    with pytest.raises(VersionRejected, match="parts"):
        peer.accept(pack_parts(*parts, b"extra"), want_version=1, log=synced(log, trainer))
    peer.accept(delta, want_version=1, log=synced(log, trainer))  # nothing refused was kept
    assert peer.latest().version == 1


def test_a_relayed_config_change_is_refused(tmp_path):
    """A relaying peer served a genuine version with lora_alpha x64 in adapter_config.json: the entry
    names the config's digest, so the change is caught and nothing is kept."""
    trainer, peer = Trainer(tmp_path), AdapterStore(tmp_path / "peer", RUN)
    log = new_log(tmp_path / "peer-log")
    trainer.publish(0)
    parts = split_parts(trainer.store.bundle(0))
    with pytest.raises(VersionRejected, match="adapter_config.json") as err:
        peer.accept(pack_parts(parts[0], parts[1], b'{"lora_alpha": 1024, "r": 8}', *parts[3:]), want_version=0,
                    log=synced(log, trainer))
    assert err.value.reason == "digest" and peer.latest() is None


def test_a_version_outside_the_verified_log_is_refused(tmp_path):
    trainer, peer = Trainer(tmp_path), AdapterStore(tmp_path / "peer", RUN)
    log = new_log(tmp_path / "peer-log")
    trainer.publish(0)
    with pytest.raises(VersionRejected) as err:  # we never synced the log: no entry, no version
        peer.accept(trainer.store.bundle(0), want_version=0, log=log)
    assert err.value.reason == "unlogged"
    # Another entry for the logged v0 (same trainer key, other config): equivocation.
    synced(log, trainer)
    other = trainer.entry(0, *(split_parts(trainer.store.bundle(0))[i] for i in (3, 2)), b"gguf of v0")
    other = dataclasses.replace(other, parent_version=-1, parent_entry="", parent_sha256="", created_at=1.0)
    parts = split_parts(trainer.store.bundle(0))
    with pytest.raises(VersionRejected) as err:
        peer.accept(pack_parts(parts[0], sign_version(other, trainer.identity), *parts[2:]), want_version=0, log=log)
    assert err.value.reason == "equivocation"
