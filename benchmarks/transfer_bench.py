"""Chunk transfer peer -> peer: sealed + signed vs a raw hivemind stream of the same bytes (goal >= 0.8).

Two hivemind DHT peers on 127.0.0.1 in this process, each with its own swarm.transport.Transport
(own event loop, own replica of its p2pd). For each chunk size, median seconds per transfer of

    raw         Transport.request(encoded chunk) -> the handler returns a tiny ack (same framing)
    raw_decode  the same, but the handler also runs decode_chunk (what any trainer must do anyway)
    full        the rollout -> trainer path: sign_envelope + seal to the receiver's HPKE key ->
                request -> open_chunk (open_sealed + verify_envelope + decode_chunk) -> ack

ratio = raw / full (throughput ratio; goal >= 0.8). ratio_same_decode = raw_decode / full leaves out
the parsing both would need, so it is the cost of signing + sealing on the wire. The breakdown times
each step alone, off the wire; "other" is what the full transfer costs beyond raw + those steps
(more bytes, thread hops; a residual of medians, so noise can take it below 0). All ops run
interleaved in shuffled order after a warm-up, because this box is shared. Prints one JSON object on stdout and a one-line summary on stderr.

    python benchmarks/transfer_bench.py [--quick] [--repeats N]
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
os.environ.setdefault("HIVEMIND_LOGLEVEL", "ERROR")

import numpy as np

from crypto.envelope import sign_envelope, verify_envelope
from crypto.identity import Identity
from crypto.sealing import SealContext, open_sealed, seal
from nodes.trainer.intake import open_chunk
from swarm import chunk as trajectory
from swarm.chunk import CHUNK_TYPE, ChunkLimits, chunk_digest, decode_chunk, new_chunk_id
from swarm.transport import Transport, make_transport

RUN_ID, VOCAB, PROMPT_TOKENS = "bench-run", 32000, 24
ACK = b'{"ok":true}'
LIMITS = ChunkLimits(vocab_size=VOCAB)
MAX_REQUEST = LIMITS.sealed_bytes  # as nodes/services.py serves `chunks`
SIZES = {  # label -> (groups, completions per group, tokens per completion), (quick, normal) repeats
    "4x8x16": ((4, 8, 16), (20, 200)),  # PROMPTS_PER_CHUNK x grpo.group_size x short completions
    "64x16x128": ((64, 16, 128), (5, 25)),  # 131072 tokens x (int32 id + float32 log-prob) ~ 1 MiB
}


def make_chunk(shape: tuple[int, int, int], producer: Identity, rng: np.random.Generator) -> bytes:
    """Encoded chunk of random token ids and log-probs (content does not change the work done)."""
    n_groups, n, length = shape
    groups = tuple(trajectory.TrajectoryGroup(
        tuple(rng.integers(0, VOCAB, PROMPT_TOKENS).tolist()),
        tuple(tuple(rng.integers(0, VOCAB, length).tolist()) for _ in range(n)),
        tuple(tuple((-rng.exponential(2.0, length)).tolist()) for _ in range(n)),
    ) for _ in range(n_groups))
    return trajectory.encode_chunk(trajectory.TrajectoryChunk(
        run_id=RUN_ID, chunk_id=new_chunk_id(), producer_key_id=producer.key_id, policy_version=3,
        task="sort_digits", sampling={"temperature": 1.0, "max_new_tokens": length}, created_at=time.time(),
        groups=groups))


def medians(ops: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per op; shuffled interleaving spreads other processes' load over all ops alike."""
    for _ in range(warmup):
        for fn in ops.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in ops}
    order, rng = list(ops), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            ops[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def start_dht(dhts: list, **extra) -> None:
    """Loopback only, no UPnP, explicit addresses (DESIGN.md section 7); a timeout so a bad start can't hang us."""
    import hivemind

    dht = hivemind.DHT(start=True, await_ready=False, host_maddrs=["/ip4/127.0.0.1/tcp/0"], nat_port_map=False,
                       startup_timeout=30, bootstrap_timeout=30, **extra)
    dhts.append(dht)  # registered before waiting, so the caller shuts it down whatever happens
    dht.wait_until_ready(timeout=40)


def measure(shape, repeats: int, warmup: int, tx: Transport, to: str, sender: Identity, receiver: Identity) -> dict:
    payload = make_chunk(shape, sender, np.random.default_rng(0))
    recipients, members = {receiver.key_id: receiver.hpke_public()}, {sender.key_id: sender.public_key}

    def call(name: str, data: bytes) -> None:
        if tx.request(to, name, data, max_response=64, timeout=60) != ACK:
            raise RuntimeError(f"{name}: unexpected reply")

    def sign() -> bytes:
        return sign_envelope(CHUNK_TYPE, payload, [sender])

    def seal_(envelope: bytes) -> bytes:  # a fresh message id per chunk, as nodes/rollout.py does
        return seal(envelope, recipients, SealContext(RUN_ID, sender.key_id, new_chunk_id()))

    envelope, blob = sign(), seal_(sign())
    body = open_sealed(blob, receiver, run_id=RUN_ID, max_size=MAX_REQUEST).body
    verified = verify_envelope(body, trusted_keys=members, payload_types={CHUNK_TYPE}, max_size=MAX_REQUEST).payload
    _, attestation = open_chunk(blob, identity=receiver, run_id=RUN_ID, members=members, limits=LIMITS)
    if attestation.digest != chunk_digest(payload):  # the full path delivers exactly the bytes the raw path does
        raise RuntimeError("full path changed the chunk")
    t = medians({
        "raw": lambda: call("bench/raw", payload),
        "raw_decode": lambda: call("bench/raw_decode", payload),
        "full": lambda: call("bench/full", seal_(sign())),
        "sign": sign,
        "seal": lambda: seal_(envelope),
        "open": lambda: open_sealed(blob, receiver, run_id=RUN_ID, max_size=MAX_REQUEST),
        "verify": lambda: verify_envelope(body, trusted_keys=members, payload_types={CHUNK_TYPE},
                                          max_size=MAX_REQUEST),
        "decode": lambda: decode_chunk(verified, limits=LIMITS),
    }, repeats, warmup)
    steps = {k: t[k] for k in ("sign", "seal", "open", "verify", "decode")}
    breakdown = {"wire_raw": t["raw"], **steps, "other": t["full"] - t["raw"] - sum(steps.values())}
    return {
        "shape_groups_x_samples_x_tokens": list(shape),
        "payload_bytes": len(payload),
        "wire_bytes_full": len(blob),
        "repeats": repeats,
        "median_s": {k: round(t[k], 6) for k in ("raw", "raw_decode", "full")},
        "MBps": {k: round(len(payload) / t[k] / 1e6, 2) for k in ("raw", "raw_decode", "full")},
        "ratio": round(t["raw"] / t["full"], 3),
        "ratio_same_decode": round(t["raw_decode"] / t["full"], 3),
        "breakdown_s": {k: round(v, 6) for k, v in breakdown.items()},
        "breakdown_share_of_full": {k: round(v / t["full"], 3) for k, v in breakdown.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=0, help="repeats per size (default: by size)")
    args = parser.parse_args()
    started = time.perf_counter()
    sender, receiver = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    members = {sender.key_id: sender.public_key}

    def on_full(_remote: str, blob: bytes) -> bytes:  # what the trainer's door does, minus bookkeeping
        open_chunk(blob, identity=receiver, run_id=RUN_ID, members=members, limits=LIMITS)
        return ACK

    results = {"benchmark": "chunk_transfer", "goal": "ratio >= 0.8", "quick": args.quick,
               "suite": "x25519", "aead": "chacha20-poly1305", "python": platform.python_version(),
               "cpus": os.cpu_count()}
    dhts: list = []
    transports: list[Transport] = []
    try:
        start_dht(dhts)
        start_dht(dhts, initial_peers=[str(m) for m in dhts[0].get_visible_maddrs()])
        for dht in dhts:  # one by one, so a failed start still closes the first
            transports.append(make_transport("p2p", dht=dht))
        rx, tx = transports
        rx.serve("bench/raw", lambda _r, _d: ACK, max_request=MAX_REQUEST)
        rx.serve("bench/raw_decode", lambda _r, d: decode_chunk(d, limits=LIMITS) and ACK, max_request=MAX_REQUEST)
        rx.serve("bench/full", on_full, max_request=MAX_REQUEST)
        to = str(dhts[0].peer_id)
        for label, (shape, (quick, normal)) in SIZES.items():
            repeats = args.repeats or (quick if args.quick else normal)
            results[label] = measure(shape, repeats, 1 if args.quick else 3, tx, to, sender, receiver)
    finally:
        for t in transports:
            t.close()
        for d in dhts:
            d.shutdown()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))
    print("transfer_bench: " + " | ".join(
        f"{k} ({r['payload_bytes'] / 1e3:.0f} kB): raw {r['MBps']['raw']} MB/s, full {r['MBps']['full']} MB/s, "
        f"ratio {r['ratio']} (same decode {r['ratio_same_decode']})"
        for k, r in results.items() if isinstance(r, dict)) + f" | goal 0.8 | {results['wall_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
