"""crypto.identity: keys from one seed, key files, libp2p encodings (checked against hivemind itself)."""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.errors import KeyFileError
from crypto.identity import HPKE_SUITES, Identity, _base58btc, key_id_of, verify_signature

RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
LIBP2P_SPEC_SEED = bytes.fromhex("7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d")


def test_rfc8032_test1() -> None:
    ident = Identity.from_seed(RFC8032_SEED)
    assert ident.public_key.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert ident.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25b"
        "f5f0595bbe24655141438e7a100b"
    )


def test_libp2p_spec_vector() -> None:
    """peer-ids.md test vector (private key protobuf) and the peer id other implementations derive from it."""
    ident = Identity.from_seed(LIBP2P_SPEC_SEED)
    assert ident.libp2p_private_key().hex() == (
        "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
        "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
    )
    assert ident.peer_id == "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", ""), (b"\x00", "1"), (b"\x00\x00\x01", "112"), (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
     (bytes.fromhex("0000287fb4cd"), "11233QC4")],
)
def test_base58btc(data: bytes, expected: str) -> None:
    assert _base58btc(data) == expected


def test_protobufs_parse_with_hivemind_schema() -> None:
    from hivemind.proto import crypto_pb2

    ident = Identity.generate()
    private = crypto_pb2.PrivateKey.FromString(ident.libp2p_private_key())
    assert private.key_type == crypto_pb2.Ed25519
    assert private.data[32:] == ident.public_key
    assert Identity.from_seed(private.data[:32]) == ident
    public = crypto_pb2.PublicKey(key_type=crypto_pb2.Ed25519, data=ident.public_key).SerializeToString()
    assert ident.libp2p_private_key()[:2] == public[:2]
    assert ident.peer_id == _base58btc(b"\x00" + bytes([len(public)]) + public)


def test_hivemind_dht_runs_with_our_identity_and_peer_id(tmp_path: Path) -> None:
    import hivemind

    ident = Identity.generate()
    key_path = tmp_path / "p2p" / "identity.key"
    ident.write_libp2p_identity(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    dht = None
    try:
        dht = hivemind.DHT(
            start=True, identity_path=str(key_path), host_maddrs=["/ip4/127.0.0.1/tcp/0"],
            nat_port_map=False, check_if_identity_free=False,
        )
        assert str(dht.peer_id) == ident.peer_id
    finally:
        if dht is not None:
            dht.shutdown()


def test_seed_determines_everything() -> None:
    seed = os.urandom(32)
    a, b = Identity.from_seed(seed), Identity.from_seed(seed)
    assert a == b and hash(a) == hash(b)
    assert a.public_key == b.public_key and a.peer_id == b.peer_id
    for suite in HPKE_SUITES:
        assert a.hpke_public(suite) == b.hpke_public(suite)
    assert Identity.generate() != Identity.generate()


def test_hpke_keys_per_suite() -> None:
    ident = Identity.generate()
    assert len(ident.hpke_public()) == len(ident.hpke_public("x25519")) == 32
    assert len(ident.hpke_public("mlkem768-x25519")) == 1184 + 32
    # each suite has its own derived keys: the hybrid's X25519 half is not the plain X25519 key
    assert ident.hpke_public("mlkem768-x25519")[1184:] != ident.hpke_public("x25519")
    assert ident.hpke_public("x25519") != ident.public_key
    with pytest.raises(ValueError, match="unknown HPKE suite"):
        ident.hpke_public("p256")


@pytest.mark.parametrize("seed", [b"", b"\x00" * 31, b"\x00" * 33, "0" * 32])
def test_bad_seed(seed) -> None:
    with pytest.raises(ValueError):
        Identity.from_seed(seed)


def test_key_id_is_sha256_of_public_key() -> None:
    ident = Identity.generate()
    assert ident.key_id == hashlib.sha256(ident.public_key).hexdigest() == key_id_of(ident.public_key)
    with pytest.raises(ValueError):
        key_id_of(b"\x00" * 31)


def test_sign_and_verify() -> None:
    a, b = Identity.generate(), Identity.generate()
    sig = a.sign(b"data")
    assert verify_signature(a.public_key, sig, b"data")
    assert verify_signature(bytearray(a.public_key), sig, memoryview(b"data"))
    assert not verify_signature(b.public_key, sig, b"data")  # wrong key
    assert not verify_signature(a.public_key, sig, b"datA")  # wrong data
    assert not verify_signature(a.public_key, sig[:-1], b"data")  # truncated
    assert not verify_signature(a.public_key, bytes(64), b"data")


@pytest.mark.parametrize(
    ("public_key", "signature", "data"),
    [(None, b"x" * 64, b""), ("k" * 32, b"x" * 64, b""), (b"\x00" * 32, None, b""),
     (b"\xff" * 32, b"\xff" * 64, b""), (b"\x00" * 32, b"\x00" * 64, None), (1, 2, 3)],
)
def test_verify_signature_never_raises(public_key, signature, data) -> None:
    assert verify_signature(public_key, signature, data) is False


@settings(deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=20))
def test_fuzz_verify_signature(public_key: bytes, signature: bytes, data: bytes) -> None:
    assert verify_signature(public_key, signature, data) is False


def test_save_load_round_trip(tmp_path: Path) -> None:
    ident = Identity.generate()
    path = tmp_path / "a" / "b" / "node.key"
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path) == ident
    assert Identity.load(str(path)) == ident
    assert sorted(p.name for p in path.parent.iterdir()) == ["node.key"]  # no temp files left behind
    other = Identity.generate()
    other.save(path)  # replaces atomically
    assert Identity.load(path) == other
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004])
def test_load_refuses_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=f"chmod 600 {path}"):
        Identity.load(path)


def test_load_accepts_0400(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    ident = Identity.generate()
    ident.save(path)
    os.chmod(path, 0o400)
    assert Identity.load(path) == ident


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no identity file"):
        Identity.load(tmp_path / "absent.key")


def test_load_directory(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        Identity.load(tmp_path)


def _write_0600(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00" * 32,  # a raw seed is not our file format
        b'{"ed25519_seed":"00","type":"echo-swarm-identity","version":1}',
        b'{"ed25519_seed":"' + b"zz" * 32 + b'","type":"echo-swarm-identity","version":1}',
        b'{"ed25519_seed":"' + b"00" * 32 + b'","type":"echo-swarm-identity","version":2}',
        b'{"ed25519_seed":"' + b"00" * 32 + b'","type":"something-else","version":1}',
        b'{"ed25519_seed":"' + b"00" * 32 + b'","type":"echo-swarm-identity","version":1,"x":1}',
        b'{"ed25519_seed":1,"type":"echo-swarm-identity","version":1}',
        b"[]",
        b" " * 5000,
    ],
)
def test_load_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    _write_0600(path, content)
    with pytest.raises(KeyFileError, match=str(path)):
        Identity.load(path)


def test_load_libp2p_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p2p.key"
    Identity.generate().write_libp2p_identity(path)
    with pytest.raises(KeyFileError, match="corrupt"):
        Identity.load(path)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.builds(lambda b: b'{"ed25519_seed":' + b, st.binary(max_size=80)))
def test_fuzz_load(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.key"
        _write_0600(path, content)
        try:
            Identity.load(path)
        except KeyFileError:  # anything else (another CryptoError included) fails the test
            pass


def test_secret_stays_out_of_repr_and_pickle() -> None:
    seed = os.urandom(32)
    ident = Identity.from_seed(seed)
    assert seed.hex() not in repr(ident)
    with pytest.raises(TypeError):
        pickle.dumps(ident)
