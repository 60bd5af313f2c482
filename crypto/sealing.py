"""Sealing: encrypt a body once, readable only by the listed recipients (HPKE, RFC 9180).

A fresh 32-byte content key per message encrypts the body once (ChaCha20-Poly1305 by default,
AES-256-GCM as an option; the key is used for one message only, so the nonce is fixed at zero). The
content key is wrapped for each recipient with single-shot HPKE (base mode) from ``cryptography``.
The header -- suite, AEAD, context (run id, sender key id, message id) and the sorted recipient key
ids -- is canonical JSON, and ``AD = b"echo-swarm/seal/v1\\n" + header`` is every HPKE ``info``;
the body AEAD's associated data is ``AD + the wrap section`` (its exact bytes), so changing any byte
of a blob, another recipient's wrap included, makes it fail to open for everyone.

Suites: ``"x25519"`` = DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305;
``"mlkem768-x25519"`` = the post-quantum hybrid KEM MLKEM768-X25519 / HKDF-SHA256 / ChaCha20-Poly1305.

Sealing hides the body; it does not authenticate the sender (anyone may seal to a public key).
Seal a *signed envelope* and check its signer against ``context.sender_key_id`` after opening.

Blob format, version 1 (integers big-endian; nothing may follow the ciphertext)::

    b"ESSL" | version u8 = 1 | header_len u32 | header (canonical JSON)
    | per recipient, in header order: wrap_len u16 | HPKE enc || sealed content key
    | body_len u64 | AEAD(body) incl. 16-byte tag

    header = {"aead": "chacha20-poly1305" | "aes-256-gcm",
              "context": {"message_id": str, "run_id": str, "sender_key_id": str},
              "recipients": [key_id, ...] (sorted, unique), "suite": str, "v": 1}
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ._scratch import scratch
from .canonical import canonical_json, parse_json
from .errors import CanonicalError, SealError
from .identity import HPKE_SUITES, Identity

MAGIC = b"ESSL"
VERSION = 1
MAX_RECIPIENTS = 256
MAX_HEADER = 64 * 1024
MAX_FIELD = 256
_AD_LABEL = b"echo-swarm/seal/v1\n"
_NONCE = bytes(12)
_KEY_LEN = 32
_TAG = 16
_AEADS = {"chacha20-poly1305": ChaCha20Poly1305, "aes-256-gcm": AESGCM}
_HPKE = {
    "x25519": hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
    "mlkem768-x25519": hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
}
_PUBLIC_LEN = {"x25519": 32, "mlkem768-x25519": 1184 + 32}
_WRAP_LEN = {
    "x25519": hpke.KEM.X25519.enc_length() + _KEY_LEN + _TAG,
    "mlkem768-x25519": hpke.KEM.MLKEM768_X25519.enc_length() + _KEY_LEN + _TAG,
}
assert set(_HPKE) == set(HPKE_SUITES)


@dataclass(frozen=True)
class SealContext:
    run_id: str
    sender_key_id: str
    message_id: str


@dataclass(frozen=True)
class Opened:
    context: SealContext
    body: bytes


@functools.lru_cache(maxsize=1024)
def _public_key(suite: str, data: bytes) -> Any:
    if len(data) != _PUBLIC_LEN[suite]:
        raise SealError(f"a {suite} recipient public key is {_PUBLIC_LEN[suite]} bytes, got {len(data)}")
    try:
        if suite == "x25519":
            return x25519.X25519PublicKey.from_public_bytes(data)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(data[:1184]),
            x25519.X25519PublicKey.from_public_bytes(data[1184:]),
        )
    except ValueError as exc:
        raise SealError(f"invalid {suite} recipient public key: {exc}") from None


def _context_dict(context: SealContext) -> dict[str, str]:
    fields = {"message_id": context.message_id, "run_id": context.run_id, "sender_key_id": context.sender_key_id}
    for name, value in fields.items():
        if not isinstance(value, str) or len(value) > MAX_FIELD:
            raise SealError(f"seal context {name} must be a string of at most {MAX_FIELD} chars")
    return fields


def seal(
    body: bytes,
    recipients: Mapping[str, bytes],
    context: SealContext,
    suite: str = "x25519",
    *,
    aead: str = "chacha20-poly1305",
) -> bytes:
    """Encrypt ``body`` once for every recipient (key id -> HPKE public key bytes of ``suite``)."""
    if suite not in _HPKE:
        raise SealError(f"unknown suite {suite!r}; known: {', '.join(_HPKE)}")
    if aead not in _AEADS:
        raise SealError(f"unknown AEAD {aead!r}; known: {', '.join(_AEADS)}")
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise SealError(f"a sealed message needs 1..{MAX_RECIPIENTS} recipients")
    key_ids = sorted(recipients)
    if not all(isinstance(k, str) and 0 < len(k) <= MAX_FIELD for k in key_ids):
        raise SealError("recipient key ids must be non-empty strings")
    try:
        header = canonical_json(
            {"aead": aead, "context": _context_dict(context), "recipients": key_ids, "suite": suite, "v": VERSION}
        )
    except CanonicalError as exc:
        raise SealError(f"cannot encode the seal header: {exc}") from None
    ad = _AD_LABEL + header
    content_key = os.urandom(_KEY_LEN)
    wraps = []
    for key_id in key_ids:
        wrap = _HPKE[suite].encrypt(content_key, _public_key(suite, bytes(recipients[key_id])), ad)
        wraps += [struct.pack(">H", len(wrap)), wrap]
    wrap_bytes = b"".join(wraps)
    head = [MAGIC, bytes([VERSION]), struct.pack(">I", len(header)), header, wrap_bytes]
    with scratch(len(body) + _TAG) as ciphertext:  # framed (copied) into the blob, then dropped
        _AEADS[aead](content_key).encrypt_into(_NONCE, body, ad + wrap_bytes, ciphertext)
        return b"".join([*head, struct.pack(">Q", len(ciphertext)), ciphertext])


def _parse_header(raw: memoryview) -> dict[str, Any]:
    try:
        doc = parse_json(raw, max_size=MAX_HEADER)
    except CanonicalError as exc:
        raise SealError(f"sealed header: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"aead", "context", "recipients", "suite", "v"}:
        raise SealError("sealed header must have exactly aead, context, recipients, suite, v")
    if doc["v"] != VERSION or isinstance(doc["v"], bool):
        raise SealError(f"unsupported sealed header version {doc['v']!r}")
    if not isinstance(doc["suite"], str) or doc["suite"] not in _HPKE:
        raise SealError(f"unknown suite {doc['suite']!r}")
    if not isinstance(doc["aead"], str) or doc["aead"] not in _AEADS:
        raise SealError(f"unknown AEAD {doc['aead']!r}")
    ctx = doc["context"]
    if not isinstance(ctx, dict) or set(ctx) != {"message_id", "run_id", "sender_key_id"}:
        raise SealError("sealed context must have exactly message_id, run_id, sender_key_id")
    if not all(isinstance(v, str) and len(v) <= MAX_FIELD for v in ctx.values()):
        raise SealError("sealed context fields must be short strings")
    rcpt = doc["recipients"]
    if (
        not isinstance(rcpt, list)
        or not 1 <= len(rcpt) <= MAX_RECIPIENTS
        or not all(isinstance(k, str) for k in rcpt)
        or rcpt != sorted(set(rcpt))
    ):
        raise SealError("sealed recipients must be a sorted list of distinct key ids")
    try:
        canonical = canonical_json(doc) == raw
    except CanonicalError as exc:
        raise SealError(f"sealed header: {exc}") from None
    if not canonical:
        raise SealError("sealed header is not in canonical form")
    return doc


def open_sealed(blob: bytes, recipient: Identity, *, run_id: str, max_size: int) -> Opened:
    """Open a blob sealed to ``recipient`` for run ``run_id``; raise :class:`SealError` on any doubt."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise SealError(f"a sealed blob is bytes, not {type(blob).__name__}")
    view = memoryview(blob).cast("B")
    if len(view) > max_size:
        raise SealError(f"sealed blob is {len(view)} bytes, over the limit of {max_size}", "oversize")
    if len(view) < 9 or bytes(view[:4]) != MAGIC:
        raise SealError("not a sealed blob (bad magic or truncated)")
    if view[4] != VERSION:
        raise SealError(f"unsupported sealed blob version {view[4]}")
    (header_len,) = struct.unpack_from(">I", view, 5)
    pos = 9 + header_len
    if header_len > MAX_HEADER or pos > len(view):
        raise SealError("sealed header is truncated or too long")
    header = view[9:pos]
    doc = _parse_header(header)
    context = SealContext(**doc["context"])
    if context.run_id != run_id:
        raise SealError(f"sealed for run_id {context.run_id!r}, expected run_id {run_id!r}", "wrong_run")
    suite = doc["suite"]
    try:
        index = doc["recipients"].index(recipient.key_id)
    except ValueError:
        raise SealError("not a recipient: this blob is not sealed to our key id", "not_recipient") from None
    wrap, wraps_start = None, pos
    for i in range(len(doc["recipients"])):
        if pos + 2 > len(view):
            raise SealError("sealed blob is truncated in its key wraps")
        (wrap_len,) = struct.unpack_from(">H", view, pos)
        if wrap_len != _WRAP_LEN[suite] or pos + 2 + wrap_len > len(view):
            raise SealError("sealed key wrap has a wrong length or is truncated")
        if i == index:
            wrap = view[pos + 2 : pos + 2 + wrap_len]
        pos += 2 + wrap_len
    wraps_end = pos
    if pos + 8 > len(view):
        raise SealError("sealed blob is truncated before the body")
    (body_len,) = struct.unpack_from(">Q", view, pos)
    pos += 8
    if body_len != len(view) - pos or body_len < _TAG:
        raise SealError(f"sealed body is {len(view) - pos} bytes, header says {body_len} (truncated or trailing)")
    ad = _AD_LABEL + bytes(header)
    try:
        content_key = _HPKE[suite].decrypt(wrap, recipient.hpke_private_key(suite), ad)
    except (InvalidTag, ValueError):
        raise SealError("content key does not unwrap: tampered, wrong context, or sealed to another key",
                        "tampered") from None
    if len(content_key) != _KEY_LEN:
        raise SealError("unwrapped content key has the wrong length")
    try:
        body = _AEADS[doc["aead"]](content_key).decrypt(_NONCE, view[pos:], ad + bytes(view[wraps_start:wraps_end]))
    except InvalidTag:
        raise SealError("sealed body fails authentication: tampered or truncated", "tampered") from None
    return Opened(context, body)
