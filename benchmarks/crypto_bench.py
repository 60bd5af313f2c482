"""Throughput of the real seal/open paths against the bare AEAD, measured in the same run.

Prints one JSON object. For each message size: MB/s (1 MB = 1e6 bytes of payload) of
``sign_envelope -> seal`` (1 recipient) and ``open_sealed -> verify_envelope``, of bare
ChaCha20-Poly1305 encrypt/decrypt of the same bytes, their ratios, and the floor set by Ed25519
itself (it hashes the whole PAE with SHA-512: twice to sign, once to verify), so the overhead that
is ours can be told from the cost of the primitives. Median of several repeats.

    python benchmarks/crypto_bench.py [--repeats N] [--json-envelope]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from crypto.envelope import pae, sign_envelope, verify_envelope  # noqa: E402
from crypto.identity import Identity, verify_signature  # noqa: E402
from crypto.sealing import SealContext, open_sealed, seal  # noqa: E402

PAYLOAD_TYPE = "application/vnd.echo-swarm.bench+bytes"


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(size: int, repeats: int, encoding: str) -> dict:
    payload = os.urandom(size)
    sender, recipient = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    recipients = {recipient.key_id: recipient.hpke_public()}
    trusted = {sender.key_id: sender.public_key}
    ctx = SealContext("bench-run", sender.key_id, "m-1")
    limit = 2 * size + 65536

    def sign_seal() -> bytes:
        return seal(sign_envelope(PAYLOAD_TYPE, payload, [sender], encoding=encoding), recipients, ctx)

    blob = sign_seal()

    def open_verify() -> bytes:
        opened = open_sealed(blob, recipient, run_id="bench-run", max_size=limit)
        return verify_envelope(opened.body, trusted_keys=trusted, payload_types={PAYLOAD_TYPE},
                               max_size=limit).payload

    assert open_verify() == payload
    aead, nonce = ChaCha20Poly1305(os.urandom(32)), bytes(12)
    ciphertext = aead.encrypt(nonce, payload, b"")
    body = pae(PAYLOAD_TYPE, payload)
    sig = sender.sign(body)
    t = {
        "sign_seal": _median_seconds(sign_seal, repeats),
        "open_verify": _median_seconds(open_verify, repeats),
        "aead_encrypt": _median_seconds(lambda: aead.encrypt(nonce, payload, b""), repeats),
        "aead_decrypt": _median_seconds(lambda: aead.decrypt(nonce, ciphertext, b""), repeats),
        "ed25519_sign": _median_seconds(lambda: sender.sign(body), repeats),
        "ed25519_verify": _median_seconds(lambda: verify_signature(sender.public_key, sig, body), repeats),
    }
    mbps = {k: round(size / v / 1e6, 1) for k, v in t.items()}
    return {
        "bytes": size,
        "repeats": repeats,
        "MBps": mbps,
        "ratio_sign_seal_vs_aead_encrypt": round(t["aead_encrypt"] / t["sign_seal"], 3),
        "ratio_open_verify_vs_aead_decrypt": round(t["aead_decrypt"] / t["open_verify"], 3),
        # best ratio possible while Ed25519 signs the whole PAE, and how close we get to it
        "floor_ratio_seal": round(t["aead_encrypt"] / (t["aead_encrypt"] + t["ed25519_sign"]), 3),
        "floor_ratio_open": round(t["aead_decrypt"] / (t["aead_decrypt"] + t["ed25519_verify"]), 3),
        "efficiency_seal": round((t["aead_encrypt"] + t["ed25519_sign"]) / t["sign_seal"], 3),
        "efficiency_open": round((t["aead_decrypt"] + t["ed25519_verify"]) / t["open_verify"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=0, help="repeats per measurement (default: by size)")
    parser.add_argument("--json-envelope", action="store_true", help="use the DSSE JSON envelope encoding")
    args = parser.parse_args()
    encoding = "json" if args.json_envelope else "binary"
    results = {
        "benchmark": "crypto_seal_open",
        "envelope_encoding": encoding,
        "suite": "x25519",
        "aead": "chacha20-poly1305",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "goal": "ratio >= 0.8 at 4 MiB",
    }
    for label, size, default_repeats in (("64KiB", 64 * 1024, 201), ("4MiB", 4 * 1024 * 1024, 21)):
        results[label] = measure(size, args.repeats or default_repeats, encoding)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
