"""Golden vectors: fixed seeds and inputs -> the exact bytes our formats produce.

Tests compare against the committed ``crypto/golden/*.json`` forever after, so a change to any key
derivation, encoding or signature input shows up as a failing test, never as a silent fork.
Sealing is randomized: its vectors are blobs sealed once, which must keep *opening* to the same body.

    python -m crypto.golden_gen           # check: report what differs from the committed files
    python -m crypto.golden_gen --write   # regenerate deliberately (re-seals the sealing vectors)

Never run by the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from .envelope import convert_envelope, pae, sign_envelope
from .identity import HPKE_SUITES, Identity
from .sealing import SealContext, open_sealed, seal

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SEEDS = {
    "alice": bytes(range(32)),
    "bob": hashlib.sha256(b"echo-swarm golden seed bob").digest(),
    "carol": hashlib.sha256(b"echo-swarm golden seed carol").digest(),
}
MESSAGE = b"echo-swarm golden message"
PAYLOAD_TYPE = "application/vnd.echo-swarm.golden+json"
PAYLOAD = b'{"chunk_id":"00112233445566778899aabbccddeeff","policy_version":7,"run_id":"golden-run"}'
DSSE_SPEC_PAE = ("http://example.com/HelloWorld", b"hello world")
SEAL_BODY = b"sealed golden body \x00\x01\x02\xff"
SEAL_CONTEXT = {"run_id": "golden-run", "sender_key_id": "", "message_id": "golden-message-1"}


def identity_vectors() -> dict:
    out = {}
    for name, seed in SEEDS.items():
        ident = Identity.from_seed(seed)
        out[name] = {
            "seed": seed.hex(),
            "public_key": ident.public_key.hex(),
            "key_id": ident.key_id,
            "peer_id": ident.peer_id,
            "libp2p_private_key": ident.libp2p_private_key().hex(),
            "libp2p_public_key": (b"\x08\x01\x12\x20" + ident.public_key).hex(),
            "hpke_public": {suite: ident.hpke_public(suite).hex() for suite in HPKE_SUITES},
            "signature_of_message": ident.sign(MESSAGE).hex(),
        }
    return {"message": MESSAGE.hex(), "identities": out}


def envelope_vectors() -> dict:
    alice, bob = Identity.from_seed(SEEDS["alice"]), Identity.from_seed(SEEDS["bob"])
    one = sign_envelope(PAYLOAD_TYPE, PAYLOAD, [alice])
    two = sign_envelope(PAYLOAD_TYPE, PAYLOAD, [alice, bob])
    return {
        "dsse_spec_pae": {
            "payload_type": DSSE_SPEC_PAE[0],
            "payload": DSSE_SPEC_PAE[1].hex(),
            "pae": pae(*DSSE_SPEC_PAE).hex(),
        },
        "payload_type": PAYLOAD_TYPE,
        "payload": PAYLOAD.hex(),
        "pae": pae(PAYLOAD_TYPE, PAYLOAD).hex(),
        "signed_by_alice": {
            "binary": one.hex(),
            "json": convert_envelope(one, encoding="json", max_size=1 << 20).decode("utf-8"),
        },
        "signed_by_alice_and_bob": {
            "binary": two.hex(),
            "json": convert_envelope(two, encoding="json", max_size=1 << 20).decode("utf-8"),
        },
    }


def sealing_vectors() -> dict:
    alice, carol = Identity.from_seed(SEEDS["alice"]), Identity.from_seed(SEEDS["carol"])
    ctx = SealContext(**{**SEAL_CONTEXT, "sender_key_id": alice.key_id})
    blobs = {}
    for suite in HPKE_SUITES:
        for aead in ("chacha20-poly1305", "aes-256-gcm"):
            recipients = {carol.key_id: carol.hpke_public(suite), alice.key_id: alice.hpke_public(suite)}
            blob = seal(SEAL_BODY, recipients, ctx, suite, aead=aead)
            assert open_sealed(blob, carol, run_id=ctx.run_id, max_size=1 << 20).body == SEAL_BODY
            blobs[f"{suite}/{aead}"] = blob.hex()
    return {
        "recipients": ["alice", "carol"],
        "body": SEAL_BODY.hex(),
        "context": {**SEAL_CONTEXT, "sender_key_id": alice.key_id},
        "blobs": blobs,
    }


GENERATORS = {"identity": identity_vectors, "envelope": envelope_vectors, "sealing": sealing_vectors}


def load(name: str) -> dict:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="check or regenerate crypto golden vectors")
    parser.add_argument("--write", action="store_true", help="overwrite crypto/golden/*.json")
    args = parser.parse_args(argv)
    status = 0
    for name, gen in GENERATORS.items():
        path = GOLDEN_DIR / f"{name}.json"
        fresh = gen()
        if args.write:
            GOLDEN_DIR.mkdir(exist_ok=True)
            path.write_text(json.dumps(fresh, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            print(f"wrote {path}")
        elif name == "sealing":
            print(f"{name}: randomized; checked by the tests (blobs must open)")
        elif not path.exists() or load(name) != fresh:
            print(f"{name}: DIFFERS from {path}")
            status = 1
        else:
            print(f"{name}: matches")
    return status


if __name__ == "__main__":
    sys.exit(main())
