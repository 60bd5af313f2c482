"""C2SP tlog-checkpoint bodies and tlog-cosignature/v1 witness cosignatures, over ``crypto.note``.

A checkpoint is the text of a signed note (https://c2sp.org/tlog-checkpoint)::

    <origin>\\n                  non-empty
    <tree size>\\n               ASCII decimal, no sign, no leading zero (except "0")
    <base64 root hash>\\n        standard base64 of the 32-byte RFC 6962 root
    [<extension line>\\n ...]    optional, each non-empty

A witness cosignature (https://c2sp.org/tlog-cosignature, Ed25519 v1) is one more signature line on
the same note under the witness's key name, key hash type 0x04, blob ``key hash || u64 big-endian
time || Ed25519(b"cosignature/v1\\ntime <time>\\n" + checkpoint text)``; the time says when the
witness signed, and must not exceed 2^63 - 1.

Parsers take untrusted input and raise only :class:`~crypto.note.NoteError` (``reason`` =
``malformed``, or ``origin`` when a log's signature is under another name, ``threshold`` when too
few known witnesses cosigned, plus those of :func:`crypto.note.open_note`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .identity import Identity
from .note import (
    MAX_NOTE_SIZE,
    MAX_TIMESTAMP,
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    NoteError,
    NoteSigner,
    NoteVerifier,
    Signature,
    _cosigned_message,
    _open,
    open_note,
    sign_note,
)

HASH_SIZE = 32
MAX_TREE_SIZE = (1 << 64) - 1
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_ROOT = re.compile(r"[A-Za-z0-9+/]{43}=")
_CONTROL = re.compile(r"[\x00-\x1f]")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, size and root hash, plus opaque extension lines (not recommended)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _problem(self.origin, self.size, self.root_hash, self.extensions)
        if problem:
            raise ValueError(f"invalid checkpoint: {problem}")


def _line_problem(line: object, what: str) -> str | None:
    if not isinstance(line, str) or not line:
        return f"{what} must be a non-empty string"
    if _CONTROL.search(line):
        return f"{what} has a newline or control character"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8"
    return None


def _problem(origin: object, size: object, root: object, extensions: object) -> str | None:
    problem = _line_problem(origin, "origin")
    if problem:
        return problem
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
        return "tree size must be an integer in 0..2^64-1"
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        return f"root hash must be {HASH_SIZE} bytes"
    if not isinstance(extensions, tuple):
        return "extensions must be a tuple of lines"
    for line in extensions:
        problem = _line_problem(line, "extension line")
        if problem:
            return problem
    return None


def format_checkpoint(cp: Checkpoint) -> str:
    """The note text: ``origin\\nsize\\nbase64(root)\\n`` then one line per extension."""
    lines = [cp.origin, str(cp.size), base64.b64encode(cp.root_hash).decode("ascii"), *cp.extensions]
    return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str | bytes) -> Checkpoint:
    """Strictly parse a checkpoint note text (what :func:`crypto.note.open_note` returns as ``text``)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("malformed checkpoint: not valid UTF-8") from None
    if not isinstance(text, str):
        raise NoteError(f"malformed checkpoint: a checkpoint is text, not {type(text).__name__}")
    if not text.endswith("\n"):
        raise NoteError("malformed checkpoint: text does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("malformed checkpoint: fewer than three lines")
    origin, size_text, root_text, *extensions = lines
    if _SIZE.fullmatch(size_text) is None or int(size_text) > MAX_TREE_SIZE:
        raise NoteError("malformed checkpoint: tree size is not canonical decimal in 0..2^64-1")
    if _ROOT.fullmatch(root_text) is None:
        raise NoteError("malformed checkpoint: root hash is not base64 of 32 bytes")
    root = base64.b64decode(root_text)
    if base64.b64encode(root).decode("ascii") != root_text:
        raise NoteError("malformed checkpoint: root hash is not canonical base64")
    problem = _problem(origin, int(size_text), root, tuple(extensions))
    if problem:
        raise NoteError(f"malformed checkpoint: {problem}")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> bytes:
    """The checkpoint as a signed note, signed by the log key (whose name must be the origin)."""
    if signer.name != cp.origin:
        raise ValueError(f"a log signs its checkpoints under its origin {cp.origin!r}, not {signer.name!r}")
    return sign_note(format_checkpoint(cp), [signer])


def open_checkpoint(data: bytes, log_verifier: NoteVerifier, *, max_size: int = MAX_NOTE_SIZE) -> Checkpoint:
    """Verify the log's signature on a checkpoint note and parse it. The log key's name must be the
    checkpoint's origin; other signatures (e.g. witnesses') are ignored unless they claim this key."""
    if not isinstance(log_verifier, NoteVerifier) or log_verifier.key_type != SIG_ED25519:
        raise TypeError("log_verifier is one type 0x01 NoteVerifier")
    note = open_note(data, [log_verifier], max_size=max_size)
    cp = parse_checkpoint(note.text)
    if cp.origin != log_verifier.name:
        raise NoteError(
            f"checkpoint origin {cp.origin!r} is not the log key name {log_verifier.name!r}", "origin"
        )
    return cp


def cosign(checkpoint_text: str, witness_name: str, signer: Identity | NoteSigner, timestamp: int) -> bytes:
    """One cosignature/v1 signature line (bytes, ending in a newline) by ``signer`` as
    ``witness_name`` at POSIX time ``timestamp``; append it to the signed checkpoint note.
    ``signer`` is an Identity, or a type 0x04 NoteSigner named ``witness_name`` (e.g. from a
    ``PRIVATE+KEY`` text).

    The caller (a witness) must already have verified the log's signature and the checkpoint's
    consistency with the last one it cosigned for that origin."""
    parse_checkpoint(checkpoint_text)
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature timestamp is an integer in 0..2^63-1")
    if isinstance(signer, NoteSigner):
        if signer.key_type != SIG_COSIGNATURE_V1 or signer.name != witness_name:
            raise ValueError(f"a cosigner is a type 0x04 NoteSigner named {witness_name!r}")
        witness = signer
    else:
        witness = NoteSigner(witness_name, signer, SIG_COSIGNATURE_V1)
    sig = witness.sign(_cosigned_message(timestamp, checkpoint_text.encode("utf-8")))
    return Signature(witness_name, witness.key_hash, timestamp.to_bytes(8, "big") + sig).line.encode("utf-8")


def verify_cosignatures(
    note_data: bytes,
    witness_verifiers: Sequence[NoteVerifier],
    *,
    threshold: int = 1,
    max_size: int = MAX_NOTE_SIZE,
) -> dict[str, int]:
    """Verify the witness cosignatures on a checkpoint note: -> {witness name: cosigned time}.

    ``witness_verifiers`` are type 0x04 keys. Signatures by other keys (the log's included) are
    ignored here: check the log's with :func:`open_checkpoint`. A known witness whose cosignature
    fails to verify fails the note; fewer than ``threshold`` verified witnesses raise ``threshold``.
    """
    if threshold < 0:
        raise ValueError("threshold must not be negative")
    verifiers = list(witness_verifiers)
    if any(not isinstance(v, NoteVerifier) or v.key_type != SIG_COSIGNATURE_V1 for v in verifiers):
        raise ValueError("witness verifiers are type 0x04 (cosignature/v1) NoteVerifiers")
    note, _used = _open(note_data, verifiers, max_size)
    parse_checkpoint(note.text)
    times = {sig.name: int.from_bytes(sig.signature[:8], "big") for sig in note.signatures}
    if len(times) < threshold:
        raise NoteError(
            f"checkpoint has {len(times)} valid cosignature(s) from known witnesses, {threshold} required",
            "threshold",
        )
    return times
