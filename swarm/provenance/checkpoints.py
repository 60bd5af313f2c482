"""Checkpoints of a run's provenance log: C2SP tlog-checkpoint signed notes, and witness cosignatures.

The log's origin line is the run's namespace (`echo-swarm/<run id>/<manifest digest[:16]>`). A
trainer signs checkpoints under that name with its own key (each authorised trainer key is one
note verifier of that name: a failed-over trainer continues the same log). Witnesses (rollout
nodes) countersign under `echo-swarm-witness/<key id[:16]>` with C2SP cosignature/v1 lines on the
same note, so standard transparency-log tooling reads both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from crypto.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from crypto.checkpoint import cosign as cosign_line
from crypto.errors import CryptoError
from crypto.identity import Identity, key_id_of
from crypto.note import MAX_SIGNATURES, SIG_COSIGNATURE_V1, NoteSigner, NoteVerifier, open_note
from swarm.messages import Message, decode
from swarm.rejections import Reason, VersionRejected

WITNESS_PREFIX = "echo-swarm-witness/"
MAX_NOTE_BYTES = 16 * 1024


def witness_name(key_id: str) -> str:
    return f"{WITNESS_PREFIX}{key_id[:16]}"


def sign(log, identity: Identity) -> bytes:
    """A checkpoint of the whole log, signed by this (trainer) identity."""
    return sign_checkpoint(Checkpoint(log.origin, log.size, log.root(), ()), NoteSigner(log.origin, identity))


def verify_checkpoint(note: bytes, log, *, size: int, root: bytes) -> Checkpoint:
    """The checkpoint in `note` if an authorised trainer key of `log` signed it under the log's
    origin and it commits to exactly `size` entries with `root`; VersionRejected otherwise."""
    if len(note) > MAX_NOTE_BYTES:
        raise VersionRejected(Reason.OVERSIZE, f"checkpoint note of {len(note)} bytes")
    errors = []
    for key_id, public_key in sorted(log.keys.items()):
        if not log.authorised(key_id):
            continue
        try:
            cp = open_checkpoint(note, NoteVerifier(log.origin, public_key))
            break
        except CryptoError as e:
            errors.append(str(e))
    else:
        raise VersionRejected(Reason.BAD_SIGNATURE, f"checkpoint not signed by an authorised trainer ({errors[:1]})")
    if (cp.size, cp.root_hash) != (size, root):
        raise VersionRejected(Reason.INCONSISTENT, f"checkpoint of {cp.size} entries does not commit to our "
                                                   f"{size}-entry history")
    return cp


def checkpoint_size(note: bytes) -> int:
    """The tree size a (stored) checkpoint note claims; its signatures are checked by its users."""
    try:
        return parse_checkpoint(note.split(b"\n\n", 1)[0].decode() + "\n").size
    except (CryptoError, UnicodeDecodeError) as e:
        raise ValueError(str(e)) from None


def checkpoint_text(note: bytes) -> str:
    return note.split(b"\n\n", 1)[0].decode() + "\n"


def cosign(note: bytes, identity: Identity, now: int) -> bytes:
    """Our cosignature/v1 line for the checkpoint in `note` (which we verified and found consistent)."""
    return cosign_line(checkpoint_text(note), witness_name(identity.key_id), identity, now)


def add_cosignature(note: bytes, line: bytes) -> bytes:
    """`note` with one more signature line (a cosignature already there is not added twice)."""
    if line in note.split(b"\n\n", 1)[1].splitlines(keepends=True):
        return note
    if note.count(b"\n\xe2\x80\x94 ") >= MAX_SIGNATURES:
        raise VersionRejected(Reason.LIMIT, "the checkpoint carries the most signatures a note may")
    return note + line


def witness_verifier(public_key: bytes) -> NoteVerifier:
    return NoteVerifier(witness_name(key_id_of(public_key)), public_key, SIG_COSIGNATURE_V1)


def cosigners(note: bytes, witnesses: dict[str, bytes]) -> dict[str, int]:
    """key id -> cosigned time of every witness in `witnesses` whose cosignature on `note` verifies."""
    verifiers = {witness_name(k): k for k in witnesses}
    try:
        opened = open_note(note, [witness_verifier(v) for v in witnesses.values()])
    except CryptoError:
        return {}
    return {verifiers[s.name]: int.from_bytes(s.signature[:8], "big") for s in opened.signatures}


@dataclass(frozen=True)
class CosignRequest(Message):
    """`cosign`: a witness hands back its cosignature of a checkpoint note it verified."""

    note: str
    cosignature: str
    MAX_BYTES: ClassVar[int] = 2 * MAX_NOTE_BYTES


def accept_cosignature(log, request: bytes, members: dict[str, bytes]) -> None:
    """Keep a member's cosignature with our checkpoint if it is for exactly our checkpoint text and
    verifies under that member's key; VersionRejected (or RequestRejected) otherwise. A member that
    cosigned this checkpoint already (a repeated hand-back, or a note a new trainer took over with
    its witnesses' lines) is kept once: nothing changes."""
    ask = decode(CosignRequest, request)
    line = ask.cosignature.encode()
    with log.lock:
        if log.checkpoint is None or checkpoint_text(ask.note.encode()) != checkpoint_text(log.checkpoint):
            raise VersionRejected(Reason.STALE, "a cosignature of another checkpoint than our newest")
        offered = cosigners(log.checkpoint.split(b"\n\n", 1)[0] + b"\n\n" + line, members)
        if len(offered) != 1:
            raise VersionRejected(Reason.BAD_SIGNATURE, "cosignature does not verify under a live member's key")
        (signer,) = offered
        if signer in cosigners(log.checkpoint, members):
            return
        candidate = add_cosignature(log.checkpoint, line)
        log.learn_keys({signer: members[signer]})  # so audits can verify it from keys.json
        log.set_checkpoint(candidate, log.checkpoint_size)
