"""Request/response over hivemind P2P streams, hardened against hostile peers.

Bulk data never goes through the DHT (values over ~64 KiB crash it) nor unary RPCs (capped at
4 MiB, and an oversized response hangs the caller). A call opens a libp2p stream to the peer,
sends one length-prefixed request (hivemind's framing: 8-byte big-endian length, then the body)
and reads one length-prefixed response. libp2p authenticates the remote peer id for us.

The server side of one stream, with what each step can refuse (see swarm.transport.admission):

    stream opened   per-peer token bucket                       → RATE_LIMITED, nothing read
    header          within `header_timeout`                     → TIMEOUT
    length          <= max_request                              → OVERSIZE, body not read
                    reserved from the per-peer and global budgets → BUSY, body not read
    body            by ONE absolute deadline, `body_base_s + length / min_rate` (at most
                    `timeout`), not reset by each byte: a slowloris is cut off → TIMEOUT
    handler         queued per peer, run by `workers` threads in strict priority order,
                    round robin among equal priority, <= `per_peer` at once → BUSY if its
                    queue is full or no worker takes it within `timeout`
    reply           written within `timeout`; the server then lingers until the caller closed

The budget is released once the handler has run. A refused stream is closed without a reply
and reported to `on_refused(peer, reason, detail)`. Handler exceptions are logged, never fatal.
hivemind is imported lazily so `import swarm.transport` stays light.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading

from swarm.rejections import Reason
from swarm.transport.admission import Door
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
HEADER = 8  # hivemind's own framing: 8-byte big-endian length
LINGER_S = 5.0  # how long a server waits for the caller to close after its reply
KiB = 1 << 10


async def _write_frame(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(len(data).to_bytes(HEADER, "big"))
    writer.write(data)
    await writer.drain()


class _Job:
    __slots__ = ("future", "remote", "request", "service", "started")

    def __init__(self, service: Service, remote: str, request: bytes, future: asyncio.Future):
        self.service, self.remote, self.request, self.future, self.started = service, remote, request, future, False


class P2PTransport(Transport):
    """Owns an event loop thread, a handler thread pool and a replica of the DHT's P2P client.

    Admission defaults are `Door`'s (`door_options` override them); header within 10 s, body by
    5 s + length / 256 KiB/s; a reply must start within 10 s."""

    def __init__(self, dht, *, header_timeout: float = 10.0, body_base_s: float = 5.0, min_rate: float = 256 * KiB,
                 progress_timeout: float | None = 10.0, **door_options):
        self.door = Door(**door_options)
        workers = self.door.queue.workers
        self.header_timeout, self.body_base_s, self.min_rate = header_timeout, body_base_s, min_rate
        self.progress_timeout = progress_timeout
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="transport", daemon=True)
        self._thread.start()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="handler")
        try:
            self.p2p = self._run(dht.replicate_p2p(), timeout=30)
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- server side ---------------------------------------------------------------------------
    def serve(self, name: str, handler: Handler, *, max_request: int, timeout: float = 60.0,
              on_refused: OnRefused | None = None, priority: Priority | None = None) -> None:
        service = Service(name, handler, max_request, timeout, on_refused, priority)

        async def on_stream(info, reader, writer):
            await self._on_stream(service, str(info.peer_id), reader, writer)

        self._run(self.p2p.add_binary_stream_handler(name, on_stream), timeout=30)

    def _refuse(self, service: Service, remote: str, reason: Reason, detail: str, counted: bool = False) -> None:
        if not counted:
            self.door.refuse(reason)
        service.refused(log, remote, reason, detail)

    async def _on_stream(self, service: Service, remote: str, reader, writer) -> None:
        name, reserved = service.name, 0
        try:
            if self.door.arrive(remote):
                return self._refuse(service, remote, Reason.RATE_LIMITED, "over its request rate", counted=True)
            try:
                header = await asyncio.wait_for(reader.readexactly(HEADER), min(self.header_timeout, service.timeout))
            except asyncio.TimeoutError:
                return self._refuse(service, remote, Reason.TIMEOUT, "no request header in time")
            length = int.from_bytes(header, "big")
            if length > service.max_request:
                detail = f"frame of {length} bytes exceeds the limit of {service.max_request}"
                return self._refuse(service, remote, Reason.OVERSIZE, detail)
            priority = service.priority(remote)
            if self.door.reserve(name, remote, length, service.max_request, priority):
                detail = f"{length} bytes do not fit the in-flight budget"
                return self._refuse(service, remote, Reason.BUSY, detail, counted=True)
            reserved = length
            deadline = min(service.timeout, self.body_base_s + length / self.min_rate)
            try:
                request = await asyncio.wait_for(reader.readexactly(length), deadline)
            except asyncio.TimeoutError:
                return self._refuse(service, remote, Reason.TIMEOUT, f"{length} bytes not sent within {deadline:.1f}s")
            response = await self._handle(service, remote, request, priority)
            self.door.release(name, remote, reserved)
            reserved = 0
            if response is None:
                return
            await asyncio.wait_for(_write_frame(writer, response), service.timeout)
            # Close only once the caller has read the reply and closed its side: closing first
            # can cut the reply short in p2pd (seen as IncompleteReadError by the caller, which
            # then resends a chunk the trainer already took).
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(1), LINGER_S)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
            log.info("%s from %s broke off: %r", name, remote[-8:], e)
        except asyncio.CancelledError:  # the transport is closing: end quietly (p2pd's stream callback
            # calls task.exception(), which raises on a cancelled task and logs a traceback)
            log.debug("%s from %s cancelled: closing", name, remote[-8:])
        except Exception:  # a handler bug must not kill the server
            log.exception("%s handler failed on a request from %s", name, remote[-8:])
        finally:
            if reserved:
                self.door.release(name, remote, reserved)
            writer.close()

    async def _handle(self, service: Service, remote: str, request: bytes, priority: int) -> bytes | None:
        """Queue the request fairly and wait for its reply; None if it was refused."""
        job = _Job(service, remote, request, self._loop.create_future())
        if self.door.push(remote, job, priority):
            self._refuse(service, remote, Reason.BUSY, "too many requests queued", counted=True)
            return None
        self._pump()
        try:
            return await asyncio.wait_for(job.future, service.timeout)
        except asyncio.TimeoutError:
            if not job.started:
                self._refuse(service, remote, Reason.BUSY, f"no worker free within {service.timeout:.0f}s")
                return None
            raise

    def _pump(self) -> None:
        """Start queued jobs while workers are free (on the loop thread only)."""
        while (next_job := self.door.pop()) is not None:
            peer, job = next_job
            if job.future.done():  # its stream gave up while queued
                self.door.done(peer, served=False)
                continue
            try:
                running = self._loop.run_in_executor(self._pool, job.service.handler, job.remote, job.request)
            except RuntimeError:  # the pool is shut down: closing
                self.door.done(peer, served=False)
                job.future.set_exception(TransportError("transport closed"))
                continue
            job.started = True
            running.add_done_callback(lambda f, job=job: self._finished(job, f))

    def _finished(self, job: _Job, running: asyncio.Future) -> None:
        self.door.done(job.remote)
        if not job.future.done():
            if running.cancelled():
                job.future.cancel()
            elif running.exception() is not None:
                job.future.set_exception(running.exception())
            else:
                job.future.set_result(running.result())
        elif not running.cancelled() and running.exception() is not None:
            log.error("%s handler failed after its caller left: %r", job.service.name, running.exception())
        self._pump()

    # -- client side ---------------------------------------------------------------------------
    def request(self, peer_id: str, name: str, data: bytes, *, max_response: int, timeout: float = 60.0,
                progress_timeout: float | None = None) -> bytes:
        from hivemind.p2p import PeerID

        progress = self.progress_timeout if progress_timeout is None else progress_timeout
        progress = timeout if progress is None else min(progress, timeout)
        who = f"{name} to {peer_id[-8:]}"

        async def call():
            opening = self.p2p.call_binary_stream_handler(PeerID.from_base58(peer_id), name)
            try:
                _, reader, writer = await asyncio.wait_for(opening, progress)
            except asyncio.TimeoutError:
                raise NoProgress(f"{who}: no stream within {progress:.0f}s") from None
            try:
                await _write_frame(writer, data)
                try:  # the reply must start within `progress`, however long `timeout` is
                    header = await asyncio.wait_for(reader.readexactly(HEADER), progress)
                except asyncio.TimeoutError:
                    raise NoProgress(f"{who}: no reply started within {progress:.0f}s") from None
                length = int.from_bytes(header, "big")
                if length > max_response:
                    raise FrameTooLarge(f"{who}: frame of {length} bytes exceeds the limit of {max_response}")
                return await reader.readexactly(length)
            finally:
                writer.close()

        if self._closed:
            raise TransportError(f"{who}: transport closed")
        try:
            return self._run(asyncio.wait_for(call(), timeout), timeout=timeout + 5)
        except (asyncio.TimeoutError, concurrent.futures.TimeoutError):
            raise TransportError(f"{who} timed out after {timeout:.0f}s") from None
        except TransportError:
            raise
        except Exception as e:  # noqa: BLE001 - the contract: every failure is a TransportError
            raise TransportError(f"{who} failed: {e!r}") from None

    # -- lifecycle -----------------------------------------------------------------------------
    def stats(self) -> dict:
        return self.door.stats()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:  # closes our client connection to p2pd (and its socket file); the daemon is the DHT's
            self._run(self.p2p.shutdown(), timeout=5)
        except Exception as e:  # noqa: BLE001 - closing is best effort
            log.debug("p2p client shutdown: %r", e)
        self._stop_loop()

    def _stop_loop(self) -> None:
        async def cancel_streams():  # lingering stream tasks, so none is left pending at exit
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2)

        with contextlib.suppress(Exception):
            self._run(cancel_streams(), timeout=3)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
