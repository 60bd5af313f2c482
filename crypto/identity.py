"""A node's identity: one 32-byte Ed25519 seed, from which every key it uses is derived.

The same Ed25519 key signs our envelopes and is the libp2p identity of the node's hivemind peer, so
a peer id, a key id and a signature all name one key. The HPKE (sealing) keys are derived from the
seed with HKDF-SHA256 under fixed labels, so the key file stays 32 bytes of secret and a node's
sealing keys can never drift away from its signing key.

Key file format (canonical JSON, mode 0600, written tmp-then-rename):
``{"ed25519_seed":"<64 hex>","type":"echo-swarm-identity","version":1}``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .canonical import canonical_json, parse_json
from .errors import CanonicalError, KeyFileError

HPKE_SUITES = ("x25519", "mlkem768-x25519")
"""Sealing suites by name; ``crypto.sealing`` maps them to RFC 9180 suites."""

_FILE_TYPE = "echo-swarm-identity"
_MAX_KEY_FILE = 4096
_LABEL = b"echo-swarm/v1/hpke/"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _hkdf(seed: bytes, label: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=_LABEL + label).derive(seed)


def _base58btc(data: bytes) -> str:
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def _write_secret(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (parent directories created 0700)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_secret(path: str | os.PathLike) -> bytes:
    """Read a small secret file, refusing one that group or others can access."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyFileError(
            f"no identity file at {path}: create one with Identity.generate().save(path)"
        ) from None
    except PermissionError:
        raise KeyFileError(f"cannot read identity file {path}: permission denied (check its owner)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open identity file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"identity path {path} is not a regular file")
        if os.name == "posix" and st.st_mode & 0o077:
            raise KeyFileError(
                f"identity file {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o});"
                f" run `chmod 600 {path}`"
            )
        try:
            data = os.read(fd, _MAX_KEY_FILE + 1)
        except OSError as exc:
            raise KeyFileError(f"cannot read identity file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return data


class Identity:
    """An Ed25519 identity plus the keys derived from its seed. Never prints or pickles its secret."""

    __slots__ = ("_hpke", "_pk", "_seed", "_sk")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != 32:
            raise ValueError("an identity seed is exactly 32 bytes")
        self._seed = bytes(seed)
        self._sk = Ed25519PrivateKey.from_private_bytes(self._seed)
        self._pk = self._sk.public_key().public_bytes_raw()
        self._hpke: dict[str, tuple[Any, bytes]] = {}

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(seed)

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        doc = {"ed25519_seed": self._seed.hex(), "type": _FILE_TYPE, "version": 1}
        _write_secret(path, canonical_json(doc) + b"\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Identity:
        data = _read_secret(path)
        if len(data) > _MAX_KEY_FILE:
            raise KeyFileError(f"identity file {path} is corrupt: larger than {_MAX_KEY_FILE} bytes")
        try:
            doc = parse_json(data, max_size=_MAX_KEY_FILE)
        except CanonicalError as exc:
            raise KeyFileError(f"identity file {path} is corrupt: {exc}") from None
        if not isinstance(doc, dict) or doc.get("type") != _FILE_TYPE:
            raise KeyFileError(f"{path} is not an echo-swarm identity file")
        if doc.get("version") != 1 or set(doc) != {"ed25519_seed", "type", "version"}:
            raise KeyFileError(f"identity file {path} has an unsupported version or fields")
        seed_hex = doc["ed25519_seed"]
        if not isinstance(seed_hex, str) or len(seed_hex) != 64:
            raise KeyFileError(f"identity file {path} is corrupt: the seed is not 64 hex digits")
        try:
            return cls(bytes.fromhex(seed_hex))
        except ValueError:
            raise KeyFileError(f"identity file {path} is corrupt: the seed is not 64 hex digits") from None

    def write_libp2p_identity(self, path: str | os.PathLike) -> None:
        """Write the libp2p private key file for hivemind's ``identity_path`` (atomic, 0600)."""
        _write_secret(path, self.libp2p_private_key())

    # -- public material -----------------------------------------------------------------------
    @property
    def public_key(self) -> bytes:
        """Raw 32-byte Ed25519 public key."""
        return self._pk

    @property
    def key_id(self) -> str:
        return key_id_of(self._pk)

    def libp2p_private_key(self) -> bytes:
        """libp2p ``PrivateKey`` protobuf: {1: KeyType Ed25519 = 1, 2: seed || public key (64 bytes)}."""
        return b"\x08\x01\x12\x40" + self._seed + self._pk

    @property
    def peer_id(self) -> str:
        """libp2p peer id: base58btc(identity multihash of the ``PublicKey`` protobuf {1: 1, 2: pub})."""
        return peer_id_of(self._pk)

    def hpke_public(self, suite: str = "x25519") -> bytes:
        """HPKE recipient public key bytes for ``suite`` (32 bytes; 1184 + 32 for the hybrid)."""
        return self._hpke_keys(suite)[1]

    def hpke_private_key(self, suite: str = "x25519") -> Any:
        """The library's HPKE private key object for ``suite``; for ``crypto.sealing`` only."""
        return self._hpke_keys(suite)[0]

    def _hpke_keys(self, suite: str) -> tuple[Any, bytes]:
        if suite not in self._hpke:
            if suite == "x25519":
                sk = x25519.X25519PrivateKey.from_private_bytes(_hkdf(self._seed, b"x25519", 32))
                pub = sk.public_key().public_bytes_raw()
            elif suite == "mlkem768-x25519":
                # cryptography exposes seed constructors for both halves (ML-KEM's 64-byte d||z seed and
                # a raw X25519 scalar) and joins them in MLKEM768X25519PrivateKey. It has no encoding
                # for the joined public key, so ours is ML-KEM-768 ek (1184) || X25519 (32), the order
                # of the draft hybrid KEM encodings. Each half has its own label: no key is shared
                # between suites.
                pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(_hkdf(self._seed, b"mlkem768-x25519/mlkem", 64))
                ec = x25519.X25519PrivateKey.from_private_bytes(
                    _hkdf(self._seed, b"mlkem768-x25519/x25519", 32)
                )
                sk = hpke.MLKEM768X25519PrivateKey(pq, ec)
                pub = pq.public_key().public_bytes_raw() + ec.public_key().public_bytes_raw()
            else:
                raise ValueError(f"unknown HPKE suite {suite!r}; known: {', '.join(HPKE_SUITES)}")
            self._hpke[suite] = (sk, pub)
        return self._hpke[suite]

    # -- signing -------------------------------------------------------------------------------
    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``data`` (any bytes-like object)."""
        return self._sk.sign(data)

    def __repr__(self) -> str:
        return f"Identity(key_id={self.key_id[:16]}…)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other._pk == self._pk

    def __hash__(self) -> int:
        return hash(self._pk)

    def __reduce__(self):  # keep the seed out of pickles and logs by accident
        raise TypeError("Identity objects are not picklable; save() them to a 0600 file instead")


def peer_id_of(public_key: bytes) -> str:
    """The libp2p peer id of a raw Ed25519 public key: base58btc(identity multihash of the
    ``PublicKey`` protobuf {1: KeyType Ed25519, 2: key}); what libp2p authenticates on a stream."""
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != 32:
        raise ValueError("an Ed25519 public key is exactly 32 bytes")
    public_pb = b"\x08\x01\x12\x20" + bytes(public_key)
    return _base58btc(bytes([0x00, len(public_pb)]) + public_pb)


def key_id_of(public_key: bytes) -> str:
    """Key id = lowercase hex SHA-256 of the raw 32-byte Ed25519 public key."""
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != 32:
        raise ValueError("an Ed25519 public key is exactly 32 bytes")
    return hashlib.sha256(public_key).hexdigest()


@functools.lru_cache(maxsize=1024)
def _ed25519_public(public_key: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature by ``public_key`` over ``data``. Never raises."""
    try:
        if isinstance(public_key, (bytearray, memoryview)):
            public_key = bytes(public_key)
        if not isinstance(public_key, bytes) or len(public_key) != 32 or len(signature) != 64:
            return False
        _ed25519_public(public_key).verify(signature, data)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False
