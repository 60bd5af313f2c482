"""Throughput of the real seal/open paths against the bare AEAD, measured in the same run.

Prints one JSON object. For each message size: MB/s (1 MB = 1e6 bytes of payload) of
``sign_envelope -> seal`` (1 recipient) and ``open_sealed -> verify_envelope``, of bare
ChaCha20-Poly1305 encrypt/decrypt of the same bytes (one-shot, returning new bytes as a caller would,
and encrypt_into a reused buffer: the compute alone), their ratios, and the floor set by the
primitives the path cannot skip -- Ed25519 over the whole PAE (SHA-512: twice to sign, once to
verify) and one HPKE key wrap -- so our own overhead can be told from theirs. Medians of
interleaved repeats.

    python benchmarks/crypto_bench.py [--repeats N] [--json-envelope]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crypto.envelope import pae, sign_envelope, verify_envelope
from crypto.identity import Identity, verify_signature
from crypto.sealing import SealContext, open_sealed, seal

PAYLOAD_TYPE = "application/vnd.echo-swarm.bench+bytes"
HPKE_X25519 = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def _medians(ops: dict, repeats: int) -> dict[str, float]:
    """Median seconds per op; ops run interleaved, so load from other processes hits all alike."""
    for fn in ops.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in ops}
    order, rng = list(ops), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # no op always runs right after the same neighbour (allocator state, caches)
        for name in order:
            t0 = time.perf_counter()
            ops[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


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
    out = bytearray(len(ciphertext))
    body = pae(PAYLOAD_TYPE, payload)
    sig = sender.sign(body)
    wrap = HPKE_X25519.encrypt(bytes(32), recipient.hpke_private_key().public_key(), b"info")
    t = _medians(
        {
            "sign_seal": sign_seal,
            "open_verify": open_verify,
            "aead_encrypt": lambda: aead.encrypt(nonce, payload, b""),
            "aead_decrypt": lambda: aead.decrypt(nonce, ciphertext, b""),
            "aead_encrypt_into": lambda: aead.encrypt_into(nonce, payload, b"", out),
            "ed25519_sign": lambda: sender.sign(body),
            "ed25519_verify": lambda: verify_signature(sender.public_key, sig, body),
            "hpke_wrap": lambda: HPKE_X25519.encrypt(bytes(32), recipient.hpke_private_key().public_key(), b"info"),
            "hpke_unwrap": lambda: HPKE_X25519.decrypt(wrap, recipient.hpke_private_key(), b"info"),
        },
        repeats,
    )
    floor_seal = t["aead_encrypt"] + t["ed25519_sign"] + t["hpke_wrap"]
    floor_open = t["aead_decrypt"] + t["ed25519_verify"] + t["hpke_unwrap"]
    return {
        "bytes": size,
        "repeats": repeats,
        "MBps": {k: round(size / v / 1e6, 1) for k, v in t.items() if not k.startswith("hpke")},
        "hpke_us": {k: round(v * 1e6, 1) for k, v in t.items() if k.startswith("hpke")},
        "ratio_sign_seal_vs_aead_encrypt": round(t["aead_encrypt"] / t["sign_seal"], 3),
        "ratio_open_verify_vs_aead_decrypt": round(t["aead_decrypt"] / t["open_verify"], 3),
        # against the AEAD's compute alone (into a reused buffer: no allocation, no page faults)
        "ratio_sign_seal_vs_aead_encrypt_into": round(t["aead_encrypt_into"] / t["sign_seal"], 3),
        # the best these ratios can be while Ed25519 signs the whole PAE and HPKE wraps the key ...
        "floor_ratio_seal": round(t["aead_encrypt"] / floor_seal, 3),
        "floor_ratio_open": round(t["aead_decrypt"] / floor_open, 3),
        # ... and the share of the real path's time spent in those primitives (1.0 = no overhead of ours)
        "efficiency_seal": round(floor_seal / t["sign_seal"], 3),
        "efficiency_open": round(floor_open / t["open_verify"], 3),
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
    for label, size, default_repeats in (("64KiB", 64 * 1024, 201), ("4MiB", 4 * 1024 * 1024, 51)):
        results[label] = measure(size, args.repeats or default_repeats, encoding)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
