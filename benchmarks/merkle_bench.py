"""Cost of RFC 6962 roots and proofs over an in-memory log of N leaves (default 100,000).

Prints one JSON object, seconds as medians of repeats: hashing N leaf inputs, ``root_of`` over N
leaf hashes (no cache), building a ``MerkleTree`` by N appends (which fills its subtree cache),
then from that tree: the root now and at earlier sizes, an inclusion and a consistency proof, and
verifying each.

    python benchmarks/merkle_bench.py [--leaves N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crypto.merkle import MerkleTree, leaf_hash, root_of, verify_consistency, verify_inclusion


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, repeats = args.leaves, args.repeats
    rng = random.Random(0)
    inputs = [b"entry %d" % i for i in range(n)]
    hashes = [leaf_hash(d) for d in inputs]
    tree = MerkleTree.from_leaf_hashes(hashes)
    root = tree.root()
    assert root == root_of(hashes)
    sizes = [rng.randrange(1, n + 1) for _ in range(1000)]
    index, old = rng.randrange(n), rng.randrange(1, n)
    incl, cons = tree.inclusion_proof(index), tree.consistency_proof(old)
    old_root = tree.root(old)
    per_call = 1000

    def per(fn):
        return _median(lambda: [fn() for _ in range(per_call)], repeats) / per_call

    result = {
        "leaves": n,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "leaf_hash_all_s": _median(lambda: [leaf_hash(d) for d in inputs], repeats),
        "root_of_s": _median(lambda: root_of(hashes), repeats),
        "tree_build_by_append_s": _median(lambda: MerkleTree(inputs), repeats),
        "tree_root_now_s": per(tree.root),
        "tree_root_earlier_size_s": _median(lambda: [tree.root(s) for s in sizes], repeats) / len(sizes),
        "inclusion_proof_s": per(lambda: tree.inclusion_proof(index)),
        "consistency_proof_s": per(lambda: tree.consistency_proof(old)),
        "verify_inclusion_s": per(lambda: verify_inclusion(hashes[index], index, n, incl, root)),
        "verify_consistency_s": per(lambda: verify_consistency(old, n, old_root, root, cons)),
        "inclusion_proof_hashes": len(incl),
        "consistency_proof_hashes": len(cons),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
