"""Manifest updates (swarm.trust): the owner changes who may train, TUF style, and nobody else can.

Each hostile case is refused with its own reason; a revocation cuts exactly the versions the
revoked key signed from the version the owner names; the update spreads through the `log`
protocol even from a peer that holds it only to pass it on; `swarm audit` checks the same rules
offline; `swarm trust` is the owner's command for it.
"""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_provenance import Run, failure

from crypto.envelope import sign_envelope
from crypto.identity import Identity
from swarm.provenance import checkpoints
from swarm.provenance.audit import audit
from swarm.provenance.log import ProvenanceLog
from swarm.provenance.sync import LogRequest, apply_reply, log_reply
from swarm.rejections import Reason, UpdateRejected, VersionRejected
from swarm.trust import UPDATE_TYPE, TrustRoot, make_update, updates_path
from swarm.versions import entry_hash, sign_version


@pytest.fixture
def run(tmp_path) -> Run:
    return Run(tmp_path / "run")


def rejected(trust: TrustRoot, envelope: bytes) -> Reason:
    with pytest.raises(UpdateRejected) as e:
        trust.apply(envelope)
    return e.value.reason


# -- who may sign an update -------------------------------------------------------------------------

def test_the_owner_adds_a_trainer_key_and_the_swarm_keeps_its_name(run):
    newcomer = Identity.generate()
    trust = TrustRoot(run.signed)
    assert not trust.manifest.trainer_allowed(newcomer.key_id)
    assert trust.apply(make_update(trust, [run.owner], trainer_keys=[run.trainer.key_id, newcomer.key_id]))
    assert trust.serial == 1 and trust.manifest.trainer_allowed(newcomer.key_id)
    assert trust.manifest.swarm.trainer_keys == (run.trainer.key_id, newcomer.key_id)
    assert trust.signed.namespace == run.signed.namespace  # same swarm: DHT keys and log origin unchanged
    assert trust.manifest.grpo == run.signed.manifest.grpo


def test_an_update_signed_by_anyone_but_the_owner_is_refused(run):
    trust = TrustRoot(run.signed)
    for signer in (run.trainer, Identity.generate()):  # even the authorised trainer may not change trust
        assert rejected(trust, make_update(trust, [signer], trainer_keys=[signer.key_id])) == Reason.BAD_SIGNATURE
    assert trust.serial == 0


def test_owner_rotation_needs_both_keys_and_then_only_the_new_owner_counts(run):
    trust, heir = TrustRoot(run.signed), Identity.generate()
    only_old = make_update(trust, [run.owner], owner_public_key=heir.public_key)
    assert rejected(trust, only_old) == Reason.BAD_SIGNATURE  # the new owner must sign too (TUF)
    assert trust.apply(make_update(trust, [run.owner, heir], owner_public_key=heir.public_key))
    assert trust.manifest.run.owner_key_id == heir.key_id
    assert rejected(trust, make_update(trust, [run.owner], trainer_keys=[])) == Reason.BAD_SIGNATURE
    assert trust.apply(make_update(trust, [heir], trainer_keys=[run.successor.key_id]))


def test_updates_apply_in_order_once_and_a_second_update_for_a_serial_is_a_fork(run):
    trust = TrustRoot(run.signed)
    first = make_update(trust, [run.owner], trainer_keys=[run.trainer.key_id])
    other = make_update(trust, [run.owner], trainer_keys=[run.successor.key_id])
    assert trust.apply(first) and not trust.apply(first)  # a replay is a no-op
    assert rejected(trust, other) == Reason.FORK
    ahead = TrustRoot(run.signed)
    ahead.apply(first)
    third = make_update(ahead, [run.owner], trainer_keys=[])
    assert rejected(TrustRoot(run.signed), third) == Reason.UNKNOWN_UPDATE  # #2 before #1


def test_an_update_of_another_run_is_refused(run, tmp_path):
    other = Run(tmp_path / "other", versions=0)
    other.owner = run.owner  # the same owner key running two swarms
    trust, foreign = TrustRoot(run.signed), TrustRoot(other.signed)
    envelope = make_update(foreign, [run.owner], trainer_keys=[])
    with pytest.raises(UpdateRejected) as e:
        trust.apply(envelope)
    assert e.value.reason in (Reason.WRONG_RUN, Reason.BAD_SIGNATURE)


def test_a_malformed_update_signed_by_the_owner_is_a_schema_error(run):
    trust = TrustRoot(run.signed)
    good = json.loads(json.dumps({
        "runId": "prov", "manifestDigest": run.signed.digest, "serial": 1, "previous": run.signed.digest,
        "ownerPublicKey": run.owner.public_key.hex(), "trainerKeys": [], "rolloutKeys": [],
        "openTraining": False, "fromVersion": 0}))
    for change in ({"fromVersion": 1.0}, {"trainerKeys": ["nothex"]}, {"openTraining": 1}, {"extra": 1},
                   {"ownerPublicKey": "ab"}, {"openTraining": True, "trainerKeys": [run.trainer.key_id]}):
        from crypto.canonical import canonical_json

        envelope = sign_envelope(UPDATE_TYPE, canonical_json({**good, **change}), [run.owner], encoding="json")
        assert rejected(trust, envelope) == Reason.SCHEMA, change
    assert trust.serial == 0


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_as_an_update_are_only_ever_update_rejected(data):
    trust = _STATIC_TRUST
    try:
        trust.apply(data)
    except UpdateRejected:
        pass
    assert trust.serial == 0


def _static_trust() -> TrustRoot:
    from conftest import trust_root

    return trust_root("fuzz", "ef" * 32, trainer_keys=("ab" * 32,))


_STATIC_TRUST = _static_trust()


# -- what an update means for version entries ---------------------------------------------------------

def revoke(run: Run, log: ProvenanceLog, from_version: int) -> bytes:
    """The owner's update: the successor trains, the trainer's key is revoked from `from_version` on."""
    return make_update(log.trust, [run.owner], trainer_keys=[run.successor.key_id], from_version=from_version)


def test_a_revoked_key_keeps_its_history_but_signs_nothing_from_the_named_version(run):
    dropped = run.log.learn_updates([revoke(run, run.log, from_version=2)])
    assert dropped == 2 and [r.version for r in run.log.records] == [0, 1]  # v2, v3 cut
    with pytest.raises(VersionRejected) as e:
        run.log.append(sign_version(run.entry(2, manifest_serial=1), run.trainer))
    assert e.value.reason == Reason.WRONG_SIGNER and "#1" in str(e.value)
    run.log.learn_keys({run.successor.key_id: run.successor.public_key})
    run.log.append(sign_version(run.entry(2, trainer_key_id=run.successor.key_id, manifest_serial=1), run.successor))
    assert run.log.head().trainer_key_id == run.successor.key_id
    reopened = ProvenanceLog(run.dir("trainer"), TrustRoot(run.signed))  # updates.jsonl comes back with the log
    assert reopened.trust.serial == 1 and [r.version for r in reopened.records] == [0, 1, 2]


def test_an_entry_naming_an_update_the_node_lacks_or_an_older_one_than_its_parent_is_refused(run):
    ahead = TrustRoot(run.signed)
    ahead.apply(make_update(ahead, [run.owner], trainer_keys=[run.trainer.key_id]))
    with pytest.raises(VersionRejected) as e:
        run.log.append(sign_version(run.entry(4, manifest_serial=1), run.trainer))
    assert e.value.reason == Reason.UNKNOWN_UPDATE
    run.log.learn_updates(ahead.updates)
    run.log.append(sign_version(run.entry(4, manifest_serial=1), run.trainer))
    with pytest.raises(VersionRejected) as e:
        run.log.append(sign_version(run.entry(5, manifest_serial=0), run.trainer))
    assert e.value.reason == Reason.ROLLBACK


def test_the_update_spreads_in_the_log_protocol_and_cuts_a_followers_revoked_tail(run, tmp_path):
    follower = ProvenanceLog(tmp_path / "follower", TrustRoot(run.signed))
    assert apply_reply(follower, log_reply(run.log, LogRequest(have=0).encode()))
    assert follower.size == 4
    run.log.learn_updates([revoke(run, run.log, from_version=3)])  # the owner's node got the update
    run.log.learn_keys({run.successor.key_id: run.successor.public_key})
    run.log.append(sign_version(run.entry(3, trainer_key_id=run.successor.key_id, manifest_serial=1), run.successor))
    note = checkpoints.sign(run.log, run.successor)
    run.log.set_checkpoint(note, run.log.size)
    # The follower holds the revoked v3; the reply carries the update first, which cuts it ...
    assert not apply_reply(follower, log_reply(run.log, LogRequest(have=follower.size).encode()))
    assert follower.trust.serial == 1 and follower.size == 3
    # ... and the next request brings the successor's v3.
    assert apply_reply(follower, log_reply(run.log, LogRequest(have=follower.size).encode()))
    assert follower.head().trainer_key_id == run.successor.key_id
    assert (tmp_path / "follower" / "updates.jsonl").read_bytes() == run.log.trust.updates[0] + b"\n"


def test_a_peer_cannot_hand_us_a_forged_update(run, tmp_path):
    follower = ProvenanceLog(tmp_path / "follower", TrustRoot(run.signed))
    mallory = Identity.generate()
    run.log.trust.updates.append(make_update(run.log.trust, [mallory], trainer_keys=[mallory.key_id]))  # bypass
    with pytest.raises(UpdateRejected) as e:
        apply_reply(follower, log_reply(run.log, LogRequest(have=0).encode()))
    assert e.value.reason == Reason.BAD_SIGNATURE and follower.trust.serial == 0 and follower.size == 0


# -- the audit ------------------------------------------------------------------------------------------

def rotated(run: Run) -> None:
    """The run as it ends after a planned rotation at v4: trainer -> successor."""
    run.log.learn_updates([revoke(run, run.log, from_version=4)])
    run.log.learn_keys({run.successor.key_id: run.successor.public_key})
    for v in (4, 5):
        run.log.append(sign_version(run.entry(v, trainer_key_id=run.successor.key_id, manifest_serial=1),
                                    run.successor))
    note = checkpoints.sign(run.log, run.successor)
    run.log.set_checkpoint(note, run.log.size)


def test_the_audit_verifies_a_rotated_run(run):
    rotated(run)
    report = audit(run.root)
    assert report.ok, report.failure
    assert [r.manifest_serial for r in report.records] == [0, 0, 0, 0, 1, 1]
    assert report.trust.serial == 1


def test_the_audit_refuses_a_tampered_update_file_and_a_missing_one(run):
    rotated(run)
    path = run.dir("trainer") / "updates.jsonl"
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"payload":"', b'"payload":"e', 1))
    assert failure(audit(run.root)) == "manifest"
    path.unlink()  # without the update, the successor's entries are not authorised
    report = audit(run.root)
    assert failure(report) == "unauthorised" and "#1" in report.failure.message


def test_the_audit_refuses_versions_the_revoked_key_signed_after_the_cut(run):
    rotated(run)
    d = run.dir("trainer")
    entries = ProvenanceLog(d, TrustRoot(run.signed)).entries[:4]
    head = run.log.records[3]  # the revoked trainer keeps signing: v4, under the old manifest
    envelope = sign_version(run.entry(4, parent_version=3, parent_entry=entry_hash(entries[3]),
                                      parent_sha256=head.adapter_sha256), run.trainer)
    (d / "entries.log").write_bytes(b"".join(len(e).to_bytes(8, "big") + e for e in entries + [envelope]))
    report = audit(run.root)
    assert failure(report) == "unauthorised" and "revoked from v4" in report.failure.message


# -- `swarm trust` ----------------------------------------------------------------------------------------

def test_swarm_trust_writes_an_update_that_only_the_owner_can_make(run, tmp_path):
    run.owner.save(tmp_path / "owner.key")
    run.trainer.save(tmp_path / "trainer.key")
    newcomer = Identity.generate()
    result = run_cli("trust", "--run", str(run.manifest_path), "--owner-key", str(tmp_path / "trainer.key"),
                     "--add-trainer-key", newcomer.key_id)
    assert result.returncode == 2 and "not the run's current owner" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not updates_path(run.manifest_path).exists()

    result = run_cli("trust", "--run", str(run.manifest_path), "--owner-key", str(tmp_path / "owner.key"),
                     "--remove-trainer-key", run.trainer.key_id)
    assert result.returncode == 2 and "--from-version" in result.stderr

    result = run_cli("trust", "--run", str(run.manifest_path), "--owner-key", str(tmp_path / "owner.key"),
                     "--add-trainer-key", newcomer.key_id, "--remove-trainer-key", run.trainer.key_id,
                     "--from-version", "9")
    assert result.returncode == 0, result.stderr
    assert "manifest update #1" in result.stdout and "revoked from v9" in result.stdout
    trust = TrustRoot(run.signed)
    assert trust.read(updates_path(run.manifest_path)) == 1
    assert trust.manifest.swarm.trainer_keys == (run.successor.key_id, newcomer.key_id)
    assert trust.head.from_version == 9

    listing = run_cli("trust", "--run", str(run.manifest_path), "--owner-key", str(tmp_path / "owner.key"))
    assert listing.returncode == 0 and "update #1" in listing.stdout


def test_a_node_refuses_to_start_on_a_forged_updates_file(run, tmp_path):
    mallory = Identity.generate()
    trust = TrustRoot(run.signed)
    updates_path(run.manifest_path).write_bytes(make_update(trust, [mallory], trainer_keys=[mallory.key_id]) + b"\n")
    mallory.save(tmp_path / "mallory.key")
    result = run_cli("node", "--run", str(run.manifest_path), "--key", str(tmp_path / "mallory.key"),
                     "--role", "trainer", "--workdir", str(tmp_path / "w"), timeout=60)
    assert result.returncode == 2 and "manifest update refused" in result.stderr and "bad_signature" in result.stderr
    assert "Traceback" not in result.stderr
    shutil.rmtree(tmp_path / "w", ignore_errors=True)


def test_swarm_audit_shows_the_update_and_which_versions_were_made_under_it(run):
    rotated(run)
    result = run_cli("audit", str(run.root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "owner update #1: trainers " + run.successor.key_id[:16] in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [(row[0], row[3]) for row in rows] == [("0", "-"), ("1", "-"), ("2", "-"), ("3", "-"), ("4", "#1"),
                                                   ("5", "#1")]
