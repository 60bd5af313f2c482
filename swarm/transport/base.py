"""The seam between protocol logic and the network: one request, one reply, limits on both.

Services (`chunks`, `adapter`, `status`) and workers talk to peers only through `Transport`:
`serve` registers a handler for a protocol name, `request` sends one request and returns the
reply. Everything below that line is the transport's business: framing, byte budgets, rate
limits, fair scheduling, deadlines. `P2PTransport` (swarm.transport.p2p) runs it over hivemind's
libp2p streams; `MemoryTransport` (swarm.transport.memory) runs the same admission logic
between peers of one process, so protocol logic is tested without a network. Later link
shaping (bandwidth, delay, loss, partitions for the simulator) goes behind this same interface
as another implementation or a wrapper, so callers never change.

Contract every implementation keeps:
- a request over the server's `max_request` is refused unread (`Reason.OVERSIZE`), a reply over
  the caller's `max_response` is not read (`FrameTooLarge`);
- a refused request (oversize, busy, rate limited, timed out) gets no reply: the caller sees a
  `TransportError`, the server reports it to `on_refused(peer, reason, detail)`;
- a handler's exception is logged and answered with no reply; it never stops the server;
- `request` never blocks past `timeout`, nor past `progress_timeout` without the reply starting.
"""
from __future__ import annotations

import abc
from collections.abc import Callable

from swarm.rejections import Reason

Handler = Callable[[str, bytes], bytes]  # (remote peer id, request) -> response
OnRefused = Callable[[str, Reason, str], None]  # (remote peer id, reason, detail): refused before its handler
Priority = Callable[[str], int]  # remote peer id -> 0 served first, then 1, 2, ...


class TransportError(RuntimeError):
    """A call failed: unreachable peer, timeout, refused or oversized response."""


class FrameTooLarge(TransportError):
    """A frame announced a length over the limit; it was not read."""


class NoProgress(TransportError):
    """The peer did not start its reply within `progress_timeout` (it may still be working)."""


class Transport(abc.ABC):
    """Request/response between peers, identified by their peer id strings."""

    @abc.abstractmethod
    def serve(self, name: str, handler: Handler, *, max_request: int, timeout: float = 60.0,
              on_refused: OnRefused | None = None, priority: Priority | None = None) -> None:
        """Answer `name` requests with `handler(peer, request) -> reply`, run in a worker thread.
        `timeout` bounds reading the request, waiting for a worker and writing the reply;
        `priority(peer)` orders waiting requests (lower first; default 0 for every peer)."""

    @abc.abstractmethod
    def request(self, peer_id: str, name: str, data: bytes, *, max_response: int, timeout: float = 60.0,
                progress_timeout: float | None = None) -> bytes:
        """Send `data` to `peer_id`'s `name` handler and return its reply; raise TransportError.
        `progress_timeout` (None: the transport's default) bounds the wait for the reply to
        start once the request is sent, `timeout` the whole call."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop serving and release what the transport holds; idempotent."""

    @abc.abstractmethod
    def stats(self) -> dict:
        """Counters for tests and status: `in_flight` / `peak_in_flight` request bytes,
        `global_budget`, `queued`, `running`, `served`, `refused` {reason: count}."""


class Service:
    """What `serve` registered for one protocol name (shared by the implementations)."""

    def __init__(self, name: str, handler: Handler, max_request: int, timeout: float,
                 on_refused: OnRefused | None, priority: Priority | None):
        self.name, self.handler, self.max_request, self.timeout = name, handler, max_request, timeout
        self.on_refused, self.priority = on_refused, priority or (lambda _peer: 0)

    def refused(self, log, remote: str, reason: Reason, detail: str) -> None:
        """Log a refusal and tell the service; a failing callback is logged, never raised."""
        log.info("%s from %s refused (%s): %s", self.name, remote[-8:], reason.value, detail)
        if self.on_refused is not None:
            try:
                self.on_refused(remote, reason, detail)
            except Exception:
                log.exception("on_refused of %s failed", self.name)
