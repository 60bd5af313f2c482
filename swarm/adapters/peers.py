"""Whom to ask for an adapter version: a pure ranking of holders, and a memory of failures.

Records lag by up to an announce period, so the peer that just told us of a version (`first`)
is asked before anyone else; then trainers (they hold every version they published), then other
holders, newest-version holders first (they are likelier to have the delta chain), peer id last
for determinism. A peer that failed us (timed out, sent a bad bundle) is left out for a backoff
that doubles with each consecutive failure and is forgotten after a success (Petals'
`RemoteSequenceManager.on_request_failure` is the model), so one hanging or hostile holder costs
one short timeout, not one per chunk.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from swarm.records import NodeInfo
from swarm.transport.admission import backoff_s

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 120.0


@dataclass
class PeerFailures:
    """Consecutive failures per peer and until when each is left out."""

    base_s: float = BACKOFF_BASE_S
    max_s: float = BACKOFF_MAX_S
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, int] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)

    def failed(self, peer: str) -> float:
        """Record a failure; return the backoff it earned, in seconds."""
        n = self._failures.get(peer, 0) + 1
        self._failures[peer] = n
        backoff = backoff_s(n, self.base_s, self.max_s)
        self._until[peer] = self.clock() + backoff
        return backoff

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)
        self._until.pop(peer, None)

    def banned(self, peer: str) -> bool:
        return self._until.get(peer, 0.0) > self.clock()


def rank_holders(version: int, holders: Iterable[NodeInfo], *, trainers: Iterable[str] = (),
                 first: str | None = None, failures: PeerFailures | None = None) -> list[str]:
    """Peer ids to ask for `version`, best first; peers in backoff are left out.

    `holders`: records of other nodes claiming `version` or newer; `trainers`: peer ids the role
    function names trainer; `first`: the peer that named the version to us (asked first even if
    its record does not show it yet).
    """
    trainer_ids = set(trainers)
    ranked = sorted((r for r in holders if r.adapter_version >= version and r.peer_id != first),
                    key=lambda r: (r.peer_id not in trainer_ids, -r.adapter_version, r.peer_id))
    order = ([first] if first else []) + [r.peer_id for r in ranked]
    return [p for p in dict.fromkeys(order) if failures is None or not failures.banned(p)]
