"""Who gets in at the door, and in what order: pure bookkeeping, no asyncio, no hivemind.

A request passes four checks before its handler runs; each failure is one `Reason`:

    stream opened ──► TokenBucket (per peer)       ──► RATE_LIMITED  (no header read)
    header read   ──► length <= max_request        ──► OVERSIZE      (body not read)
                  ──► ByteBudget.reserve           ──► BUSY          (body not read)
    body read     ──► FairQueue.push               ──► BUSY          (queue of that peer full)
                  ──► FairQueue.pop: strict priority, round robin within a priority, at most
                      `per_peer` handlers of one peer at a time, at most `workers` in all.

`Door` bundles them with one lock and the counters `stats()` reports, so P2PTransport (one event
loop thread) and MemoryTransport (many threads) share the same logic. `PeerStanding` turns a
service's verdicts into the `priority` a transport schedules by. Clocks are injectable.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable

from swarm.rejections import Reason

Clock = Callable[[], float]
MiB = 1 << 20
# The share of the global byte budget a request of priority p may fill: fresh or misbehaving keys
# can never take the whole budget from peers whose work was accepted.
BUDGET_SHARE = (1.0, 0.5, 0.25)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; a full bucket to start."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = float(burst), clock()

    def take(self, n: float = 1.0) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class RateLimiter:
    """One TokenBucket per peer; the least recently seen are forgotten past `max_peers` (a
    forgotten peer gets a full bucket again, as a fresh key would)."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic, max_peers: int = 4096):
        self.rate, self.burst, self.clock, self.max_peers = rate, burst, clock, max_peers
        self.buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()

    def allow(self, peer: str) -> bool:
        bucket = self.buckets.pop(peer, None) or TokenBucket(self.rate, self.burst, self.clock)
        self.buckets[peer] = bucket
        while len(self.buckets) > self.max_peers:
            self.buckets.popitem(last=False)
        return bucket.take()


class ByteBudget:
    """Bytes of request bodies in flight (reserved from the announced length before reading),
    per key and in all."""

    def __init__(self, total: int):
        self.total = total
        self.in_flight = 0
        self.peak = 0
        self.by_key: dict[Hashable, int] = collections.defaultdict(int)

    def reserve(self, key: Hashable, n: int, key_limit: int, share: float = 1.0) -> bool:
        if self.by_key[key] + n > key_limit or self.in_flight + n > self.total * share:
            if not self.by_key[key]:
                del self.by_key[key]
            return False
        self.by_key[key] += n
        self.in_flight += n
        self.peak = max(self.peak, self.in_flight)
        return True

    def release(self, key: Hashable, n: int) -> None:
        self.in_flight -= n
        self.by_key[key] -= n
        if self.by_key[key] <= 0:
            del self.by_key[key]


class FairQueue:
    """Per-peer FIFO queues. `pop` serves the lowest priority number first and rotates among
    peers of equal priority; a peer with `per_peer` items running is passed over, and nothing is
    popped while `workers` items run."""

    def __init__(self, workers: int = 4, per_peer: int = 2, max_queued_per_peer: int = 16):
        self.workers, self.per_peer, self.max_queued = workers, per_peer, max_queued_per_peer
        self.queues: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self.running: dict[str, int] = collections.defaultdict(int)
        self.total_running = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def push(self, peer: str, item, priority: int = 0) -> bool:
        queue = self.queues.get(peer)
        if queue is None:
            queue = self.queues[peer] = collections.deque()
        if len(queue) >= self.max_queued:
            return False
        queue.append((priority, item))
        return True

    def pop(self):
        """(peer, item) of the next item to run, now counted as running; None if none may run."""
        if self.total_running >= self.workers:
            return None
        best = None
        for peer, queue in self.queues.items():  # in rotation order: least recently served first
            if self.running.get(peer, 0) < self.per_peer and (best is None or queue[0][0] < best[1]):
                best = (peer, queue[0][0])
        if best is None:
            return None
        peer = best[0]
        queue = self.queues.pop(peer)
        _, item = queue.popleft()
        if queue:
            self.queues[peer] = queue  # to the back of the rotation
        self.running[peer] += 1
        self.total_running += 1
        return peer, item

    def drain(self) -> list:
        """Remove and return every queued (peer, item), none counted as running."""
        items = [(peer, item) for peer, queue in self.queues.items() for _, item in queue]
        self.queues.clear()
        return items

    def done(self, peer: str) -> None:
        self.total_running -= 1
        self.running[peer] -= 1
        if self.running[peer] <= 0:
            del self.running[peer]


class Door:
    """Rate limits, byte budgets and the fair queue of one transport behind one lock. Its defaults
    are every transport's: 4 handler threads, <= 2 per peer; 50 requests/s per peer with bursts
    of 100 (an honest rollout polls status up to 20/s); request bodies in flight <= 64 MiB in
    all and <= min(2 x max_request, 32 MiB) per (service, peer)."""

    def __init__(self, *, rate: float = 50.0, burst: float = 100.0, peer_budget: int = 32 * MiB,
                 global_budget: int = 64 * MiB, workers: int = 4, per_peer: int = 2,
                 max_queued_per_peer: int = 16, clock: Clock = time.monotonic):
        self.peer_budget = peer_budget
        self.lock = threading.Lock()
        self.rates = RateLimiter(rate, burst, clock)
        self.budget = ByteBudget(global_budget)
        self.queue = FairQueue(workers, per_peer, max_queued_per_peer)
        self.refused: collections.Counter[str] = collections.Counter()
        self.served = 0

    def arrive(self, peer: str) -> Reason | None:
        with self.lock:
            return None if self.rates.allow(peer) else self._count(Reason.RATE_LIMITED)

    def reserve(self, name: str, peer: str, n: int, max_request: int, priority: int = 0) -> Reason | None:
        """Reserve `n` bytes for a request to service `name`: at most min(2 × max_request,
        peer_budget) per (service, peer), and a priority-dependent share of the global budget."""
        limit = min(2 * max_request, self.peer_budget)
        share = BUDGET_SHARE[min(max(priority, 0), len(BUDGET_SHARE) - 1)]
        with self.lock:
            return None if self.budget.reserve((name, peer), n, limit, share) else self._count(Reason.BUSY)

    def release(self, name: str, peer: str, n: int) -> None:
        with self.lock:
            self.budget.release((name, peer), n)

    def push(self, peer: str, item, priority: int = 0) -> Reason | None:
        with self.lock:
            return None if self.queue.push(peer, item, priority) else self._count(Reason.BUSY)

    def pop(self):
        with self.lock:
            return self.queue.pop()

    def drain(self) -> list:
        with self.lock:
            return self.queue.drain()

    def done(self, peer: str, served: bool = True) -> None:
        with self.lock:
            self.queue.done(peer)
            self.served += served

    def refuse(self, reason: Reason) -> Reason:
        """Count a refusal decided outside the door (oversize, timeout)."""
        with self.lock:
            return self._count(reason)

    def _count(self, reason: Reason) -> Reason:
        self.refused[reason.value] += 1
        return reason

    def stats(self) -> dict:
        with self.lock:
            return {"in_flight": self.budget.in_flight, "peak_in_flight": self.budget.peak,
                    "global_budget": self.budget.total, "peer_budget": self.peer_budget,
                    "queued": len(self.queue), "running": self.queue.total_running,
                    "served": self.served, "refused": dict(self.refused)}


def backoff_s(strikes: int, base_s: float, max_s: float) -> float:
    """Exponential backoff after the n-th failure in a row: base, 2 x base, 4 x base ... at most max."""
    return min(max_s, base_s * 2 ** (strikes - 1))


class PeerStanding:
    """A service's verdicts on each peer, as the `priority` transports schedule by:
    0 = has had work accepted and no recent rejection, 1 = unknown, 2 = rejected recently.

    "Recently" backs off exponentially: the n-th rejection in a series keeps a peer at 2 for
    `base_s × 2^(n-1)` seconds (at most `max_s`); a series ends after `forget_s` without a
    rejection. Peers are remembered LRU up to `max_peers` (a forgotten one is unknown again)."""

    def __init__(self, base_s: float = 10.0, max_s: float = 600.0, forget_s: float = 1800.0,
                 clock: Clock = time.monotonic, max_peers: int = 4096):
        self.base_s, self.max_s, self.forget_s, self.clock, self.max_peers = base_s, max_s, forget_s, clock, max_peers
        self.lock = threading.Lock()
        # peer -> [has accepted work, rejections in this series, time of the last rejection, penalised until]
        self.peers: collections.OrderedDict[str, list] = collections.OrderedDict()

    def _entry(self, peer: str) -> list:
        entry = self.peers.pop(peer, None) or [False, 0, float("-inf"), float("-inf")]
        self.peers[peer] = entry
        while len(self.peers) > self.max_peers:
            self.peers.popitem(last=False)
        return entry

    def accepted(self, peer: str) -> None:
        with self.lock:
            self._entry(peer)[0] = True

    def rejected(self, peer: str) -> None:
        now = self.clock()
        with self.lock:
            entry = self._entry(peer)
            strikes = 1 if now - entry[2] > self.forget_s else entry[1] + 1
            entry[1:] = [strikes, now, now + backoff_s(strikes, self.base_s, self.max_s)]

    def priority(self, peer: str) -> int:
        with self.lock:
            entry = self.peers.get(peer)
            if entry is None:
                return 1
            return 2 if self.clock() < entry[3] else 0 if entry[0] else 1

    __call__ = priority
