"""Role assignment: a pure, deterministic function of the live records and the manifest.

Every node runs it on its own view of the DHT; with the same view all nodes get the same
answer (inputs are sorted by peer id, ties broken by peer id, as Petals does for block
selection). The rules:

- Training is authorised, not claimed. Only keys the manifest allows (`swarm.trainer_keys`, or
  any member when the owner opted in to `swarm.open_training`) with torch, enough memory and no
  preference for rollout can hold a trainer slot. Everyone else rolls out.
- A live incumbent keeps its slot. A record that says `role: trainer` and is still eligible
  holds its slot for as long as the record is live; no challenger displaces it, however much
  better the hardware and speed its own record claims (self-reported, so worth nothing against
  a node that is already training). When two eligible records claim the slot at once (a healed
  partition, or two nodes that took it from different views), the one whose key comes first in
  `swarm.trainer_keys` keeps it, then the lower peer id: never the better claimed hardware.
- A free slot (no incumbent: its record expired, so it is absent from the input, or it now
  prefers rollout, so it is no longer eligible) goes to the best eligible candidate ranked by
  capability: explicit trainer preference, hardware tier, measured speed, then peer id.

Once adopted, an answer is stable: the chosen trainers become the incumbents, so roles never flap.
"""
from __future__ import annotations

from collections.abc import Iterable

from swarm.manifest import RunManifest
from swarm.records import NodeInfo

TRAINER, ROLLOUT = "trainer", "rollout"


def can_train(info: NodeInfo, manifest: RunManifest) -> bool:
    return (
        info.role_pref != ROLLOUT
        and TRAINER not in info.failed  # it tried and could not load: the next candidate trains
        and manifest.trainer_allowed(info.key_id)
        and info.hardware.torch
        and info.hardware.train_memory_gb >= manifest.swarm.min_trainer_memory_gb
    )


def capability(info: NodeInfo) -> tuple:
    """Higher is better: explicit preference, hardware tier, measured speed (all self-reported:
    they only rank candidates for a free slot)."""
    return (info.role_pref == TRAINER, info.hardware.tier, info.decode_tok_s)


def _rank_key(info: NodeInfo) -> tuple:
    pref, tier, speed = capability(info)
    return (-pref, -tier, -speed, info.peer_id)


def _priority_key(info: NodeInfo, manifest: RunManifest) -> tuple:
    """Between incumbents: the owner's order of trainer keys, then peer id. Nothing a record
    says about itself counts here."""
    keys = manifest.swarm.trainer_keys
    return (keys.index(info.key_id) if info.key_id in keys else len(keys), info.peer_id)


def assign_roles(records: Iterable[NodeInfo], manifest: RunManifest) -> dict[str, str]:
    """peer id -> role for every record given; at most `trainer_slots` trainers."""
    latest: dict[str, NodeInfo] = {}
    for r in records:  # one record per peer: the newest, ties broken by content, so order never matters
        if r.peer_id not in latest or (r.issued_at, repr(r)) > (latest[r.peer_id].issued_at, repr(latest[r.peer_id])):
            latest[r.peer_id] = r
    nodes = sorted(latest.values(), key=lambda r: r.peer_id)
    eligible = [r for r in nodes if can_train(r, manifest)]
    slots = manifest.swarm.trainer_slots
    incumbents = sorted((r for r in eligible if r.role == TRAINER), key=lambda r: _priority_key(r, manifest))
    trainers = incumbents[:slots]
    candidates = sorted((r for r in eligible if r.role != TRAINER), key=_rank_key)
    trainers += candidates[:slots - len(trainers)]
    chosen = {r.peer_id for r in trainers}
    return {r.peer_id: TRAINER if r.peer_id in chosen else ROLLOUT for r in nodes}


def trainers_of(records: Iterable[NodeInfo], manifest: RunManifest) -> list[NodeInfo]:
    """The records the role function names trainer: the only nodes whose adapter versions anyone
    accepts and to whom chunks are sealed. What a record says of its own role never counts here
    (a member claiming `role: trainer` is still a rollout to everyone else)."""
    records = list(records)
    roles = assign_roles(records, manifest)
    return [r for r in records if roles.get(r.peer_id) == TRAINER and manifest.trainer_allowed(r.key_id)]
