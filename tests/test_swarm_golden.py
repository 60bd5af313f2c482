"""Golden vectors of the swarm's other signed formats: a NodeInfo record (DSSE) and a signed run
manifest, from fixed seeds and inputs. A failure means a signed format changed (every node of a
swarm must then be upgraded together): regenerate only deliberately, with
`python tests/test_swarm_golden.py --write`.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden") / "swarm.json"


def make_vectors() -> dict:
    from crypto.identity import Identity
    from swarm.manifest import load_manifest, parse_manifest, sign_manifest, write_manifest
    from swarm.records import Hardware, NodeInfo, TrainerState, sign_record

    owner, node = Identity.from_seed(b"\x03" * 32), Identity.from_seed(b"\x04" * 32)
    manifest = parse_manifest({"run": {"id": "golden", "owner_key_id": owner.key_id, "seed": 7},
                               "model": {"base": "tiny", "sha256": "a" * 64},
                               "swarm": {"trainer_keys": [node.key_id]}})
    with tempfile.TemporaryDirectory() as d:
        write_manifest(sign_manifest(manifest, owner), Path(d) / "run.toml")
        text = (Path(d) / "run.toml").read_text()
        digest = load_manifest(Path(d) / "run.toml").digest
    record = NodeInfo(
        run_digest=digest, peer_id=node.peer_id, key_id=node.key_id, public_key=node.public_key.hex(),
        hpke_keys={"x25519": node.hpke_public().hex()}, addrs=("/ip4/127.0.0.1/tcp/4100",),
        hardware=Hardware(cpu="golden cpu", cores=2, ram_gb=8.0, torch=True, engines=("transformers",)),
        decode_tok_s=100.0, role="trainer", role_pref="auto", state="ready", adapter_version=3, software="golden",
        issued_at=1_800_000_000.0, expires_at=1_800_000_010.0, trainer=TrainerState(version=3, step=3, need=8))
    return {"manifest_toml": text, "manifest_digest": digest, "record": sign_record(record, node).hex()}


def test_swarm_formats_match_the_golden_vectors():
    assert make_vectors() == json.loads(GOLDEN.read_text())


def test_the_golden_record_and_manifest_verify():
    from swarm.manifest import load_manifest
    from swarm.records import verify_record

    golden = json.loads(GOLDEN.read_text())
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "run.toml").write_text(golden["manifest_toml"])
        assert load_manifest(Path(d) / "run.toml").digest == golden["manifest_digest"]
    envelope = bytes.fromhex(golden["record"])
    from crypto.identity import Identity

    node = Identity.from_seed(b"\x04" * 32)
    info = verify_record(envelope, owner_public_key_hex=node.public_key.hex(), run_digest=golden["manifest_digest"])
    assert info.trainer.need == 8 and info.peer_id == node.peer_id


if __name__ == "__main__" and "--write" in sys.argv:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    GOLDEN.write_text(json.dumps(make_vectors(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
