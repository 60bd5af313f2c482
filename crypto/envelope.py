"""Signed envelopes: DSSE (github.com/secure-systems-lab/dsse), with a compact binary wire form.

Every signature is Ed25519 over ``PAE(type, body) = b"DSSEv1 " + len(type) + b" " + type + b" " +
len(body) + b" " + body`` (lengths in ASCII decimal), so the payload type is signed too and the
verifier returns exactly the bytes it verified; callers parse those, never a re-encoding.

Two encodings carry the same signatures and both verify:

* ``"json"``: the DSSE JSON envelope as canonical JSON,
  ``{"payload":b64,"payloadType":str,"signatures":[{"keyid":hex,"sig":b64}]}`` (standard base64 with
  padding). For records, logs and anything a human or another DSSE tool reads. We accept only the
  canonical form (so no byte of a valid envelope can change and still verify), each signature entry
  with exactly ``keyid`` and ``sig``.
* ``"binary"`` (the default, for bulk data): base64 and a JSON string scan of a multi-MiB payload
  cost more than the AEAD that seals it, so the wire form embeds the PAE bytes verbatim::

      b"ESEV" | version u8 = 1 | n u8 (1..64) | n x (u8 len, keyid ASCII, u8 len, signature)
      | PAE(type, body)   -- to the end of the data; body length must match exactly

  The verifier checks the signatures over that trailing slice in place (no copy).

Key ids are the hex SHA-256 of the raw Ed25519 public key (``crypto.identity.key_id_of``); they are
hints only: a signature counts for key K only if K's public key verifies it, each key counts once,
and a key is tried at most once per envelope (so a flood of bogus signatures costs one check per
trusted key, not one per signature).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from ._scratch import scratch
from .canonical import canonical_json, parse_json
from .errors import CanonicalError, EnvelopeError, SignatureError
from .identity import Identity, key_id_of, verify_signature

MAGIC = b"ESEV\x01"
MAX_SIGNATURES = 64
MAX_TYPE_LENGTH = 256
_PAE_PREFIX = b"DSSEv1 "


@dataclass(frozen=True)
class Verified:
    payload_type: str
    payload: bytes
    signer_key_ids: frozenset[str]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: the exact bytes every signature covers."""
    return _pae_header(payload_type, len(payload)) + payload


def _check_type(payload_type: str) -> None:
    if not isinstance(payload_type, str) or not payload_type or len(payload_type) > MAX_TYPE_LENGTH:
        raise EnvelopeError(f"payload type must be a non-empty string of at most {MAX_TYPE_LENGTH} chars")


def sign_envelope(
    payload_type: str, payload: bytes, signers: Sequence[Identity], *, encoding: str = "binary"
) -> bytes:
    """Sign ``payload`` as ``payload_type`` by every signer; ``encoding`` is "binary" or "json"."""
    _check_type(payload_type)
    if not signers or len(signers) > MAX_SIGNATURES:
        raise ValueError(f"an envelope needs 1..{MAX_SIGNATURES} signers")
    header = _pae_header(payload_type, len(payload))
    with scratch(len(header) + len(payload)) as body:  # the PAE is signed, then dropped
        body[: len(header)] = header
        body[len(header) :] = payload
        sigs = [(s.key_id, s.sign(body)) for s in signers]
    return _encode(payload_type, payload, header, sigs, encoding)


def _pae_header(payload_type: str, payload_len: int) -> bytes:
    t = payload_type.encode("utf-8")
    return b"".join([_PAE_PREFIX, b"%d " % len(t), t, b" %d " % payload_len])


def _encode(payload_type: str, payload, header: bytes, sigs: list[tuple[str, bytes]], encoding: str) -> bytes:
    """``header`` is the PAE up to the payload: the binary form ends with ``header + payload``."""
    if encoding == "binary":
        parts = [MAGIC, bytes([len(sigs)])]
        for keyid, sig in sigs:
            try:
                kid = keyid.encode("ascii")
            except UnicodeEncodeError:
                raise EnvelopeError("a binary envelope keyid must be ASCII") from None
            if len(kid) > 255 or len(sig) > 255:
                raise EnvelopeError("a binary envelope keyid or signature is over 255 bytes")
            parts += [bytes([len(kid)]), kid, bytes([len(sig)]), sig]
        parts += [header, payload]
        return b"".join(parts)
    if encoding == "json":
        return canonical_json({
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": payload_type,
            "signatures": [{"keyid": k, "sig": base64.b64encode(s).decode("ascii")} for k, s in sigs],
        })
    raise ValueError(f"unknown envelope encoding {encoding!r} (binary or json)")


# -- decoding (untrusted) ---------------------------------------------------------------------------
def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"envelope {what} is not a string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise EnvelopeError(f"envelope {what} is not valid base64") from None
    if base64.b64encode(raw) != text.encode("ascii"):  # nonzero padding bits: another spelling of raw
        raise EnvelopeError(f"envelope {what} is not canonical base64")
    return raw


def _decimal(view: memoryview, pos: int) -> tuple[int, int]:
    """Read ``digits b" "`` at ``pos``: canonical decimal (no sign, no leading zero), at most 20 digits."""
    head = bytes(view[pos : pos + 21])
    end = head.find(b" ")
    digits = head[:end]
    if end <= 0 or not digits.isdigit() or (len(digits) > 1 and digits[0:1] == b"0"):
        raise EnvelopeError("envelope PAE has a malformed length field")
    return int(digits), pos + end + 1


def _decode_pae(view: memoryview) -> tuple[str, memoryview]:
    if bytes(view[:7]) != _PAE_PREFIX:
        raise EnvelopeError("envelope PAE does not start with 'DSSEv1 '")
    type_len, pos = _decimal(view, 7)
    if type_len > MAX_TYPE_LENGTH * 4 or pos + type_len + 1 > len(view):
        raise EnvelopeError("envelope PAE payload type is truncated or too long")
    try:
        payload_type = bytes(view[pos : pos + type_len]).decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("envelope payload type is not valid UTF-8") from None
    pos += type_len
    if view[pos] != 0x20:
        raise EnvelopeError("envelope PAE is missing a separator after the payload type")
    body_len, pos = _decimal(view, pos + 1)
    if body_len != len(view) - pos:
        raise EnvelopeError(f"envelope payload is {len(view) - pos} bytes but PAE says {body_len}")
    return payload_type, view[pos:]


def _decode(data: bytes, max_size: int) -> tuple[str, bytes | memoryview, bytes | memoryview, list]:
    """-> (payload_type, payload, pae_bytes, [(keyid, sig)]) with no trust decision made."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError(f"an envelope is bytes, not {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) > max_size:
        raise EnvelopeError(f"envelope is {len(view)} bytes, over the limit of {max_size}")
    if bytes(view[:1]) == b"{":
        payload_type, payload, sigs = _decode_json(view, max_size)
        _check_type(payload_type)
        return payload_type, payload, pae(payload_type, payload), sigs
    if bytes(view[:5]) != MAGIC:
        raise EnvelopeError("not an envelope: unknown encoding or version")
    n, pos, sigs = view[5] if len(view) > 5 else 0, 6, []
    if not 1 <= n <= MAX_SIGNATURES:
        raise EnvelopeError(f"envelope must carry 1..{MAX_SIGNATURES} signatures")
    for _ in range(n):
        fields = []
        for _what in ("keyid", "signature"):
            if pos >= len(view) or pos + 1 + view[pos] > len(view):
                raise EnvelopeError("envelope is truncated in its signature list")
            fields.append(bytes(view[pos + 1 : pos + 1 + view[pos]]))
            pos += 1 + view[pos]
        try:
            sigs.append((fields[0].decode("ascii"), fields[1]))
        except UnicodeDecodeError:
            raise EnvelopeError("envelope keyid is not ASCII") from None
    body = view[pos:]
    payload_type, payload = _decode_pae(body)
    _check_type(payload_type)
    return payload_type, payload, body, sigs


def _decode_json(view: memoryview, max_size: int) -> tuple[str, bytes, list]:
    try:
        doc = parse_json(view, max_size=max_size)
    except CanonicalError as exc:
        raise EnvelopeError(f"envelope JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"payload", "payloadType", "signatures"}:
        raise EnvelopeError("envelope JSON must have exactly payload, payloadType, signatures")
    sig_list = doc["signatures"]
    if not isinstance(sig_list, list) or not 1 <= len(sig_list) <= MAX_SIGNATURES:
        raise EnvelopeError(f"envelope must carry 1..{MAX_SIGNATURES} signatures")
    sigs = []
    for item in sig_list:
        if not isinstance(item, dict) or set(item) != {"keyid", "sig"} or not isinstance(item["keyid"], str):
            raise EnvelopeError("envelope signature entries must be {keyid: str, sig: base64}")
        sigs.append((item["keyid"], _b64(item["sig"], "signature")))
    if not isinstance(doc["payloadType"], str):
        raise EnvelopeError("envelope payloadType is not a string")
    try:
        canonical = canonical_json(doc) == view  # one spelling only
    except CanonicalError as exc:
        raise EnvelopeError(f"envelope JSON: {exc}") from None
    if not canonical:
        raise EnvelopeError("envelope JSON is not in canonical form")
    return doc["payloadType"], _b64(doc["payload"], "payload"), sigs


def peek_envelope(data: bytes, max_size: int) -> tuple[str, tuple[str, ...]]:
    """(payload_type, claimed keyids) of a well-formed envelope. Nothing here is verified or trusted."""
    payload_type, _payload, _body, sigs = _decode(data, max_size)
    return payload_type, tuple(k for k, _ in sigs)


def peek_payload(data: bytes, max_size: int) -> tuple[str, bytes]:
    """(payload_type, payload) of a well-formed envelope, unverified: only to learn which keys must
    have signed it. Trust nothing in it before ``verify_envelope``."""
    payload_type, payload, _body, _sigs = _decode(data, max_size)
    return payload_type, bytes(payload)


def verify_envelope(
    data: bytes,
    *,
    trusted_keys: Mapping[str, bytes],
    payload_types: Collection[str],
    threshold: int = 1,
    max_size: int,
) -> Verified:
    """Check size, form, payload type and at least ``threshold`` distinct trusted signers.

    ``trusted_keys`` maps key id -> raw Ed25519 public key. Returns the verified payload bytes.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    if isinstance(payload_types, str):  # "a" in "abc" would be a substring test
        raise TypeError("payload_types is a collection of payload type strings, not one string")
    payload_type, payload, body, sigs = _decode(data, max_size)
    if payload_type not in payload_types:
        raise EnvelopeError(f"payload type {payload_type!r} is not accepted here")
    tried: set[str] = set()
    signers: set[str] = set()
    for keyid, sig in sigs:
        if keyid in tried or keyid not in trusted_keys:
            continue
        tried.add(keyid)
        public_key = trusted_keys[keyid]
        if key_id_of(public_key) != keyid:
            raise ValueError(f"trusted_keys maps key id {keyid[:16]}… to a key with another id")
        if verify_signature(public_key, sig, body):
            signers.add(keyid)
    if len(signers) < threshold:
        raise SignatureError(
            f"envelope has {len(signers)} valid signature(s) from trusted keys, {threshold} required"
        )
    return Verified(payload_type, bytes(payload), frozenset(signers))


def convert_envelope(data: bytes, *, encoding: str, max_size: int) -> bytes:
    """Re-encode an envelope (e.g. binary wire form -> DSSE JSON for a log); signatures are kept as is."""
    payload_type, payload, _body, sigs = _decode(data, max_size)
    return _encode(payload_type, payload, _pae_header(payload_type, len(payload)), sigs, encoding)
