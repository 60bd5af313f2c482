"""C2SP signed notes (https://c2sp.org/signed-note), as golang.org/x/mod/sumdb/note does them.

A signed note is UTF-8 text ending in a newline, a blank line, then one or more signature lines::

    <text, ending in \\n>
    \\n
    — <key name> <base64(4-byte key hash || signature)>\\n      (em dash U+2014, then a space)

The key hash is ``SHA-256(name || "\\n" || type byte || public key)[:4]``, read big-endian. Types
here: ``0x01`` Ed25519 over the text, ``0x04`` Ed25519 witness cosignature (C2SP tlog-cosignature:
the blob is an 8-byte big-endian POSIX time then Ed25519 over ``"cosignature/v1\\ntime <t>\\n" +
text``; see ``crypto.checkpoint``). Keys have Go's text forms: ``<name>+<hash hex>+<base64(type ||
key)>`` for a verifier and ``PRIVATE+KEY+<name>+<hash hex>+<base64(type || seed)>`` for a signer.

:func:`open_note` follows Go's ``note.Open``: the whole note must be UTF-8 without control characters
other than newline; the text ends at the last blank line; at most 100 signature lines; a line whose
(name, key hash) no verifier claims is kept as unverified (once per identical line); a key with two
verifiers is an error (``ambiguous_key``); a known key's signature that does not verify fails the
whole note; a key's repeated signatures count once; and at least one must verify. Every failure is
a :class:`NoteError` with a ``reason`` (Go's error in brackets): ``malformed`` [malformed note],
``oversize``, ``unknown_key`` [note has no verifiable signatures], ``ambiguous_key`` [ambiguous
key], ``invalid_signature`` [invalid signature for key]; key texts fail with ``malformed_key``,
``unknown_algorithm`` or ``key_hash`` [malformed verifier id / unknown algorithm / invalid hash].
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import CryptoError
from .identity import Identity, verify_signature

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
KEY_TYPES = (SIG_ED25519, SIG_COSIGNATURE_V1)
MAX_SIGNATURES = 100
MAX_NOTE_SIZE = 1 << 20
"""Default cap on a note's bytes in :func:`open_note` (Go has none; its 100-signature cap remains)."""
COSIGNATURE_V1_HEADER = b"cosignature/v1\n"
MAX_TIMESTAMP = (1 << 63) - 1

_DASH = "— ".encode()
_B64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f]")
# Go's unicode.IsSpace: Latin-1 \t \n \v \f \r space U+0085 U+00A0, then Unicode White_Space.
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


class NoteError(CryptoError):
    """A signed note (or a key text) is rejected; ``reason`` is one short word (see the module doc)."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def _malformed(why: str) -> NoteError:
    return NoteError(f"malformed note: {why}", "malformed")


def is_valid_name(name: object) -> bool:
    """A key name: non-empty, encodable UTF-8, no Unicode space (Go's ``unicode.IsSpace``), no '+'."""
    if not isinstance(name, str) or not name or "+" in name or any(c in _SPACES for c in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogate
        return False
    return True


def key_hash(name: str, key_type: int, public_key: bytes) -> int:
    """C2SP key hash: the first 4 bytes, big-endian, of SHA-256(name || 0x0A || type || public key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + bytes(public_key)).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode(text: bytes) -> bytes | None:
    """Go's ``base64.StdEncoding.DecodeString`` (padding required, nothing after it); None if bad."""
    if _B64.fullmatch(text) is None:
        return None
    return base64.b64decode(text)


def _cosigned_message(timestamp: int, text: bytes) -> bytes:
    return COSIGNATURE_V1_HEADER + b"time %d\n" % timestamp + text


# -- keys ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoteVerifier:
    """One trusted key: its name, type (0x01 or 0x04) and raw 32-byte Ed25519 public key."""

    name: str
    public_key: bytes
    key_type: int = SIG_ED25519
    key_hash: int = field(init=False)

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise ValueError(f"invalid note key name {self.name!r}")
        if self.key_type not in KEY_TYPES:
            raise ValueError(f"unsupported note key type {self.key_type:#04x}")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise ValueError("an Ed25519 public key is exactly 32 bytes")
        object.__setattr__(self, "key_hash", key_hash(self.name, self.key_type, self.public_key))

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (the bytes after the key hash) signs ``text``. Never raises."""
        if self.key_type == SIG_COSIGNATURE_V1:
            if len(signature) != 8 + 64:
                return False
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp > MAX_TIMESTAMP:
                return False
            return verify_signature(self.public_key, signature[8:], _cosigned_message(timestamp, text))
        return verify_signature(self.public_key, signature, text)


class NoteSigner:
    """A named signing key: an :class:`Identity`'s Ed25519 key under a note key name and type."""

    __slots__ = ("_identity", "key_hash", "key_type", "name")

    def __init__(self, name: str, identity: Identity, key_type: int = SIG_ED25519) -> None:
        if not is_valid_name(name):
            raise ValueError(f"invalid note key name {name!r}")
        if key_type not in KEY_TYPES:
            raise ValueError(f"unsupported note key type {key_type:#04x}")
        if not isinstance(identity, Identity):
            raise TypeError("a note signer wraps a crypto.identity.Identity")
        self.name, self.key_type, self._identity = name, key_type, identity
        self.key_hash = key_hash(name, key_type, identity.public_key)

    @classmethod
    def from_seed(cls, name: str, seed: bytes, key_type: int = SIG_ED25519) -> NoteSigner:
        """From a raw 32-byte Ed25519 seed (test keys, Go's ``PRIVATE+KEY`` texts)."""
        return cls(name, Identity(seed), key_type)

    @property
    def public_key(self) -> bytes:
        return self._identity.public_key

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.public_key, self.key_type)

    def sign(self, message: bytes) -> bytes:
        """Raw Ed25519 signature over ``message`` (no key hash, no timestamp)."""
        return self._identity.sign(message)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, {self.key_hash:08x})"

    def __reduce__(self):
        raise TypeError("NoteSigner objects hold a secret key and are not picklable")


def _parse_key_text(text: str, what: str) -> tuple[str, int, int, bytes]:
    """``name+hash+base64(type || key)`` -> (name, hash, type, key), with Go's checks and errors."""
    if not isinstance(text, str):
        raise NoteError(f"a {what} key is text", "malformed_key")
    name, _, rest = text.partition("+")
    hash16, _, key64 = rest.partition("+")
    raw = _b64decode(key64.encode("utf-8", "replace")) or b""
    if (
        len(hash16) != 8
        or re.fullmatch("[0-9a-fA-F]{8}", hash16) is None
        or not raw
        or not is_valid_name(name)
    ):
        raise NoteError(f"malformed {what} key", "malformed_key")
    return name, int(hash16, 16), raw[0], raw[1:]


def parse_verifier_key(text: str) -> NoteVerifier:
    """A verifier from ``<name>+<hash hex>+<base64(type || 32-byte key)>`` (Go's ``NewVerifier``,
    which knows type 0x01 only; 0x04 is accepted too, as C2SP tlog-cosignature allows)."""
    name, hash_, key_type, key = _parse_key_text(text, "verifier")
    if hash_ != key_hash(name, key_type, key):
        raise NoteError("verifier key hash does not match its name and key", "key_hash")
    if key_type not in KEY_TYPES:
        raise NoteError(f"unknown verifier algorithm {key_type:#04x}", "unknown_algorithm")
    if len(key) != 32:
        raise NoteError("malformed verifier key: an Ed25519 key is 32 bytes", "malformed_key")
    return NoteVerifier(name, key, key_type)


def parse_signer_key(text: str) -> NoteSigner:
    """A signer from ``PRIVATE+KEY+<name>+<hash hex>+<base64(type || 32-byte seed)>`` (Go's
    ``NewSigner``); the hash is checked against the public key derived from the seed."""
    if not isinstance(text, str) or not text.startswith("PRIVATE+KEY+"):
        raise NoteError("malformed signer key", "malformed_key")
    name, hash_, key_type, seed = _parse_key_text(text[len("PRIVATE+KEY+") :], "signer")
    if key_type not in KEY_TYPES:
        raise NoteError(f"unknown signer algorithm {key_type:#04x}", "unknown_algorithm")
    if len(seed) != 32:
        raise NoteError("malformed signer key: an Ed25519 seed is 32 bytes", "malformed_key")
    signer = NoteSigner.from_seed(name, seed, key_type)
    if signer.key_hash != hash_:
        raise NoteError("signer key hash does not match its name and public key", "key_hash")
    return signer


def format_verifier_key(name: str, public_key: bytes, key_type: int = SIG_ED25519) -> str:
    """``<name>+<hash hex>+<base64(type || key)>`` (Go's ``NewEd25519VerifierKey`` for type 0x01)."""
    v = NoteVerifier(name, bytes(public_key), key_type)
    return f"{name}+{v.key_hash:08x}+{base64.b64encode(bytes([key_type]) + v.public_key).decode('ascii')}"


def format_signer_key(name: str, seed: bytes, key_type: int = SIG_ED25519) -> str:
    """``PRIVATE+KEY+<name>+<hash hex>+<base64(type || seed)>``: a secret; never log it."""
    s = NoteSigner.from_seed(name, bytes(seed), key_type)
    blob = base64.b64encode(bytes([key_type]) + bytes(seed)).decode("ascii")
    return f"PRIVATE+KEY+{name}+{s.key_hash:08x}+{blob}"


# -- notes --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key hash and the bytes after the key hash."""

    name: str
    key_hash: int
    signature: bytes

    @property
    def line(self) -> str:
        blob = self.key_hash.to_bytes(4, "big") + self.signature
        return f"— {self.name} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the signatures verified by a known key, and the others."""

    text: str
    signatures: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def _check_text(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("note text is a str")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed("text is not valid UTF-8") from None
    if not raw.endswith(b"\n"):
        raise _malformed("text does not end in a newline")
    if _CONTROL.search(raw):
        raise _malformed("text has a control character other than newline")
    return raw


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """The signed note: ``text``, a blank line, then one Ed25519 (type 0x01) signature line per
    signer in the order given (as Go's ``Sign`` emits new signatures)."""
    raw = _check_text(text)
    if not signers or len(signers) > MAX_SIGNATURES:
        raise ValueError(f"a signed note needs 1..{MAX_SIGNATURES} signers")
    lines, seen = [], set()
    for s in signers:
        if not isinstance(s, NoteSigner) or s.key_type != SIG_ED25519:
            raise ValueError("sign_note takes type 0x01 NoteSigners (cosignatures: crypto.checkpoint.cosign)")
        if (s.name, s.key_hash) in seen:
            raise ValueError(f"signer {s.name}+{s.key_hash:08x} given twice")
        seen.add((s.name, s.key_hash))
        lines.append(Signature(s.name, s.key_hash, s.sign(raw)).line.encode("utf-8"))
    return raw + b"\n" + b"".join(lines)


def _index(verifiers: Sequence[NoteVerifier]) -> dict[tuple[str, int], list[NoteVerifier]]:
    if isinstance(verifiers, NoteVerifier):
        raise TypeError("verifiers is a sequence of NoteVerifier, not one")
    known: dict[tuple[str, int], list[NoteVerifier]] = {}
    for v in verifiers:
        if not isinstance(v, NoteVerifier):
            raise TypeError(f"verifiers must be NoteVerifier objects, not {type(v).__name__}")
        known.setdefault((v.name, v.key_hash), []).append(v)
    return known


def _open(
    data: bytes, verifiers: Sequence[NoteVerifier], max_size: int
) -> tuple[Note, dict[tuple[str, int], NoteVerifier]]:
    """Parse and verify; -> (note, {(name, hash): verifier} of the verified). No "at least one" rule."""
    known = _index(verifiers)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise NoteError(f"a signed note is bytes, not {type(data).__name__}")
    size = memoryview(data).nbytes
    if size > max_size:
        raise NoteError(f"note is {size} bytes, over the limit of {max_size}", "oversize")
    data = bytes(data)
    if _CONTROL.search(data):
        raise _malformed("control character other than newline")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("not valid UTF-8") from None
    split = data.rfind(b"\n\n")
    if split < 0:
        raise _malformed("no blank line before the signatures")
    text, block = data[: split + 1], data[split + 2 :]
    if not block or not block.endswith(b"\n"):
        raise _malformed("the signature block is empty or does not end in a newline")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    used: dict[tuple[str, int], NoteVerifier] = {}
    seen_lines: set[bytes] = set()
    for count, line in enumerate(block[:-1].split(b"\n"), start=1):
        if not line.startswith(_DASH):
            raise _malformed("a signature line does not start with an em dash and a space")
        name_b, _, b64 = line[len(_DASH) :].partition(b" ")
        name = name_b.decode("utf-8")
        blob = _b64decode(b64) or b""
        if not is_valid_name(name) or not b64 or len(blob) < 5:
            raise _malformed("bad signature line")
        if count > MAX_SIGNATURES:
            raise _malformed(f"more than {MAX_SIGNATURES} signatures")
        key = (name, int.from_bytes(blob[:4], "big"))
        sig = Signature(name, key[1], blob[4:])
        candidates = known.get(key)
        if candidates is None:
            if line not in seen_lines:  # drop repeated identical unverified lines
                seen_lines.add(line)
                unverified.append(sig)
            continue
        if len(candidates) > 1:
            raise NoteError(f"ambiguous key {name}+{key[1]:08x}", "ambiguous_key")
        if key in used:  # one key counts once
            continue
        if not candidates[0].verify(text, sig.signature):
            raise NoteError(f"invalid signature for key {name}+{key[1]:08x}", "invalid_signature")
        used[key] = candidates[0]
        verified.append(sig)
    return Note(text.decode("utf-8"), tuple(verified), tuple(unverified)), used


def open_note(data: bytes, verifiers: Sequence[NoteVerifier], *, max_size: int = MAX_NOTE_SIZE) -> Note:
    """Parse ``data`` and verify its signatures against ``verifiers`` (see the module doc for every
    rule); raises :class:`NoteError` unless at least one known key's signature verifies."""
    note, _used = _open(data, verifiers, max_size)
    if not note.signatures:
        raise NoteError("note has no verifiable signatures", "unknown_key")
    return note
