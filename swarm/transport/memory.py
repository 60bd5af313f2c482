"""An in-process Transport: peers of one `MemoryHub` call each other's handlers directly.

For unit tests of protocol logic without a network (httpx's MockTransport is the model). It
keeps the P2P transport's contract and admission logic: the same `Door` (rate limits, byte
budgets, fair queue by priority), `max_request` refused unread with OVERSIZE and reported to
`on_refused`, `max_response` enforced (FrameTooLarge), handlers run in a thread pool (they may
block), `timeout` and `progress_timeout` honoured, a handler's exception is logged and the
caller gets a TransportError. What it cannot model: partial frames and slow bodies (a request
arrives whole), so header/body deadlines are P2P-only.

    hub = MemoryHub()
    a, b = MemoryTransport(hub, "a"), MemoryTransport(hub, "b")
    b.serve("echo", lambda peer, data: data, max_request=1024)
    assert a.request("b", "echo", b"hi", max_response=1024) == b"hi"
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

from swarm.rejections import Reason
from swarm.transport.admission import Clock, Door
from swarm.transport.base import (
    FrameTooLarge,
    Handler,
    NoProgress,
    OnRefused,
    Priority,
    Service,
    Transport,
    TransportError,
)

log = logging.getLogger(__name__)


class MemoryHub:
    """The network of one process: peer id -> its MemoryTransport."""

    def __init__(self):
        self.lock = threading.Lock()
        self.peers: dict[str, MemoryTransport] = {}

    def register(self, peer_id: str, transport: MemoryTransport) -> None:
        with self.lock:
            if peer_id in self.peers:
                raise ValueError(f"peer {peer_id!r} is already on this hub")
            self.peers[peer_id] = transport

    def unregister(self, peer_id: str) -> None:
        with self.lock:
            self.peers.pop(peer_id, None)

    def get(self, peer_id: str) -> MemoryTransport | None:
        with self.lock:
            return self.peers.get(peer_id)


class _Job:
    __slots__ = ("deadline", "future", "remote", "request", "service")

    def __init__(self, service: Service, remote: str, request: bytes, deadline: float):
        self.service, self.remote, self.request, self.deadline = service, remote, request, deadline
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class MemoryTransport(Transport):
    """One peer of a MemoryHub. Keyword arguments as P2PTransport's, where they apply."""

    def __init__(self, hub: MemoryHub, peer_id: str, *, progress_timeout: float | None = 10.0,
                 clock: Clock = time.monotonic, **door_options):
        """`door_options`: the admission settings of `Door` (rate, burst, budgets, workers...)."""
        self.hub, self.peer_id, self.progress_timeout, self.clock = hub, peer_id, progress_timeout, clock
        self.door = Door(clock=clock, **door_options)
        self.services: dict[str, Service] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(self.door.queue.workers, thread_name_prefix=f"mem-{peer_id}")
        self._closed = False
        hub.register(peer_id, self)

    def serve(self, name: str, handler: Handler, *, max_request: int, timeout: float = 60.0,
              on_refused: OnRefused | None = None, priority: Priority | None = None) -> None:
        self.services[name] = Service(name, handler, max_request, timeout, on_refused, priority)

    # -- server side: called by the requesting peer's thread -----------------------------------
    def _refuse(self, service: Service, remote: str, reason: Reason, detail: str, counted: bool = False):
        if not counted:
            self.door.refuse(reason)
        service.refused(log, remote, reason, detail)
        return TransportError(f"{service.name} refused by {self.peer_id}: {reason.value}")

    def _accept(self, remote: str, name: str, data: bytes) -> concurrent.futures.Future:
        service = self.services.get(name)
        if self._closed or service is None:
            raise TransportError(f"{self.peer_id} does not serve {name!r}")
        if self.door.arrive(remote):
            raise self._refuse(service, remote, Reason.RATE_LIMITED, "over its request rate", counted=True)
        if len(data) > service.max_request:
            detail = f"frame of {len(data)} bytes exceeds the limit of {service.max_request}"
            raise self._refuse(service, remote, Reason.OVERSIZE, detail)
        priority = service.priority(remote)
        if self.door.reserve(name, remote, len(data), service.max_request, priority):
            raise self._refuse(service, remote, Reason.BUSY, "over the in-flight budget", counted=True)
        job = _Job(service, remote, data, self.clock() + service.timeout)
        if self.door.push(remote, job, priority):
            self.door.release(name, remote, len(data))
            raise self._refuse(service, remote, Reason.BUSY, "too many requests queued", counted=True)
        self._pump()
        return job.future

    def _pump(self) -> None:
        while (next_job := self.door.pop()) is not None:
            peer, job = next_job
            if not job.future.set_running_or_notify_cancel():  # the caller gave up while it was queued
                self._end(job, served=False)
            elif self.clock() > job.deadline:
                self._refuse(job.service, peer, Reason.BUSY, "no worker free in time")
                job.future.set_exception(TransportError(f"{job.service.name}: {Reason.BUSY.value}"))
                self._end(job, served=False)
            else:
                try:
                    self._pool.submit(self._run_job, job)
                except RuntimeError:  # closed meanwhile
                    job.future.set_exception(TransportError(f"{self.peer_id} closed"))
                    self._end(job, served=False)

    def _end(self, job: _Job, served: bool) -> None:
        self.door.release(job.service.name, job.remote, len(job.request))
        self.door.done(job.remote, served)

    def _run_job(self, job: _Job) -> None:
        try:
            job.future.set_result(job.service.handler(job.remote, job.request))
        except Exception as e:  # a handler bug must not kill the server
            log.exception("%s handler failed on a request from %s", job.service.name, job.remote)
            job.future.set_exception(TransportError(f"{job.service.name}: no reply ({e!r})"))
        finally:
            self._end(job, served=True)
            self._pump()

    # -- client side ---------------------------------------------------------------------------
    def request(self, peer_id: str, name: str, data: bytes, *, max_response: int, timeout: float = 60.0,
                progress_timeout: float | None = None) -> bytes:
        progress = self.progress_timeout if progress_timeout is None else progress_timeout
        progress = timeout if progress is None else min(progress, timeout)
        server = self.hub.get(peer_id)
        if self._closed or server is None:
            raise TransportError(f"{name} to {peer_id}: unreachable")
        future = server._accept(self.peer_id, name, bytes(data))
        try:  # a reply arrives whole: its first byte is its last
            reply = future.result(min(timeout, progress))
        except concurrent.futures.TimeoutError:
            future.cancel()
            if progress < timeout:
                raise NoProgress(f"{name} to {peer_id}: no reply started within {progress:.1f}s") from None
            raise TransportError(f"{name} to {peer_id} timed out after {timeout:.1f}s") from None
        if not isinstance(reply, (bytes, bytearray)):
            raise TransportError(f"{name} to {peer_id}: the handler returned {type(reply).__name__}")
        if len(reply) > max_response:
            raise FrameTooLarge(f"{name} to {peer_id}: frame of {len(reply)} bytes exceeds the limit of {max_response}")
        return bytes(reply)

    def stats(self) -> dict:
        return self.door.stats()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.hub.unregister(self.peer_id)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for _, job in self.door.drain():  # fail what is still queued
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(TransportError(f"{self.peer_id} closed"))
            self.door.release(job.service.name, job.remote, len(job.request))
