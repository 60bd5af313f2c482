"""NodeInfo: the small, signed, expiring record a node publishes in the DHT.

A record is canonical JSON inside a DSSE envelope signed by the node's Ed25519 key (which is
also its libp2p identity, so the peer id proves the key). It is stored under the run's
`nodes` key with the signer's public key (hex) as subkey; `expires_at` is signed too, so
nobody can re-publish an old record with a longer life. The DHT breaks above ~64 KiB: we keep
records under MAX_RECORD_BYTES.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from crypto.canonical import canonical_json, parse_json
from crypto.envelope import sign_envelope, verify_envelope
from crypto.errors import CryptoError
from crypto.identity import Identity, key_id_of, peer_id_of
from swarm.rejections import HEX64, Reason, RecordRejected

NODEINFO_TYPE = "application/vnd.echo-swarm.nodeinfo+json"
SCHEMA_VERSION = 3  # 2: typed `trainer` state replaces the untyped `extra` table; 3: `failed` roles
MAX_RECORD_BYTES = 8 * 1024
ROLES = ("joining", "trainer", "rollout")
ROLE_PREFS = ("auto", "trainer", "rollout")
WORKER_ROLES = ("trainer", "rollout")
MAX_FAILURE_CHARS = 300
MAX_STATE_CHARS = 32


@dataclass(frozen=True)
class Hardware:
    cpu: str = ""
    cores: int = 0
    ram_gb: float = 0.0
    gpus: tuple = ()
    """(name, memory_gb) per CUDA device."""
    mps: bool = False
    torch: bool = False
    engines: tuple = ()
    """Inference engines importable here: 'transformers', 'llamacpp'."""

    @property
    def tier(self) -> int:
        """Coarse training capability: CUDA > Apple MPS > CPU."""
        return 2 if self.gpus else 1 if self.mps else 0

    @property
    def train_memory_gb(self) -> float:
        return max((mem for _, mem in self.gpus), default=self.ram_gb)


@dataclass(frozen=True)
class TrainerState:
    """What a trainer advertises of its progress; the defaults on every other node."""

    version: int = -1
    """Newest adapter version it published."""
    step: int = 0
    need: int = 0
    """Prompt groups it can still use (`swarm.sync.groups_needed`)."""


@dataclass(frozen=True)
class NodeInfo:
    run_digest: str
    peer_id: str
    key_id: str
    public_key: str
    """Ed25519 public key, hex."""
    hpke_keys: dict
    """suite name -> HPKE recipient public key (hex)."""
    addrs: tuple
    hardware: Hardware
    decode_tok_s: float
    """Measured decode speed on the embedded tiny model."""
    role: str
    role_pref: str
    state: str
    adapter_version: int
    """-1 until the node holds an adapter version."""
    software: str
    issued_at: float
    expires_at: float
    trainer: TrainerState = TrainerState()
    """Progress of a trainer (only meaningful while the role function names it trainer)."""
    failed: dict = field(default_factory=dict)
    """Role ('trainer', 'rollout') -> why this node could not start it (e.g. its model would not
    load): the role function never gives it that role again, and `swarm peers` shows why."""
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["addrs"] = list(self.addrs)
        d["hardware"]["gpus"] = [list(g) for g in self.hardware.gpus]
        d["hardware"]["engines"] = list(self.hardware.engines)
        return d


def sign_record(info: NodeInfo, identity: Identity) -> bytes:
    payload = canonical_json(info.to_dict())
    envelope = sign_envelope(NODEINFO_TYPE, payload, [identity])
    if len(envelope) > MAX_RECORD_BYTES:
        raise RecordRejected(Reason.OVERSIZE, f"own record is {len(envelope)} bytes > {MAX_RECORD_BYTES}")
    return envelope


def verify_record(
    envelope: bytes, *, owner_public_key_hex: str, run_digest: str, expiration_time: float | None = None
) -> NodeInfo:
    """Check that `envelope` is a NodeInfo of this run signed by the owner named in the subkey."""
    if not isinstance(envelope, bytes):
        raise RecordRejected(Reason.SCHEMA, "record value is not bytes")
    if len(envelope) > MAX_RECORD_BYTES:
        raise RecordRejected(Reason.OVERSIZE, f"{len(envelope)} bytes > {MAX_RECORD_BYTES}")
    if not HEX64.match(owner_public_key_hex or ""):
        raise RecordRejected(Reason.WRONG_OWNER, "subkey is not an Ed25519 public key")
    public_key = bytes.fromhex(owner_public_key_hex)
    try:
        verified = verify_envelope(
            envelope,
            trusted_keys={key_id_of(public_key): public_key},
            payload_types={NODEINFO_TYPE},
            max_size=MAX_RECORD_BYTES,
        )
        doc = parse_json(verified.payload, max_size=MAX_RECORD_BYTES)
    except CryptoError as e:
        raise RecordRejected(Reason.BAD_SIGNATURE, str(e)) from None
    info = _decode(doc)
    if info.public_key != owner_public_key_hex or info.key_id != key_id_of(public_key):
        raise RecordRejected(Reason.WRONG_OWNER, "record describes another key than the one that signed it")
    if info.peer_id != peer_id_of(public_key):  # else one key could stand in for another node
        raise RecordRejected(Reason.WRONG_PEER_ID, "record names a peer id that is not its signing key's")
    if info.run_digest != run_digest:
        raise RecordRejected(Reason.WRONG_RUN, "record belongs to another run manifest")
    if expiration_time is not None and abs(expiration_time - info.expires_at) > 1e-3:
        raise RecordRejected(Reason.EXPIRY_MISMATCH, "DHT expiration differs from the signed expires_at")
    return info


def _decode(doc: Any) -> NodeInfo:
    """Strict schema: exact field set, exact types. Errors carry reason 'schema'."""
    try:
        _expect_keys(doc, {f.name for f in dataclasses.fields(NodeInfo)}, "record")
        if doc["schema"] != SCHEMA_VERSION:
            raise RecordRejected(Reason.SCHEMA, f"unsupported schema version {doc['schema']!r}")
        hw = doc["hardware"]
        _expect_keys(hw, {f.name for f in dataclasses.fields(Hardware)}, "hardware")
        hardware = Hardware(
            cpu=_typed(hw["cpu"], str, "hardware.cpu", max_len=200),
            cores=_typed(hw["cores"], int, "hardware.cores"),
            ram_gb=float(_typed(hw["ram_gb"], (int, float), "hardware.ram_gb")),
            gpus=tuple(
                (_typed(g[0], str, "gpu name", max_len=200), float(_typed(g[1], (int, float), "gpu memory")))
                for g in _typed(hw["gpus"], list, "hardware.gpus", max_len=16)
                if _typed(g, list, "gpu", max_len=2) and len(g) == 2
            ),
            mps=_typed(hw["mps"], bool, "hardware.mps"),
            torch=_typed(hw["torch"], bool, "hardware.torch"),
            engines=tuple(_typed(e, str, "engine", max_len=32) for e in _typed(hw["engines"], list, "engines", 8)),
        )
        hpke = _typed(doc["hpke_keys"], dict, "hpke_keys", max_len=4)
        for suite, key in hpke.items():
            _typed(key, str, f"hpke_keys.{suite}", max_len=4096)
        info = NodeInfo(
            run_digest=_typed(doc["run_digest"], str, "run_digest", max_len=64),
            peer_id=_typed(doc["peer_id"], str, "peer_id", max_len=128),
            key_id=_typed(doc["key_id"], str, "key_id", max_len=64),
            public_key=_typed(doc["public_key"], str, "public_key", max_len=64),
            hpke_keys=hpke,
            addrs=tuple(_typed(a, str, "addr", max_len=256) for a in _typed(doc["addrs"], list, "addrs", 16)),
            hardware=hardware,
            decode_tok_s=float(_typed(doc["decode_tok_s"], (int, float), "decode_tok_s")),
            role=_choice(doc["role"], ROLES, "role"),
            role_pref=_choice(doc["role_pref"], ROLE_PREFS, "role_pref"),
            state=_typed(doc["state"], str, "state", max_len=MAX_STATE_CHARS),
            adapter_version=_typed(doc["adapter_version"], int, "adapter_version"),
            software=_typed(doc["software"], str, "software", max_len=64),
            issued_at=float(_typed(doc["issued_at"], (int, float), "issued_at")),
            expires_at=float(_typed(doc["expires_at"], (int, float), "expires_at")),
            trainer=_trainer_state(doc["trainer"]),
            failed=_failed(doc["failed"]),
        )
    except (KeyError, IndexError, TypeError) as e:
        raise RecordRejected(Reason.SCHEMA, f"malformed record ({e})") from None
    return info


def _trainer_state(raw: Any) -> TrainerState:
    _expect_keys(raw, {f.name for f in dataclasses.fields(TrainerState)}, "trainer")
    return TrainerState(**{k: _typed(raw[k], int, f"trainer.{k}") for k in ("version", "step", "need")})


def _failed(raw: Any) -> dict:
    failed = _typed(raw, dict, "failed", max_len=len(WORKER_ROLES))
    for role, reason in failed.items():
        _choice(role, WORKER_ROLES, "failed role")
        _typed(reason, str, f"failed.{role}", max_len=MAX_FAILURE_CHARS)
    return failed


def _expect_keys(doc: Any, keys: set[str], where: str) -> None:
    if not isinstance(doc, dict) or set(doc) != keys:
        got = set(doc) if isinstance(doc, dict) else type(doc).__name__
        raise RecordRejected(Reason.SCHEMA, f"{where} fields {got} != expected {sorted(keys)}")


def _typed(value: Any, kind: type | tuple, where: str, max_len: int | None = None) -> Any:
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise RecordRejected(Reason.SCHEMA, f"{where} must be {kind}, not a boolean")
    if not isinstance(value, kind):
        raise RecordRejected(Reason.SCHEMA, f"{where} has type {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise RecordRejected(Reason.SCHEMA, f"{where} is longer than {max_len}")
    return value


def _choice(value: Any, choices: tuple, where: str) -> str:
    if value not in choices:
        raise RecordRejected(Reason.SCHEMA, f"{where} must be one of {choices}")
    return value
