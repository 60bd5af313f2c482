"""Golden vectors of the provenance formats: a version entry (in-toto Statement in DSSE), a C2SP
checkpoint signed note with a witness cosignature, and an inclusion proof, from fixed seeds and
inputs. A failure means a signed format changed and every existing log would stop verifying:
regenerate only deliberately, with `python tests/test_provenance_golden.py --write`.
"""
from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden") / "provenance.json"


def make_vectors() -> dict:
    from conftest import trust_root

    from crypto.identity import Identity
    from swarm.provenance import checkpoints
    from swarm.provenance.log import ProvenanceLog
    from swarm.versions import AdapterVersion, ChunkAttestation, entry_hash, sign_version

    trainer, witness = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    with tempfile.TemporaryDirectory() as d:
        log = ProvenanceLog(Path(d), trust_root("golden", "d" * 64, trainer_keys=(trainer.key_id,)))
        log.learn_keys({trainer.key_id: trainer.public_key})
        for v in range(3):
            head = log.head()
            record = AdapterVersion(
                run_id="golden", run_digest="d" * 64, version=v, step=v, parent_version=head.version if head else -1,
                parent_entry=entry_hash(log.entries[-1]) if head else "",
                parent_sha256=head.adapter_sha256 if head else "",
                files=(("adapter_config.json", "c" * 64), ("adapter_model.safetensors", f"{v:x}" * 64)),
                base_sha256="b" * 64, trainer_key_id=trainer.key_id, grpo_digest="e" * 64,
                chunks=(ChunkAttestation("1" * 64, "2" * 64, "3" * 64),) if v else (), created_at=1_800_000_000.5)
            log.append(sign_version(record, trainer))
        note = checkpoints.sign(log, trainer)
        note = checkpoints.add_cosignature(note, checkpoints.cosign(note, witness, now=1_800_000_000))
        return {
            "entries": [e.decode() for e in log.entries],
            "leaf_hashes": [entry_hash(e) for e in log.entries],
            "root": base64.b64encode(log.root()).decode(),
            "checkpoint": note.decode(),
            "inclusion_proof_of_1": [base64.b64encode(h).decode() for h in log.inclusion_proof(1)],
        }


def test_provenance_formats_match_the_golden_vectors():
    assert make_vectors() == json.loads(GOLDEN.read_text())


def test_the_golden_log_verifies():
    from crypto.merkle import verify_inclusion

    golden = json.loads(GOLDEN.read_text())
    proof = [base64.b64decode(h) for h in golden["inclusion_proof_of_1"]]
    verify_inclusion(bytes.fromhex(golden["leaf_hashes"][1]), 1, 3, proof, base64.b64decode(golden["root"]))


if __name__ == "__main__" and "--write" in sys.argv:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(make_vectors(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
