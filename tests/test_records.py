"""NodeInfo records: owner-signed, run-bound, expiry-bound, strictly parsed."""
from __future__ import annotations

import dataclasses
import time

import pytest
from hivemind.dht.validation import DHTRecord
from hivemind.utils.serializer import MSGPackSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.envelope import sign_envelope
from crypto.identity import Identity
from swarm.records import NODEINFO_TYPE, Hardware, NodeInfo, sign_record, verify_record
from swarm.rejections import RecordRejected
from swarm.validator import RunRecordValidator, dht_key_id

NODES_KEY = "echo-swarm/test/0123/nodes"


def record_of(identity: Identity, digest="d" * 64, **changes) -> NodeInfo:
    now = time.time()
    base = NodeInfo(
        run_digest=digest, peer_id=identity.peer_id, key_id=identity.key_id, public_key=identity.public_key.hex(),
        hpke_keys={"x25519": identity.hpke_public().hex()}, addrs=("/ip4/127.0.0.1/tcp/1",),
        hardware=Hardware(cpu="cpu", cores=2, ram_gb=8.0, gpus=(("GPU", 24.0),), torch=True, engines=("llamacpp",)),
        decode_tok_s=123.0, role="rollout", role_pref="auto", state="ready", adapter_version=-1, software="t",
        issued_at=now, expires_at=now + 10,
    )
    return dataclasses.replace(base, **changes)


def test_round_trip():
    me = Identity.generate()
    info = record_of(me)
    assert verify_record(sign_record(info, me), owner_public_key_hex=me.public_key.hex(), run_digest="d" * 64,
                         expiration_time=info.expires_at) == info


@pytest.mark.parametrize(
    "attack, reason",
    [
        ("signed_by_other_key", "bad_signature"),
        ("describes_other_key", "wrong_owner"),
        ("names_another_peer_id", "wrong_peer_id"),
        ("other_run", "wrong_run"),
        ("longer_life_than_signed", "expiry_mismatch"),
        ("oversized", "oversize"),
        ("unknown_field", "schema"),
    ],
)
def test_each_forgery_is_rejected_with_its_reason(attack, reason):
    me, mallory = Identity.generate(), Identity.generate()
    info = record_of(me)
    owner, expiry, envelope = me.public_key.hex(), info.expires_at, None
    if attack == "signed_by_other_key":
        envelope = sign_record(info, mallory)
    elif attack == "describes_other_key":
        owner, envelope = mallory.public_key.hex(), sign_record(info, mallory)
    elif attack == "names_another_peer_id":  # mallory's own key, signing a record that claims my peer id
        owner = mallory.public_key.hex()
        forged = record_of(mallory, peer_id=me.peer_id)
        envelope = sign_record(forged, mallory)
    elif attack == "other_run":
        envelope = sign_record(record_of(me, digest="e" * 64), me)
    elif attack == "longer_life_than_signed":
        envelope, expiry = sign_record(info, me), info.expires_at + 3600
    elif attack == "oversized":
        envelope = b"x" * 10_000
    elif attack == "unknown_field":
        from crypto.canonical import canonical_json

        envelope = sign_envelope(NODEINFO_TYPE, canonical_json({**info.to_dict(), "evil": 1}), [me])
    with pytest.raises(RecordRejected) as err:
        verify_record(envelope, owner_public_key_hex=owner, run_digest="d" * 64, expiration_time=expiry)
    assert err.value.reason == reason


def test_validator_accepts_owner_records_and_counts_rejections_by_reason():
    me, mallory = Identity.generate(), Identity.generate()
    validator = RunRecordValidator("d" * 64, NODES_KEY)
    info = record_of(me)

    def rec(envelope, owner, key=NODES_KEY, expiry=info.expires_at):
        return DHTRecord(dht_key_id(key), MSGPackSerializer.dumps(owner), MSGPackSerializer.dumps(envelope), expiry)

    assert validator.validate(rec(sign_record(info, me), me.public_key.hex()))
    assert not validator.validate(rec(sign_record(info, mallory), me.public_key.hex()))
    assert not validator.validate(rec(sign_record(info, me), me.public_key.hex(), key="some/other/key"))
    assert not validator.validate(DHTRecord(dht_key_id(NODES_KEY), b"\xc1", b"\xc1", 0.0))
    assert validator.rejections() == {"bad_signature": 1, "unknown_key": 1, "schema": 1}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_record_decoder_only_raises_record_error(data):
    with pytest.raises(RecordRejected):
        verify_record(data, owner_public_key_hex="a" * 64, run_digest="d" * 64)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200), st.floats(allow_nan=False))
def test_validator_never_raises(subkey, value, expiry):
    validator = RunRecordValidator("d" * 64, NODES_KEY)
    assert validator.validate(DHTRecord(dht_key_id(NODES_KEY), subkey, value, expiry)) is False
