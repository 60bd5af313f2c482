"""crypto.sealing: HPKE-wrapped content keys; one test per attack, and fuzzing of the decoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crypto.canonical import canonical_json, parse_json
from crypto.envelope import sign_envelope, verify_envelope
from crypto.errors import SealError
from crypto.identity import HPKE_SUITES, Identity
from crypto.sealing import MAGIC, SealContext, open_sealed, seal

ALICE = Identity.from_seed(b"\x1a" * 32)
TRAINER1 = Identity.from_seed(b"\x1b" * 32)
TRAINER2 = Identity.from_seed(b"\x1c" * 32)
OUTSIDER = Identity.from_seed(b"\x1d" * 32)
RUN = "run-1"
CTX = SealContext(RUN, ALICE.key_id, "chunk-0001")
LIMIT = 1 << 22
AEADS = ["chacha20-poly1305", "aes-256-gcm"]


def to(*idents: Identity, suite: str = "x25519") -> dict[str, bytes]:
    return {i.key_id: i.hpke_public(suite) for i in idents}


def split(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """(prefix up to header length, header, rest) of a version-1 blob."""
    (n,) = struct.unpack_from(">I", blob, 5)
    return blob[:5], blob[9 : 9 + n], blob[9 + n :]


def with_header(blob: bytes, header: bytes) -> bytes:
    prefix, _, rest = split(blob)
    return prefix + struct.pack(">I", len(header)) + header + rest


def open_(blob: bytes, who: Identity = TRAINER1, **kw):
    return open_sealed(blob, who, **{"run_id": RUN, "max_size": LIMIT, **kw})


@pytest.mark.parametrize("suite", HPKE_SUITES)
@pytest.mark.parametrize("aead", AEADS)
@pytest.mark.parametrize("body", [b"", b"x", bytes(range(256)) * 300])
def test_round_trip_every_recipient(suite: str, aead: str, body: bytes) -> None:
    blob = seal(body, to(TRAINER1, TRAINER2, suite=suite), CTX, suite, aead=aead)
    for who in (TRAINER1, TRAINER2):
        opened = open_(blob, who)
        assert opened.body == body and opened.context == CTX


def test_sign_seal_open_verify() -> None:
    env = sign_envelope("chunk", b"trajectories", [ALICE])
    opened = open_(seal(env, to(TRAINER1), CTX))
    verified = verify_envelope(opened.body, trusted_keys={ALICE.key_id: ALICE.public_key},
                               payload_types={"chunk"}, max_size=LIMIT)
    assert verified.payload == b"trajectories"
    assert verified.signer_key_ids == {opened.context.sender_key_id}


def test_body_encrypted_once_and_sealing_is_randomized() -> None:
    body = b"B" * 10_000
    one, three = seal(body, to(TRAINER1), CTX), seal(body, to(TRAINER1, TRAINER2, OUTSIDER), CTX)
    assert len(three) - len(one) < 3 * 100  # recipients add a key wrap each, not a body copy
    assert seal(body, to(TRAINER1), CTX) != one
    assert b"B" * 64 not in one


@pytest.mark.parametrize("suite", HPKE_SUITES)
def test_not_a_recipient(suite: str) -> None:
    blob = seal(b"secret", to(TRAINER1, suite=suite), CTX, suite)
    with pytest.raises(SealError, match="not a recipient") as e:
        open_(blob, OUTSIDER)
    assert e.value.reason == "not_recipient"


@pytest.mark.parametrize("suite", HPKE_SUITES)
def test_wrong_key_under_a_recipients_key_id(suite: str) -> None:
    """Sealed to the outsider's key but labelled with trainer1's key id: trainer1 cannot unwrap it."""
    blob = seal(b"secret", {TRAINER1.key_id: OUTSIDER.hpke_public(suite)}, CTX, suite)
    with pytest.raises(SealError, match="does not unwrap"):
        open_(blob, TRAINER1)


def test_wrong_run_id() -> None:
    blob = seal(b"secret", to(TRAINER1), CTX)
    with pytest.raises(SealError, match="expected run_id 'run-2'") as e:
        open_(blob, run_id="run-2")
    assert e.value.reason == "wrong_run"  # callers count this without parsing the message


@pytest.mark.parametrize("suite", HPKE_SUITES)
def test_every_truncation_and_trailing_bytes(suite: str) -> None:
    blob = seal(b"body", to(TRAINER1, suite=suite), CTX, suite)
    for n in range(len(blob)):
        with pytest.raises(SealError):
            open_(blob[:n])
    with pytest.raises(SealError, match="trailing"):
        open_(blob + b"\x00")


def test_oversized_checked_first() -> None:
    blob = seal(b"x" * 1000, to(TRAINER1), CTX)
    assert open_(blob, max_size=len(blob)).body == b"x" * 1000
    with pytest.raises(SealError, match="over the limit") as e:
        open_(blob, max_size=len(blob) - 1)
    assert e.value.reason == "oversize"
    with pytest.raises(SealError, match="over the limit"):
        open_(b"\xff" * 100, max_size=99)


def test_unknown_suite() -> None:
    with pytest.raises(SealError, match="unknown suite"):
        seal(b"x", to(TRAINER1), CTX, "p256")
    blob = seal(b"x", to(TRAINER1), CTX)
    header = parse_json(split(blob)[1], max_size=LIMIT)
    header["suite"] = "x448"
    with pytest.raises(SealError, match="unknown suite") as e:
        open_(with_header(blob, canonical_json(header)))
    assert e.value.reason == "malformed"


def test_unknown_aead_and_version() -> None:
    with pytest.raises(SealError, match="unknown AEAD"):
        seal(b"x", to(TRAINER1), CTX, aead="aes-128-cbc")
    blob = seal(b"x", to(TRAINER1), CTX)
    for field, value, match in (("aead", "rot13", "unknown AEAD"), ("v", 2, "version")):
        header = parse_json(split(blob)[1], max_size=LIMIT)
        header[field] = value
        with pytest.raises(SealError, match=match):
            open_(with_header(blob, canonical_json(header)))
    with pytest.raises(SealError, match="version 2"):
        open_(blob[:4] + b"\x02" + blob[5:])


def test_context_swap_is_detected() -> None:
    """Same length, different message id: the other blob's header (AD) does not fit this body."""
    a = seal(b"body A", to(TRAINER1), SealContext(RUN, ALICE.key_id, "chunk-0001"))
    b = seal(b"body B", to(TRAINER1), SealContext(RUN, ALICE.key_id, "chunk-0002"))
    assert len(split(a)[1]) == len(split(b)[1])
    with pytest.raises(SealError, match="does not unwrap"):
        open_(with_header(a, split(b)[1]))


def test_context_rewrite_is_detected() -> None:
    blob = seal(b"body", to(TRAINER1), CTX)
    for field, value in (("sender_key_id", OUTSIDER.key_id), ("message_id", "chunk-0002")):
        header = parse_json(split(blob)[1], max_size=LIMIT)
        header["context"][field] = value
        with pytest.raises(SealError):
            open_(with_header(blob, canonical_json(header)))


def test_mix_and_match_wraps_and_bodies() -> None:
    """Parts of two blobs with the same header bytes do not combine: each content key is fresh."""
    a, b = seal(b"body A", to(TRAINER1), CTX), seal(b"body B", to(TRAINER1), CTX)
    cut = len(a) - (len(b"body A") + 16)
    with pytest.raises(SealError, match="fails authentication") as e:
        open_(a[:cut] + b[cut:])
    assert e.value.reason == "tampered"


def test_recipient_list_cannot_be_edited() -> None:
    blob = seal(b"body", to(TRAINER1), CTX)
    header = parse_json(split(blob)[1], max_size=LIMIT)
    header["recipients"] = sorted([TRAINER1.key_id, OUTSIDER.key_id])
    with pytest.raises(SealError):
        open_(with_header(blob, canonical_json(header)))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h: h.replace(b'{"aead"', b'{ "aead"'), "canonical"),
        (lambda h: h.replace(b'"v":1', b'"v":true'), "version"),
        (lambda h: h.replace(b'"v":1', b'"v":1,"v":1'), "duplicate"),
        (lambda h: h.replace(b'"v":1', b'"v":1,"w":1'), "exactly"),
        (lambda h: h.replace(b'"run_id"', b'"run_idx"'), "exactly"),
        (lambda h: h.replace(b'"suite":"x25519"', b'"suite":["x25519"]'), "unknown suite"),
        (lambda h: h.replace(b'"aead":"chacha20-poly1305"', b'"aead":{}'), "unknown AEAD"),
        (lambda h: h.replace(b'"message_id":"chunk-0001"', b'"message_id":1'), "short strings"),
        (lambda h: h.replace(b'"recipients":["', b'"recipients":[1,"'), "sorted list"),
        (lambda h: h[:-1], "malformed"),
        (lambda h: b"\xff" + h, "UTF-8"),
    ],
)
def test_malformed_header(edit, match: str) -> None:
    blob = seal(b"body", to(TRAINER1), CTX)
    with pytest.raises(SealError, match=match):
        open_(with_header(blob, edit(split(blob)[1])))


@pytest.mark.parametrize(
    "recipients",
    [{}, {"k": b"\x00" * 31}, {"k": b"\x00" * 33}, {"": b"\x00" * 32}],
)
def test_seal_input_validation(recipients) -> None:
    with pytest.raises(SealError):
        seal(b"x", recipients, CTX)


def test_seal_rejects_a_hybrid_key_for_x25519() -> None:
    with pytest.raises(SealError, match="32 bytes"):
        seal(b"x", to(TRAINER1, suite="mlkem768-x25519"), CTX, "x25519")


@pytest.mark.parametrize("suite", HPKE_SUITES)
@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_any_flipped_byte_is_rejected(suite: str, data) -> None:
    blob = bytearray(seal(b"a signed envelope would be here", to(TRAINER1, TRAINER2, suite=suite), CTX, suite))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SealError):
        open_(bytes(blob))


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.binary(max_size=400), st.binary(max_size=400).map(lambda b: MAGIC + b"\x01" + b)))
def test_fuzz_open_raises_only_seal_error(data: bytes) -> None:
    with pytest.raises(SealError):
        open_(data, max_size=350)


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_fuzz_after_a_valid_header(wraps: bytes, tail: bytes) -> None:
    _, header, _ = split(seal(b"x", to(TRAINER1), CTX))
    data = MAGIC + b"\x01" + struct.pack(">I", len(header)) + header + wraps + tail
    with pytest.raises(SealError):
        open_(data)


JSON_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)


@settings(deadline=None, max_examples=200)
@given(st.fixed_dictionaries({}, optional={k: JSON_ANY for k in ("aead", "context", "recipients", "suite", "v", "x")}))
def test_fuzz_header_fields(fields: dict) -> None:
    blob = seal(b"body", to(TRAINER1), CTX)
    header = parse_json(split(blob)[1], max_size=LIMIT)
    assume(any(header.get(k) != v for k, v in fields.items()))
    header.update(fields)
    with pytest.raises(SealError):
        open_(with_header(blob, canonical_json(header)))
