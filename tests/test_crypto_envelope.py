"""crypto.envelope: DSSE signatures over PAE; one test per attack, and fuzzing of every decoder."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.canonical import canonical_json
from crypto.envelope import (
    MAGIC,
    Verified,
    convert_envelope,
    pae,
    peek_envelope,
    sign_envelope,
    verify_envelope,
)
from crypto.errors import EnvelopeError, SignatureError
from crypto.identity import Identity

T = "application/vnd.echo-swarm.test+json"
ALICE = Identity.from_seed(b"\x0a" * 32)
BOB = Identity.from_seed(b"\x0b" * 32)
MALLORY = Identity.from_seed(b"\x0c" * 32)
TRUSTED = {ALICE.key_id: ALICE.public_key, BOB.key_id: BOB.public_key}
LIMIT = 1 << 20
ENCODINGS = ["binary", "json"]


def verify(data: bytes, **kw) -> Verified:
    args = {"trusted_keys": TRUSTED, "payload_types": {T}, "max_size": LIMIT, **kw}
    return verify_envelope(data, **args)


def as_json(data: bytes) -> dict:
    return json.loads(convert_envelope(data, encoding="json", max_size=LIMIT))


def from_json(doc: dict, encoding: str) -> bytes:
    return convert_envelope(canonical_json(doc), encoding=encoding, max_size=LIMIT)


def test_pae_matches_dsse_spec() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("é", b"") == "DSSEv1 2 é 0 ".encode()  # lengths count bytes, not characters


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("payload", [b"", b"{}", bytes(range(256)) * 40])
def test_round_trip(encoding: str, payload: bytes) -> None:
    env = sign_envelope(T, payload, [ALICE], encoding=encoding)
    result = verify(env)
    assert result == Verified(T, payload, frozenset({ALICE.key_id}))
    assert type(result.payload) is bytes
    assert peek_envelope(env, LIMIT) == (T, (ALICE.key_id,))


def test_encodings_carry_the_same_signatures() -> None:
    binary = sign_envelope(T, b"payload", [ALICE, BOB])
    as_text = convert_envelope(binary, encoding="json", max_size=LIMIT)
    assert as_text == sign_envelope(T, b"payload", [ALICE, BOB], encoding="json")  # Ed25519 is deterministic
    assert convert_envelope(as_text, encoding="binary", max_size=LIMIT) == binary
    assert binary.startswith(MAGIC) and binary.endswith(pae(T, b"payload"))
    doc = json.loads(as_text)
    assert doc["payload"] == base64.b64encode(b"payload").decode()
    assert [s["keyid"] for s in doc["signatures"]] == [ALICE.key_id, BOB.key_id]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_threshold(encoding: str) -> None:
    env = sign_envelope(T, b"x", [ALICE, BOB], encoding=encoding)
    assert verify(env, threshold=2).signer_key_ids == {ALICE.key_id, BOB.key_id}
    with pytest.raises(SignatureError, match="2 valid signature"):
        verify(env, threshold=3)
    with pytest.raises(ValueError):
        verify(env, threshold=0)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_wrong_key(encoding: str) -> None:
    env = sign_envelope(T, b"x", [MALLORY], encoding=encoding)
    with pytest.raises(SignatureError, match="0 valid"):
        verify(env)
    with pytest.raises(SignatureError):
        verify(sign_envelope(T, b"x", [ALICE], encoding=encoding), trusted_keys={BOB.key_id: BOB.public_key})


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_duplicate_signatures_count_once(encoding: str) -> None:
    doc = as_json(sign_envelope(T, b"x", [ALICE]))
    doc["signatures"] = doc["signatures"] * 3
    env = from_json(doc, encoding)
    assert verify(env).signer_key_ids == {ALICE.key_id}
    with pytest.raises(SignatureError, match="1 valid"):
        verify(env, threshold=2)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_keyid_spoofing(encoding: str) -> None:
    """Mallory signs and claims to be Alice: the claim is checked against Alice's key, and fails."""
    doc = as_json(sign_envelope(T, b"x", [MALLORY]))
    doc["signatures"][0]["keyid"] = ALICE.key_id
    with pytest.raises(SignatureError):
        verify(from_json(doc, encoding))
    # and Alice's genuine signature relabelled as Bob's does not make Bob a signer
    doc = as_json(sign_envelope(T, b"x", [ALICE]))
    doc["signatures"].append({"keyid": BOB.key_id, "sig": doc["signatures"][0]["sig"]})
    assert verify(from_json(doc, encoding)).signer_key_ids == {ALICE.key_id}
    with pytest.raises(SignatureError):
        verify(from_json(doc, encoding), threshold=2)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_unknown_keyids_are_ignored(encoding: str) -> None:
    doc = as_json(sign_envelope(T, b"x", [MALLORY, ALICE]))
    doc["signatures"].insert(0, {"keyid": "not-a-key", "sig": "AAAA"})
    assert verify(from_json(doc, encoding)).signer_key_ids == {ALICE.key_id}


def test_payload_types_must_be_a_collection() -> None:
    env = sign_envelope(T, b"x", [ALICE])
    with pytest.raises(TypeError):
        verify(env, payload_types=T + "/with-suffix")


def test_mismatched_trusted_keys_is_a_caller_bug() -> None:
    env = sign_envelope(T, b"x", [ALICE])
    with pytest.raises(ValueError, match="another id"):
        verify(env, trusted_keys={ALICE.key_id: BOB.public_key})


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_unknown_payload_type(encoding: str) -> None:
    env = sign_envelope("application/other", b"x", [ALICE], encoding=encoding)
    with pytest.raises(EnvelopeError, match="not accepted"):
        verify(env)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_payload_type_is_signed(encoding: str) -> None:
    """Relabelling the payload type (both are accepted here) breaks the signature."""
    doc = as_json(sign_envelope(T, b"x", [ALICE]))
    doc["payloadType"] = T + "2"
    with pytest.raises(SignatureError):
        verify(from_json(doc, encoding), payload_types={T, T + "2"})


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_oversized(encoding: str) -> None:
    env = sign_envelope(T, b"x" * 1000, [ALICE], encoding=encoding)
    verify(env, max_size=len(env))
    for fn in (lambda: verify(env, max_size=len(env) - 1), lambda: peek_envelope(env, len(env) - 1)):
        with pytest.raises(EnvelopeError, match="over the limit"):
            fn()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_truncation_is_rejected(encoding: str) -> None:
    env = sign_envelope(T, b"some payload", [ALICE], encoding=encoding)
    for n in range(len(env)):
        with pytest.raises((EnvelopeError, SignatureError)):
            verify(env[:n])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_trailing_bytes_rejected(encoding: str) -> None:
    env = sign_envelope(T, b"payload", [ALICE], encoding=encoding)
    with pytest.raises(EnvelopeError):
        verify(env + b"\x00")


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b'{"payload":"eA==","payloadType":"t","signatures":[]}',
        b'{"payload":"eA==","payloadType":"t"}',
        b'{"payload":"eA==","payloadType":"t","signatures":[{"keyid":"k"}]}',
        b'{"payload":"eA==","payloadType":"t","signatures":[{"keyid":"k","sig":"AAAA","x":1}]}',
        b'{"payload":"e A=","payloadType":"t","signatures":[{"keyid":"k","sig":"AAAA"}]}',
        b'{"payload":"eB==","payloadType":"t","signatures":[{"keyid":"k","sig":"AAAA"}]}',  # padding bits
        b'{"payload":"eA==","payloadType":"","signatures":[{"keyid":"k","sig":"AAAA"}]}',
        b'{"payload":"eA==","payloadType":1,"signatures":[{"keyid":"k","sig":"AAAA"}]}',
        b'{"payloadType":"t","payload":"eA==","signatures":[{"keyid":"k","sig":"AAAA"}]}',  # not canonical
        b'{"payload":"eA==", "payloadType":"t","signatures":[{"keyid":"k","sig":"AAAA"}]}',
        b'{"payload":"eA==","payloadType":"t","payloadType":"t","signatures":[{"keyid":"k","sig":"AAAA"}]}',
        b"[]",
        b"",
        b"DSSEv1 1 t 1 x",
        MAGIC,
        MAGIC + b"\x00DSSEv1 1 t 1 x",
        MAGIC + b"\x01\x01k\x01sDSSEv1 01 t 1 x",
        MAGIC + b"\x01\x01k\x01sDSSEv1 1 t 2 x",
        MAGIC + b"\x01\x01k\x01sDSSEv1 1 t -1 x",
        MAGIC + b"\x01\x01k\x01sDSSEv1 1 t +1 x",
        MAGIC + b"\x01\x01k\x01sDSSEv1 1 t1 x",
        MAGIC + b"\x01\x01\xff\x01sDSSEv1 1 t 1 x",
        MAGIC + b"\x01\x01k\x01sDSSEv1 1 \xff 1 x",
        MAGIC + b"\x01\x01k\x01sDSSEv1 99999999999999999999999 t 1 x",
        b"ESEV\x02\x01\x01k\x01sDSSEv1 1 t 1 x",
    ],
)
def test_malformed_envelopes(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        verify(data, payload_types={"t"})
    with pytest.raises(EnvelopeError):
        peek_envelope(data, LIMIT)


def test_signing_input_validation() -> None:
    with pytest.raises(ValueError):
        sign_envelope(T, b"x", [])
    with pytest.raises(EnvelopeError):
        sign_envelope("", b"x", [ALICE])
    with pytest.raises(ValueError):
        sign_envelope(T, b"x", [ALICE], encoding="xml")


def test_peek_trusts_nothing() -> None:
    env = sign_envelope(T, b"x", [MALLORY, BOB])
    assert peek_envelope(env, LIMIT) == (T, (MALLORY.key_id, BOB.key_id))


@pytest.mark.parametrize("encoding", ENCODINGS)
@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_any_flipped_byte_is_rejected(encoding: str, data) -> None:
    env = bytearray(sign_envelope(T, b'{"chunk":1}', [ALICE], encoding=encoding))
    index = data.draw(st.integers(0, len(env) - 1))
    env[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises((EnvelopeError, SignatureError)):
        verify(bytes(env), payload_types={T, T.upper()})


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: MAGIC + b),
                 st.binary(max_size=300).map(lambda b: b"{" + b)))
def test_fuzz_decoders_raise_only_envelope_errors(data: bytes) -> None:
    try:
        peek_envelope(data, 250)
    except EnvelopeError:
        pass
    try:
        verify(data, max_size=250, payload_types={T, "t"})
    except (EnvelopeError, SignatureError):
        pass


@settings(deadline=None, max_examples=200)
@given(st.binary(min_size=0, max_size=40), st.integers(0, 3), st.binary(max_size=30))
def test_fuzz_binary_structure(sig_area: bytes, count: int, tail: bytes) -> None:
    data = MAGIC + bytes([count]) + sig_area + b"DSSEv1 " + tail
    with pytest.raises((EnvelopeError, SignatureError)):
        verify(data, payload_types={T, "t"})
