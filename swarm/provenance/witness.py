"""A rollout node as a witness: bring its log up to a peer's, check it, countersign the checkpoint.

Each node keeps the whole log, so a trainer that showed two nodes two different histories (a
split view) is caught: a history that does not extend the one a node holds is refused, and the
checkpoints the witnesses countersigned cannot both be consistent. The cosignature goes back to
the peer (the `cosign` protocol), which keeps it with its checkpoint for audits, and stays in our
own copy of the checkpoint.
"""
from __future__ import annotations

import logging
import threading
import time

from swarm.adapters.peers import PeerFailures
from swarm.provenance.checkpoints import CosignRequest, add_cosignature, cosign
from swarm.provenance.sync import MAX_LOG_REPLY, LogRequest, apply_reply
from swarm.rejections import Reason, Rejection, VersionRejected
from swarm.transport import TransportError

log = logging.getLogger(__name__)
DIVERGED = (Reason.FORK, Reason.ROLLBACK, Reason.INCONSISTENT)
MAX_ROUNDS = 64
"""Requests to catch up with one peer (each brings up to MAX_ENTRIES_PER_REPLY entries)."""


def witness_log(ctx, peers: list[str], failures: PeerFailures, wait: bool = True) -> bool:
    """Sync our log from the first of `peers` that can serve a verified extension of it, then
    countersign its checkpoint. True when our log holds that peer's checkpointed history.
    `wait=False`: hand the cosignature back in the background (a rollout's work goes on)."""
    swarm = getattr(ctx, "swarm", None)
    trainers = {r.peer_id for r in swarm.trainers()} if swarm is not None else set()
    serial = ctx.log.trust.serial
    try:
        return _witness_first(ctx, peers, failures, trainers, wait)
    finally:
        store = getattr(ctx, "store", None)
        if ctx.log.trust.serial != serial and store is not None:  # a revocation may have cut our log
            store.forget_unlogged(ctx.log)


def _witness_first(ctx, peers: list[str], failures: PeerFailures, trainers: set[str], wait: bool) -> bool:
    for peer in peers:
        try:
            try:
                caught_up = _catch_up(ctx, peer)
            except VersionRejected as e:
                if peer not in trainers or e.reason not in DIVERGED or not _drop_own_tail(ctx, peer):
                    raise
                caught_up = _catch_up(ctx, peer)
                store = getattr(ctx, "store", None)
                if store is not None:  # the versions our dropped entries vouched for are no one's now
                    store.forget_unlogged(ctx.log)
            if not caught_up:
                continue
        except (TransportError, Rejection) as e:
            backoff = failures.failed(peer)
            log.warning("provenance log from %s refused: %s (not asked again for %.0fs)", peer[-8:], e, backoff)
            continue
        _hand_back(ctx, peer, caught_up, wait)
        return True
    return False


def _drop_own_tail(ctx, trainer: str) -> bool:
    """When the trainer's history diverges from ours only in entries we signed ourselves (we were
    the trainer, published, and died before anyone witnessed it; the next trainer went on from the
    last version the swarm had), those entries are superseded: drop them and catch up. Any other
    divergence stays a refusal."""
    own = 0
    while own < ctx.log.size and ctx.log.records[ctx.log.size - 1 - own].trainer_key_id == ctx.identity.key_id:
        own += 1
    if own == 0:
        return False
    log.warning("our last %d log entries are our own unwitnessed publications; trainer %s's history "
                "superseded them: dropping them", own, trainer[-8:])
    ctx.log.drop_tail(ctx.log.size - own)
    return True


def _catch_up(ctx, peer: str) -> tuple[bytes, bytes] | None:
    """Our log brought up to `peer`'s: its checkpoint note and our cosignature line of it (both
    kept in our copy), or None when the peer could not bring us up to date."""
    signed: list[tuple[bytes, bytes]] = []

    def countersign(note: bytes) -> bytes:
        signed.append((note, cosign(note, ctx.identity, now=int(time.time()))))
        return add_cosignature(*signed[-1])

    ctx.log.learn_keys({ctx.identity.key_id: ctx.identity.public_key})
    for _ in range(MAX_ROUNDS):
        size, serial = ctx.log.size, ctx.log.trust.serial
        data = ctx.transport.request(peer, ctx.protocol("log"), LogRequest(have=size).encode(),
                                     max_response=MAX_LOG_REPLY, timeout=30, progress_timeout=10)
        if not data:
            return None  # the peer has no checkpoint yet
        if apply_reply(ctx.log, data, countersign):
            return signed[-1]
        if (ctx.log.size, ctx.log.trust.serial) == (size, serial):
            return None  # the peer holds less than we do
    return None


def _hand_back(ctx, peer: str, signed: tuple[bytes, bytes], wait: bool) -> None:
    """Give the peer our cosignature for its checkpoint (it keeps them for audits); off our own
    work's path unless `wait` (the cosignature is ours to keep either way)."""
    note, line = signed
    request = CosignRequest(note=note.decode(), cosignature=line.decode()).encode()

    def send() -> None:
        try:
            ctx.transport.request(peer, ctx.protocol("cosign"), request, max_response=512, timeout=10)
        except TransportError as e:
            log.info("could not hand our cosignature to %s: %s", peer[-8:], e)

    if wait:
        send()
    else:
        threading.Thread(target=send, name="cosign-hand-back", daemon=True).start()
