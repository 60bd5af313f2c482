"""Manifest updates: the owner changes who may train or roll out in a live swarm, as TUF rotates root keys.

The signed manifest is the swarm's genesis: its digest names the swarm (DHT namespace, log origin)
and never changes. What may change is the trust it sets up: the owner's key, the trainer keys, the
rollout keys. An update is a DSSE envelope (JSON) over the canonical JSON of

    runId, manifestDigest     the swarm it belongs to
    serial, previous          n >= 1, and the digest of update n-1 (the manifest digest for n = 1)
    ownerPublicKey            the owner from this update on
    trainerKeys, rolloutKeys, openTraining
    fromVersion               keys this update removes may not sign adapter versions >= fromVersion

signed by the owner as of update n-1 and, when it names a new owner, by that owner too (TUF: a new
root is signed by the old root and by itself). Updates apply strictly in order, one per serial: a
second, different update n is refused (`fork`), an older one is ignored, one that skips a serial
waits for the missing one (`unknown_update`). A node keeps the updates it accepted in
WORKDIR/provenance/updates.jsonl, reads new ones from the file beside its manifest
(MANIFEST.updates, written by `swarm trust`), hands them on in every `log` reply, and `swarm audit`
checks the same file.

Who may sign adapter version v: a trainer key of the update its entry names (`manifestSerial`,
never older than its parent's), unless a later update removed that key from some fromVersion <= v.
So rotating a key keeps history valid, and revoking a stolen key refuses every version it signed
from the first one the owner no longer vouches for.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crypto.canonical import canonical_json, parse_json
from crypto.envelope import peek_payload, sign_envelope, verify_envelope
from crypto.errors import CryptoError
from crypto.identity import key_id_of
from swarm.manifest import RunManifest, SignedManifest
from swarm.rejections import HEX64, Reason, UpdateRejected

if TYPE_CHECKING:
    from crypto.identity import Identity
    from swarm.versions import AdapterVersion

UPDATE_TYPE = "application/vnd.echo-swarm.manifest-update+json"
MAX_UPDATE_BYTES = 64 * 1024
MAX_UPDATES = 256
_FIELDS = {"runId", "manifestDigest", "serial", "previous", "ownerPublicKey", "trainerKeys", "rolloutKeys",
           "openTraining", "fromVersion"}


@dataclass(frozen=True)
class TrustState:
    """Who the swarm trusts after update `serial` (0: the signed manifest itself)."""

    serial: int
    digest: str
    """sha256 of the update's payload (the manifest digest for serial 0): what update serial+1 names."""
    owner_public_key: bytes
    trainer_keys: tuple[str, ...]
    rollout_keys: tuple[str, ...]
    open_training: bool
    from_version: int

    @property
    def owner_key_id(self) -> str:
        return key_id_of(self.owner_public_key)

    def trainer_allowed(self, key_id: str) -> bool:
        return self.open_training or key_id in self.trainer_keys


def updates_path(manifest_path: str | Path) -> Path:
    """Where `swarm trust` writes the updates of a manifest: beside it, MANIFEST.updates."""
    path = Path(manifest_path)
    return path.with_name(path.name + ".updates")


def genesis_state(signed: SignedManifest) -> TrustState:
    s = signed.manifest.swarm
    return TrustState(0, signed.digest, signed.owner_public_key, s.trainer_keys, s.rollout_keys, s.open_training, 0)


def make_update(trust: TrustRoot, signers: list[Identity], *, owner_public_key: bytes | None = None,
                trainer_keys: Iterable[str] | None = None, rollout_keys: Iterable[str] | None = None,
                open_training: bool | None = None, from_version: int = 0) -> bytes:
    """The next update after `trust`'s newest state, signed by `signers` (the current owner, and
    the new owner when it changes). Unnamed settings carry over."""
    head = trust.head
    payload = {
        "runId": trust.signed.manifest.run.id, "manifestDigest": trust.signed.digest,
        "serial": head.serial + 1, "previous": head.digest,
        "ownerPublicKey": (owner_public_key or head.owner_public_key).hex(),
        "trainerKeys": list(head.trainer_keys if trainer_keys is None else trainer_keys),
        "rolloutKeys": list(head.rollout_keys if rollout_keys is None else rollout_keys),
        "openTraining": head.open_training if open_training is None else open_training,
        "fromVersion": from_version,
    }
    return sign_envelope(UPDATE_TYPE, canonical_json(payload), signers, encoding="json")


class TrustRoot:
    """The signed manifest and the updates applied to it, in order: who may do what, and when."""

    def __init__(self, signed: SignedManifest, updates: Iterable[bytes] = ()):
        self.signed = signed
        self.states: list[TrustState] = [genesis_state(signed)]
        self.updates: list[bytes] = []
        for envelope in updates:
            self.apply(envelope)

    @property
    def head(self) -> TrustState:
        return self.states[-1]

    @property
    def serial(self) -> int:
        return self.head.serial

    @property
    def manifest(self) -> RunManifest:
        """The manifest as the newest update leaves it (same run, settings and digest; new keys)."""
        m, head = self.signed.manifest, self.head
        if head.serial == 0:
            return m
        return dataclasses.replace(
            m, run=dataclasses.replace(m.run, owner_key_id=head.owner_key_id),
            swarm=dataclasses.replace(m.swarm, trainer_keys=head.trainer_keys, rollout_keys=head.rollout_keys,
                                      open_training=head.open_training))

    # -- updates --------------------------------------------------------------------------------

    def apply(self, envelope: bytes) -> bool:
        """Verify and apply the next update; False when we already hold it. UpdateRejected says why not."""
        serial = _claimed_serial(envelope)
        if 1 <= serial <= self.serial:
            if self.updates[serial - 1] == envelope:
                return False
            raise UpdateRejected(Reason.FORK, f"a second, different manifest update #{serial}")
        if serial != self.serial + 1:
            raise UpdateRejected(Reason.UNKNOWN_UPDATE, f"manifest update #{serial} before #{self.serial + 1}")
        if len(self.updates) >= MAX_UPDATES:
            raise UpdateRejected(Reason.LIMIT, f"more than {MAX_UPDATES} manifest updates")
        self.states.append(self._verify(envelope))
        self.updates.append(envelope)
        return True

    def apply_all(self, envelopes: Iterable[bytes]) -> int:
        """Apply every update in order that we do not hold yet; the number applied."""
        return sum(self.apply(e) for e in envelopes)

    def _verify(self, envelope: bytes) -> TrustState:
        head = self.head
        try:
            payload = _payload_unverified(envelope)
            new_owner = bytes.fromhex(payload["ownerPublicKey"]) if isinstance(payload, dict) else b""
        except (CryptoError, ValueError, TypeError, KeyError) as e:
            raise UpdateRejected(Reason.SCHEMA, f"manifest update: {e}") from None
        signers = {head.owner_key_id: head.owner_public_key}
        if len(new_owner) == 32:
            signers[key_id_of(new_owner)] = new_owner
        try:
            verified = verify_envelope(envelope, trusted_keys=signers, payload_types={UPDATE_TYPE},
                                       threshold=len(signers), max_size=MAX_UPDATE_BYTES)
        except CryptoError as e:
            raise UpdateRejected(Reason.BAD_SIGNATURE, "a manifest update must be signed by the current owner "
                                                       f"(and by a new owner it names): {e}") from None
        p = parse_json(verified.payload, max_size=MAX_UPDATE_BYTES)
        try:
            if not isinstance(p, dict) or set(p) != _FIELDS:
                raise ValueError(f"fields must be exactly {sorted(_FIELDS)}")
            if (p["runId"], p["manifestDigest"]) != (self.signed.manifest.run.id, self.signed.digest):
                raise UpdateRejected(Reason.WRONG_RUN, "a manifest update of another run")
            if p["previous"] != head.digest:
                raise UpdateRejected(Reason.FORK, f"manifest update #{p['serial']} does not follow #{head.serial}")
            state = TrustState(
                serial=p["serial"], digest=hashlib.sha256(verified.payload).hexdigest(), owner_public_key=new_owner,
                trainer_keys=_key_ids(p["trainerKeys"]), rollout_keys=_key_ids(p["rolloutKeys"]),
                open_training=_bool(p["openTraining"]), from_version=_int(p["fromVersion"]))
            if len(new_owner) != 32:
                raise ValueError("ownerPublicKey must be a 32-byte Ed25519 key")
            if state.open_training and state.trainer_keys:
                raise ValueError("openTraining and trainerKeys exclude each other")
            return state
        except (ValueError, TypeError) as e:
            if isinstance(e, UpdateRejected):
                raise
            raise UpdateRejected(Reason.SCHEMA, f"manifest update: {e}") from None

    # -- questions --------------------------------------------------------------------------------

    def check_signer(self, record: AdapterVersion, parent: AdapterVersion | None) -> None:
        """May `record`'s trainer sign its version under the update it names? VersionRejected if not."""
        from swarm.rejections import VersionRejected

        serial, key, v = record.manifest_serial, record.trainer_key_id, record.version
        if serial > self.serial:
            raise VersionRejected(Reason.UNKNOWN_UPDATE, f"v{v} was made under manifest update #{serial}, which "
                                                         f"this node does not hold (it holds #{self.serial})")
        if parent is not None and serial < parent.manifest_serial:
            raise VersionRejected(Reason.ROLLBACK, f"v{v} names manifest update #{serial}, older than its parent's")
        if not self.states[serial].trainer_allowed(key):
            raise VersionRejected(Reason.WRONG_SIGNER, f"v{v} signed by {key[:16]}, a key manifest update #{serial} "
                                                       "does not authorise to train")
        for later in self.states[serial + 1:]:
            if v >= later.from_version and not later.trainer_allowed(key):
                raise VersionRejected(Reason.WRONG_SIGNER, f"v{v} signed by {key[:16]}, a key manifest update "
                                                           f"#{later.serial} revoked from v{later.from_version} on")

    def ever_trainer(self, key_id: str) -> bool:
        """Was `key_id` ever allowed to train (who may have signed an older checkpoint)?"""
        return any(s.trainer_allowed(key_id) for s in self.states)

    # -- files ------------------------------------------------------------------------------------

    def read(self, path: Path) -> int:
        """Apply the updates of a file (one envelope per line); the number applied."""
        try:
            lines = Path(path).read_bytes().splitlines()
        except FileNotFoundError:
            return 0
        return self.apply_all(line for line in lines if line.strip())

    def write(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(b"".join(u + b"\n" for u in self.updates))
        tmp.replace(path)


def _claimed_serial(envelope: bytes) -> int:
    try:
        payload = _payload_unverified(envelope)
        return _int(payload["serial"], minimum=1)
    except (CryptoError, ValueError, TypeError, KeyError) as e:
        raise UpdateRejected(Reason.SCHEMA, f"manifest update: {e}") from None


def _payload_unverified(envelope: bytes) -> Any:
    """The payload of an update, parsed before any signature is checked: only to learn which keys
    must have signed it (its serial, its new owner). Trusted only after verify_envelope."""
    if len(envelope) > MAX_UPDATE_BYTES:
        raise ValueError(f"larger than {MAX_UPDATE_BYTES} bytes")
    payload_type, payload = peek_payload(envelope, MAX_UPDATE_BYTES)
    if payload_type != UPDATE_TYPE:
        raise ValueError(f"not a manifest update ({payload_type!r})")
    return parse_json(payload, max_size=MAX_UPDATE_BYTES)


def _key_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 1024 or not all(isinstance(k, str) and HEX64.match(k) for k in value):
        raise ValueError("key lists must be lists of key ids (64 hex)")
    return tuple(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _int(value: Any, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value < 2**62:
        raise ValueError("expected an integer in range")
    return value
