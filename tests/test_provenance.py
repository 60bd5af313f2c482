"""Signed weight provenance, offline: one test per attack on a run's log, each caught by `swarm audit`
with its own failure class (the TUF updater tests and the transparency-log suites are the models).

Every test builds a real log the way trainers do (signed in-toto entries appended to a
ProvenanceLog, a C2SP checkpoint signed by the trainer, cosigned by witnesses), writes it as a
node's provenance directory, changes one thing, and audits it as a user would.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import run_cli, trust_root
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.envelope import sign_envelope
from crypto.identity import Identity
from swarm.adapters.store import AdapterStore
from swarm.manifest import parse_manifest, sign_manifest, write_manifest
from swarm.provenance import checkpoints
from swarm.provenance.audit import audit
from swarm.provenance.log import ProvenanceLog
from swarm.provenance.sync import LogRequest, apply_reply, log_reply
from swarm.rejections import VersionRejected
from swarm.trust import TrustRoot
from swarm.versions import (
    PAYLOAD_TYPE,
    AdapterVersion,
    ChunkAttestation,
    entry_hash,
    parse_statement,
    sign_version,
    verify_version,
)

H = "ab" * 32


class Run:
    """A run dir with one node (`trainer`) whose provenance log holds `versions` entries."""

    def __init__(self, root: Path, versions: int = 4, witnesses: int = 1):
        self.root, self.owner, self.trainer = root, Identity.generate(), Identity.generate()
        self.successor = Identity.generate()  # a second authorised trainer, for failovers
        self.witnesses = [Identity.generate() for _ in range(witnesses)]
        manifest = parse_manifest({"run": {"id": "prov", "owner_key_id": self.owner.key_id},
                                   "swarm": {"trainer_keys": [self.trainer.key_id, self.successor.key_id]}})
        self.manifest_path = root / "run.toml"
        root.mkdir(parents=True, exist_ok=True)
        write_manifest(sign_manifest(manifest, self.owner), self.manifest_path)
        from swarm.manifest import load_manifest

        self.signed = load_manifest(self.manifest_path)
        self.log = self.new_log(self.dir("trainer"))
        self.log.learn_keys({self.trainer.key_id: self.trainer.public_key})
        for v in range(versions):
            self.publish(v)

    def dir(self, node: str) -> Path:
        d = self.root / "nodes" / node / "provenance"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.manifest_path, d / "manifest.toml")
        return d

    def new_log(self, d: Path) -> ProvenanceLog:
        return ProvenanceLog(d, TrustRoot(self.signed))

    def entry(self, version: int, log: ProvenanceLog | None = None, **changes) -> AdapterVersion:
        log = log or self.log
        head = log.head()
        weights, config = f"weights {version}".encode(), b'{"lora_alpha": 16}'
        record = AdapterVersion(
            run_id="prov", run_digest=self.signed.digest, version=version, step=version,
            parent_version=head.version if head else -1, parent_entry=entry_hash(log.entries[-1]) if head else "",
            parent_sha256=head.adapter_sha256 if head else "",
            files=(("adapter_config.json", sha(config)), ("adapter_model.safetensors", sha(weights))),
            base_sha256=H, trainer_key_id=self.trainer.key_id, grpo_digest=H,
            chunks=(ChunkAttestation(sha(f"chunk {version}".encode()), H, H),) if version else (), created_at=1.0)
        return dataclasses.replace(record, **changes)

    def publish(self, version: int) -> None:
        self.log.append(sign_version(self.entry(version), self.trainer))
        self.checkpoint()

    def checkpoint(self) -> None:
        note = checkpoints.sign(self.log, self.trainer)
        for w in self.witnesses:
            note = checkpoints.add_cosignature(note, checkpoints.cosign(note, w, now=int(time.time())))
            self.log.learn_keys({w.key_id: w.public_key})
        self.log.set_checkpoint(note, self.log.size)

    def append_raw(self, envelope: bytes) -> None:
        """Write an entry into the file as an attacker would, past the log's own checks."""
        with open(self.dir("trainer") / "entries.log", "ab") as f:
            f.write(len(envelope).to_bytes(8, "big") + envelope)

    def version_dir(self, version: int) -> Path:
        """A version directory as a node keeps it."""
        d = self.root / "nodes" / "trainer" / "adapters" / f"v{version}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "adapter_model.safetensors").write_bytes(f"weights {version}".encode())
        (d / "adapter_config.json").write_bytes(b'{"lora_alpha": 16}')
        (d / "version.dsse").write_bytes(self.log.entry_for(version))
        return d


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def failure(report) -> str | None:
    return None if report.ok else report.failure.kind


@pytest.fixture
def run(tmp_path) -> Run:
    return Run(tmp_path / "run")


def test_an_honest_log_verifies_with_its_lineage(run):
    report = audit(run.root, witnesses=1)
    assert report.ok, report.failure
    assert [r.version for r in report.records] == [0, 1, 2, 3] and report.checkpoint_size == 4
    assert set(report.witnesses) == {run.witnesses[0].key_id}
    assert audit(run.root, adapter=run.version_dir(3)).ok


# -- the adapter's files --------------------------------------------------------------------------


@pytest.mark.parametrize("change, expected", [
    ("weights", "adapter_model.safetensors changed"),
    ("config", "adapter_config.json changed"),
    ("extra", "extra file notes.txt"),
    ("missing", "missing file adapter_config.json"),
    ("renamed", "missing file adapter_model.safetensors"),
    ("symlink", "is a link"),
])
def test_each_change_to_an_adapter_dir_is_named(run, change, expected):
    d = run.version_dir(3)
    if change == "weights":
        (d / "adapter_model.safetensors").write_bytes(b"weights 3!")
    elif change == "config":
        (d / "adapter_config.json").write_bytes(b'{"lora_alpha": 1024}')
    elif change == "extra":
        (d / "notes.txt").write_text("hi")
    elif change == "missing":
        (d / "adapter_config.json").unlink()
    elif change == "renamed":
        os.rename(d / "adapter_model.safetensors", d / "weights.safetensors")
    else:  # a file that points outside the directory
        outside = run.root / "outside.json"
        outside.write_bytes(b'{"lora_alpha": 16}')
        (d / "adapter_config.json").unlink()
        (d / "adapter_config.json").symlink_to(outside)
    report = audit(run.root, adapter=d)
    assert failure(report) == "files" and expected in report.failure.message


def test_a_subject_path_that_climbs_out_is_refused_at_parse():
    statement = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "x", "predicate": {},
                 "subject": [{"name": "../../etc/passwd", "digest": {"sha256": H}}]}
    with pytest.raises(VersionRejected):
        parse_statement(statement)


# -- signers --------------------------------------------------------------------------------------


def test_an_entry_signed_by_an_unknown_key(run):
    run.append_raw(sign_version(run.entry(4), Identity.generate()))
    report = audit(run.root)
    assert failure(report) == "signature" and "entry 4" in report.failure.message


def test_an_entry_signed_by_a_key_not_allowed_to_train(run):
    mallory = Identity.generate()
    run.log.learn_keys({mallory.key_id: mallory.public_key})  # known (e.g. a member), not authorised
    run.append_raw(sign_version(run.entry(4, trainer_key_id=mallory.key_id), mallory))
    assert failure(audit(run.root)) == "unauthorised"


def test_a_dsse_keyid_is_a_hint_only_and_duplicate_signatures_count_once(run):
    mallory = Identity.generate()
    envelope = json.loads(sign_version(run.entry(4), mallory))
    envelope["signatures"][0]["keyid"] = run.trainer.key_id  # claims to be the trainer's signature
    forged = json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()
    keys = {run.trainer.key_id: run.trainer.public_key}
    with pytest.raises(VersionRejected) as err:  # the hint selects the key to try; it never vouches
        verify_version(forged, trusted_keys=keys, run_digest=run.signed.digest)
    assert err.value.reason == "bad_signature"
    twice = sign_envelope(PAYLOAD_TYPE, b"{}", [run.trainer, run.trainer], encoding="json")
    from crypto.envelope import verify_envelope

    assert len(verify_envelope(twice, trusted_keys=keys, payload_types={PAYLOAD_TYPE}, max_size=4096)
               .signer_key_ids) == 1


# -- the chain ------------------------------------------------------------------------------------


def test_a_version_gap(run):
    gap = run.entry(9, parent_version=7)  # names a parent the log never had
    run.append_raw(sign_version(gap, run.trainer))
    assert failure(audit(run.root)) == "chain"


def test_two_entries_for_one_version(run):
    other = run.entry(3, log=None)  # a second v3 with the same parent as the first
    run.append_raw(sign_version(dataclasses.replace(other, parent_version=2,
                                                    parent_entry=entry_hash(run.log.entries[2]),
                                                    parent_sha256=run.log.records[2].adapter_sha256,
                                                    created_at=2.0), run.trainer))
    report = audit(run.root)
    assert failure(report) == "chain" and "equivocation" in report.failure.message


def test_an_entry_of_another_run_mix_and_match(run, tmp_path):
    other = Run(tmp_path / "other", versions=1)
    foreign = other.entry(4, log=run.log, trainer_key_id=run.trainer.key_id)  # right chain, other manifest
    run.append_raw(sign_version(dataclasses.replace(foreign, run_digest=other.signed.digest), run.trainer))
    assert failure(audit(run.root)) == "run"


def test_a_chunk_consumed_twice(run):
    twice = run.entry(4, chunks=run.log.records[3].chunks)
    run.log.append(sign_version(twice, run.trainer))
    run.checkpoint()
    assert failure(audit(run.root)) == "chunks"


def test_a_trajectory_chunk_presented_as_an_entry_type_confusion(run):
    from swarm.chunk import CHUNK_TYPE

    run.append_raw(sign_envelope(CHUNK_TYPE, b"not an adapter", [run.trainer], encoding="json"))
    assert failure(audit(run.root)) == "signature"  # payload type not accepted: no valid signature
    statement = {**run.entry(4).statement(), "predicateType": "https://slsa.dev/provenance/v1"}
    with pytest.raises(VersionRejected, match="type confusion"):
        parse_statement(statement)


@pytest.mark.parametrize("field, value", [("version", 4.0), ("version", True), ("step", "4"),
                                          ("parentVersion", 3.0)])
def test_numbers_keep_their_type(run, field, value):
    statement = run.entry(4).statement()
    statement["predicate"][field] = value
    with pytest.raises(VersionRejected):
        parse_statement(statement)


def test_an_oversized_entry(run):
    huge = run.entry(4, chunks=tuple(ChunkAttestation(sha(str(i).encode()), H, H) for i in range(400)))
    with pytest.raises(VersionRejected) as err:
        sign_version(huge, run.trainer)
    assert err.value.reason == "oversize"


def test_a_payload_changed_after_signing(run):
    envelope = json.loads(sign_version(run.entry(4), run.trainer))
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["predicate"]["trainerKeyId"] = H
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    run.append_raw(json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode())
    assert failure(audit(run.root)) == "signature"


def test_a_torn_log_file(run):
    with open(run.dir("trainer") / "entries.log", "ab") as f:
        f.write(b"\x00\x00\x00\x00\x00\x00\x10\x00{")
    assert failure(audit(run.root)) == "format"


# -- checkpoints and copies ----------------------------------------------------------------------


def test_entries_past_the_signed_checkpoint_a_stale_checkpoint(run):
    run.log.append(sign_version(run.entry(4), run.trainer))  # logged, never checkpointed: a freeze
    report = audit(run.root)
    assert failure(report) == "checkpoint" and "not covered" in report.failure.message


def test_a_checkpoint_signed_by_a_witness_not_the_trainer(run):
    forged = checkpoints.sign(run.log, run.witnesses[0])
    (run.dir("trainer") / "checkpoint.note").write_bytes(forged)
    assert failure(audit(run.root)) == "checkpoint"


def test_a_checkpoint_whose_root_is_another_history(run):
    """Trusting the root a log computes for itself would pass; the signed checkpoint must commit to it."""
    note = (run.dir("trainer") / "checkpoint.note").read_bytes()
    text, sigs = note.split(b"\n\n", 1)
    origin, size, _root = text.split(b"\n")
    (run.dir("trainer") / "checkpoint.note").write_bytes(
        b"\n".join([origin, size, base64.b64encode(b"\x01" * 32)]) + b"\n\n" + sigs)
    assert failure(audit(run.root)) == "checkpoint"


def test_a_split_view_between_two_nodes(run):
    """The trainer showed node `b` another v3: their copies cannot both be consistent."""
    b = run.new_log(run.dir("b"))
    b.learn_keys({run.trainer.key_id: run.trainer.public_key})
    b.commit(b.staged(run.log.entries[:3]))
    b.append(sign_version(dataclasses.replace(run.entry(3, log=b), created_at=9.0), run.trainer))
    report = audit(run.root)
    assert failure(report) == "inconsistent" and "split view" in report.failure.message


def test_rollback_to_an_older_head_against_a_trusted_checkpoint(run, tmp_path):
    trusted = (run.dir("trainer") / "checkpoint.note").read_bytes()  # the client saw 4 entries
    old = Run.__new__(Run)  # the same run, presented as it was two versions earlier
    shutil.copytree(run.root, tmp_path / "rolled")
    d = tmp_path / "rolled" / "nodes" / "trainer" / "provenance"
    log = run.new_log(d)
    data = b"".join(len(e).to_bytes(8, "big") + e for e in log.entries[:2])
    (d / "entries.log").write_bytes(data)
    del old
    rolled = ProvenanceLog(d, TrustRoot(run.signed))
    rolled.set_checkpoint(checkpoints.sign(rolled, run.trainer), rolled.size)
    report = audit(tmp_path / "rolled", trusted_checkpoint=trusted)
    assert failure(report) == "inconsistent" and "rollback" in report.failure.message


def test_rewritten_history_is_not_consistent_with_a_trusted_checkpoint(run, tmp_path):
    trusted = (run.dir("trainer") / "checkpoint.note").read_bytes()
    other = Run.__new__(Run)
    other.__dict__.update(run.__dict__)
    other.root = tmp_path / "rewritten"
    other.log = run.new_log(other.dir("trainer"))
    other.log.learn_keys({run.trainer.key_id: run.trainer.public_key})
    for v in range(6):  # the same versions, other bytes: a history rewritten from v0
        other.log.append(sign_version(dataclasses.replace(other.entry(v), created_at=5.0), run.trainer))
    other.checkpoint()
    assert audit(other.root).ok
    assert failure(audit(other.root, trusted_checkpoint=trusted)) == "inconsistent"


def test_too_few_witnesses(run):
    assert audit(run.root, witnesses=1).ok
    assert failure(audit(run.root, witnesses=2)) == "witnesses"


def test_only_vetted_witnesses_count_when_named(run):
    """In an open swarm anyone's cosignature counts (and is reported unvetted): a trainer could sign
    with keys it made up. Naming the witnesses you trust counts only theirs."""
    report = audit(run.root, witnesses=1)
    assert report.ok and not report.witnesses_vetted
    vetted = audit(run.root, witnesses=1, witness_keys=(run.witnesses[0].key_id,))
    assert vetted.ok and vetted.witnesses_vetted
    made_up = audit(run.root, witnesses=1, witness_keys=(Identity.generate().key_id,))
    assert failure(made_up) == "witnesses"


def test_a_tampered_manifest(run):
    path = run.dir("trainer") / "manifest.toml"
    path.write_text(path.read_text().replace('id = "prov"', 'id = "prov2"'))
    assert failure(audit(run.root)) == "manifest"


# -- the `log` protocol between nodes -----------------------------------------------------------------


def test_a_peer_log_that_rewrites_ours_is_refused_and_ours_kept(run, tmp_path):
    ours = run.new_log(tmp_path / "ours")
    ours.learn_keys({run.trainer.key_id: run.trainer.public_key})
    assert apply_reply(ours, log_reply(run.log, LogRequest(have=0).encode())) and ours.size == 4
    liar = Run(tmp_path / "liar", versions=0)
    liar.trainer, liar.signed, liar.log = run.trainer, run.signed, run.new_log(tmp_path / "liar-log")
    liar.log.learn_keys({run.trainer.key_id: run.trainer.public_key})
    for v in range(6):
        liar.log.append(sign_version(dataclasses.replace(liar.entry(v), created_at=7.0), run.trainer))
    liar.checkpoint()
    with pytest.raises(VersionRejected) as err:
        apply_reply(ours, log_reply(liar.log, LogRequest(have=ours.size).encode()))
    assert err.value.reason in ("fork", "inconsistent") and ours.size == 4 and ours.entries == run.log.entries


def test_a_returning_trainer_drops_only_its_own_unwitnessed_tail(run, tmp_path):
    """A published v4 and died before anyone fetched it; B took over from v3 and published its own v4
    and v5. Back as a rollout, A's log diverges from the trainer's only in A's own v4: A drops it and
    follows B (over the in-memory transport, the real `log` protocol). A node whose divergent entry
    was signed by someone else (it saw A's v4) still refuses B's history."""
    from types import SimpleNamespace

    from swarm.adapters.peers import PeerFailures
    from swarm.provenance.witness import witness_log
    from swarm.transport import MemoryHub, make_transport

    def node_log(name: str, entries: list[bytes]) -> ProvenanceLog:
        log = run.new_log(tmp_path / name)
        log.learn_keys({i.key_id: i.public_key for i in (run.trainer, run.successor)})
        log.commit(log.staged(entries))
        return log

    seen_by_b = list(run.log.entries)
    run.publish(4)  # A's unwitnessed v4
    b_log = node_log("b", seen_by_b)
    for v in (4, 5):
        b_log.append(sign_version(run.entry(v, log=b_log, trainer_key_id=run.successor.key_id), run.successor))
    b_log.set_checkpoint(checkpoints.sign(b_log, run.successor), b_log.size)
    hub = MemoryHub()
    b = make_transport("memory", hub=hub, peer_id="B")
    b.serve(f"{run.signed.namespace}/log", lambda remote, data: log_reply(b_log, data), max_request=128)

    def ctx(peer: str, log: ProvenanceLog, identity: Identity):
        return SimpleNamespace(transport=make_transport("memory", hub=hub, peer_id=peer), log=log, identity=identity,
                               protocol=lambda name: f"{run.signed.namespace}/{name}",
                               swarm=SimpleNamespace(trainers=lambda: [SimpleNamespace(peer_id="B")]))

    a = ctx("A", run.log, run.trainer)
    a.store = AdapterStore(tmp_path / "a-adapters", run.signed.digest)
    for v in (3, 4):  # what A holds on disk: v3 (B's history too) and its own superseded v4
        a.store.put(run.log.records[v], run.log.entries[v], b'{"lora_alpha": 16}', f"weights {v}".encode())
    assert witness_log(a, ["B"], PeerFailures())
    assert run.log.entries == b_log.entries  # A's own v4 is gone, B's v4 and v5 are in
    assert sorted(a.store.records) == [3]  # and the superseded v4 with it
    c_log = node_log("c", list(seen_by_b))
    c_log.append(sign_version(run.entry(4, log=c_log), run.trainer))  # C fetched A's v4 before A died
    witness = Identity.generate()
    assert not witness_log(ctx("C", c_log, witness), ["B"], PeerFailures())
    assert c_log.size == 5 and c_log.records[-1].trainer_key_id == run.trainer.key_id  # nothing dropped


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000))
def test_log_replies_only_raise_version_rejected(data):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        log = ProvenanceLog(Path(d), trust_root("x", "cd" * 32, open_training=True))
        try:
            apply_reply(log, data)
        except VersionRejected:
            pass
        assert log.size == 0


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_entries_only_raise_version_rejected(data):
    try:
        verify_version(data, trusted_keys={}, run_digest=H)
    except VersionRejected:
        pass


# -- the CLI as a user runs it ----------------------------------------------------------------------


def test_audit_cli_verdicts_and_exit_codes(run):
    ok = run_cli("audit", str(run.root))
    assert ok.returncode == 0 and "VERIFIED" in ok.stdout and "version" in ok.stdout, ok.stderr
    explained = run_cli("audit", str(run.root), "--explain", "2")
    assert explained.returncode == 0 and "trained on 1 chunk(s)" in explained.stdout
    run.append_raw(sign_version(run.entry(4), Identity.generate()))
    bad = run_cli("audit", str(run.root), "--json")
    assert bad.returncode == 12 and json.loads(bad.stdout)["failure"]["kind"] == "signature"
    missing = run_cli("audit", str(run.root / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_a_trainer_keeps_cosignatures_only_from_live_members_for_its_newest_checkpoint(run):
    from swarm.provenance.checkpoints import CosignRequest, accept_cosignature, cosigners

    member, stranger = Identity.generate(), Identity.generate()
    run.log.set_checkpoint(checkpoints.sign(run.log, run.trainer), run.log.size)  # no cosignatures yet
    note = run.log.checkpoint

    def request(identity: Identity, on: bytes = note, now: int = 1_800_000_000, damage: bool = False) -> bytes:
        line = checkpoints.cosign(on, identity, now=now)
        if damage:  # one base64 character of the signature changed
            line = line[:-6] + (b"A" if line[-6:-5] != b"A" else b"B") + line[-5:]
        return CosignRequest(note=on.decode(), cosignature=line.decode()).encode()

    members = {member.key_id: member.public_key}
    with pytest.raises(VersionRejected):  # not a live member of the swarm
        accept_cosignature(run.log, request(stranger), members)
    accept_cosignature(run.log, request(member), members)
    assert set(cosigners(run.log.checkpoint, members)) == {member.key_id}
    kept = run.log.checkpoint
    accept_cosignature(run.log, request(member, now=1_800_000_060), members)  # handed back again: kept once
    assert run.log.checkpoint == kept
    with pytest.raises(VersionRejected) as err:
        accept_cosignature(run.log, request(member, now=1_800_000_060, damage=True), members)
    assert err.value.reason == "bad_signature" and run.log.checkpoint == kept
    run.publish(4)  # a newer checkpoint: a cosignature of the old one is stale
    with pytest.raises(VersionRejected) as err:
        accept_cosignature(run.log, request(member, on=note), members)
    assert err.value.reason == "stale"
