"""Signed weight provenance: every adapter version's entry in an append-only, witnessed log.

    ../versions.py  the entry: an in-toto Statement v1 (DSSE, JSON) naming every file of a version,
                    its parent entry, and the chunks (and their producers) it was trained on
    log.py          the log: entries in chain order in an RFC 6962 tree, kept by every node
    checkpoints.py  C2SP checkpoints signed by the trainer; witnesses' cosignatures
    sync.py         the `log` protocol: catch up with a peer's log, verified before kept
    witness.py      a rollout node syncs, checks consistency and countersigns
    audit.py        `swarm audit`: verify a whole log offline, with its lineage

Primitives (Merkle proofs, signed notes) are in `crypto/`.
"""
