"""Golden vectors (crypto/golden/*.json): fixed seeds and inputs must keep giving the committed bytes.

A failure here means a wire format or key derivation changed: existing keys, peer ids, signatures or
sealed data would stop matching. Regenerate only deliberately: ``python -m crypto.golden_gen --write``.
"""

from __future__ import annotations

import json

import pytest

from crypto import golden_gen
from crypto.envelope import pae, peek_envelope, sign_envelope, verify_envelope
from crypto.identity import HPKE_SUITES, Identity, key_id_of, verify_signature
from crypto.sealing import SealContext, open_sealed

IDENTITY = golden_gen.load("identity")
ENVELOPE = golden_gen.load("envelope")
SEALING = golden_gen.load("sealing")


def ident(name: str) -> Identity:
    return Identity.from_seed(bytes.fromhex(IDENTITY["identities"][name]["seed"]))


@pytest.mark.parametrize("name", sorted(IDENTITY["identities"]))
def test_identity_vectors(name: str) -> None:
    v = IDENTITY["identities"][name]
    me = ident(name)
    assert me.public_key.hex() == v["public_key"]
    assert me.key_id == v["key_id"] == key_id_of(bytes.fromhex(v["public_key"]))
    assert me.peer_id == v["peer_id"]
    assert me.libp2p_private_key().hex() == v["libp2p_private_key"]
    assert v["libp2p_private_key"].endswith(v["libp2p_public_key"][8:])
    for suite in HPKE_SUITES:
        assert me.hpke_public(suite).hex() == v["hpke_public"][suite]
    message = bytes.fromhex(IDENTITY["message"])
    assert me.sign(message).hex() == v["signature_of_message"]
    assert verify_signature(me.public_key, bytes.fromhex(v["signature_of_message"]), message)


def test_pae_vectors() -> None:
    spec = ENVELOPE["dsse_spec_pae"]
    assert pae(spec["payload_type"], bytes.fromhex(spec["payload"])).hex() == spec["pae"]
    assert pae(ENVELOPE["payload_type"], bytes.fromhex(ENVELOPE["payload"])).hex() == ENVELOPE["pae"]


@pytest.mark.parametrize(("case", "signers"), [("signed_by_alice", ["alice"]),
                                               ("signed_by_alice_and_bob", ["alice", "bob"])])
@pytest.mark.parametrize("encoding", ["binary", "json"])
def test_envelope_vectors(case: str, signers: list[str], encoding: str) -> None:
    payload_type, payload = ENVELOPE["payload_type"], bytes.fromhex(ENVELOPE["payload"])
    ids = [ident(n) for n in signers]
    expected = ENVELOPE[case][encoding]
    expected = bytes.fromhex(expected) if encoding == "binary" else expected.encode("utf-8")
    assert sign_envelope(payload_type, payload, ids, encoding=encoding) == expected
    result = verify_envelope(expected, trusted_keys={i.key_id: i.public_key for i in ids},
                             payload_types={payload_type}, threshold=len(ids), max_size=1 << 16)
    assert result.payload == payload and result.signer_key_ids == {i.key_id for i in ids}
    assert peek_envelope(expected, 1 << 16) == (payload_type, tuple(i.key_id for i in ids))
    if encoding == "json":
        doc = json.loads(expected)
        assert doc["payloadType"] == payload_type and len(doc["signatures"]) == len(ids)


@pytest.mark.parametrize("case", sorted(SEALING["blobs"]))
@pytest.mark.parametrize("name", SEALING["recipients"])
def test_sealed_vectors_still_open(case: str, name: str) -> None:
    blob = bytes.fromhex(SEALING["blobs"][case])
    opened = open_sealed(blob, ident(name), run_id=SEALING["context"]["run_id"], max_size=1 << 16)
    assert opened.body == bytes.fromhex(SEALING["body"])
    assert opened.context == SealContext(**SEALING["context"])


def test_generator_reproduces_the_deterministic_files() -> None:
    assert golden_gen.identity_vectors() == IDENTITY
    assert golden_gen.envelope_vectors() == ENVELOPE
