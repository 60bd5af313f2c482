"""Role assignment: a pure, deterministic function of the live records and the manifest.

Every node runs it on its own view of the DHT; with the same view all nodes get the same
answer (inputs are sorted by peer id, ties broken by peer id, as Petals does for block
selection). Trainer slots go to eligible nodes ranked by capability; everyone else rolls out.
Incumbent trainers keep their slot unless a challenger is clearly better (hysteresis), so small
fluctuations in measured speed never make roles flap. When a trainer's record expires it is
simply absent from the input and the next candidate takes the slot.
"""
from __future__ import annotations

from collections.abc import Iterable

from swarm.manifest import RunManifest
from swarm.records import NodeInfo

TRAINER, ROLLOUT = "trainer", "rollout"
HYSTERESIS = 1.5
"""A challenger displaces an incumbent only from a higher hardware tier or this many times faster."""


def can_train(info: NodeInfo, manifest: RunManifest) -> bool:
    return (
        info.role_pref != ROLLOUT
        and manifest.trainer_allowed(info.key_id)
        and info.hardware.torch
        and info.hardware.train_memory_gb >= manifest.swarm.min_trainer_memory_gb
    )


def capability(info: NodeInfo) -> tuple:
    """Higher is better: explicit preference, hardware tier, measured speed."""
    return (info.role_pref == TRAINER, info.hardware.tier, info.decode_tok_s)


def _rank_key(info: NodeInfo) -> tuple:
    pref, tier, speed = capability(info)
    return (-pref, -tier, -speed, info.peer_id)


def _clearly_better(challenger: NodeInfo, incumbent: NodeInfo) -> bool:
    c, i = capability(challenger), capability(incumbent)
    if c[:2] != i[:2]:
        return c[:2] > i[:2]
    return c[2] > HYSTERESIS * i[2]


def assign_roles(records: Iterable[NodeInfo], manifest: RunManifest) -> dict[str, str]:
    """peer id -> role for every record given; at most `trainer_slots` trainers."""
    latest: dict[str, NodeInfo] = {}
    for r in records:  # one record per peer: the newest, ties broken by content, so order never matters
        if r.peer_id not in latest or (r.issued_at, repr(r)) > (latest[r.peer_id].issued_at, repr(latest[r.peer_id])):
            latest[r.peer_id] = r
    nodes = sorted(latest.values(), key=lambda r: r.peer_id)
    eligible = sorted((r for r in nodes if can_train(r, manifest)), key=_rank_key)
    slots = manifest.swarm.trainer_slots
    trainers = [r for r in eligible if r.role == TRAINER][:slots]
    for challenger in (r for r in eligible if r not in trainers):
        if len(trainers) < slots:
            trainers.append(challenger)
            continue
        weakest = max(trainers, key=_rank_key)
        if _clearly_better(challenger, weakest):
            trainers[trainers.index(weakest)] = challenger
    chosen = {r.peer_id for r in trainers}
    return {r.peer_id: TRAINER if r.peer_id in chosen else ROLLOUT for r in nodes}


def trainers_of(records: Iterable[NodeInfo], manifest: RunManifest) -> list[NodeInfo]:
    """The records the role function names trainer: the only nodes whose adapter versions anyone
    accepts and to whom chunks are sealed. What a record says of its own role never counts here
    (a member claiming `role: trainer` is still a rollout to everyone else)."""
    records = list(records)
    roles = assign_roles(records, manifest)
    return [r for r in records if roles.get(r.peer_id) == TRAINER and manifest.trainer_allowed(r.key_id)]
