"""Request/response over hivemind P2P streams, with a size limit and a timeout on every call.

Bulk data never goes through the DHT (values over ~64 KiB crash it) nor unary RPCs (capped at
4 MiB, and an oversized response hangs the caller). A call opens a libp2p stream to the peer,
sends one length-prefixed request and reads one length-prefixed response. Lengths are checked
*before* reading, so a peer cannot make us buffer more than the limit. Handlers are plain
functions run in a worker thread (they do CPU work: decrypt, verify, score), so the event loop
keeps serving. libp2p authenticates the remote peer id for us (`remote` in the handler).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
HEADER = 8  # hivemind's own framing: 8-byte big-endian length
LINGER_S = 5.0  # how long a server waits for the caller to close after its reply


class TransportError(RuntimeError):
    """A call failed: unreachable peer, timeout, refused or oversized response."""


class FrameTooLarge(TransportError):
    """A frame announced a length over the limit; it was not read."""


Handler = Callable[[str, bytes], bytes]  # (remote peer id, request) -> response
OnRefused = Callable[[str, str, str], None]  # (remote peer id, reason, detail): a request refused before its handler


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    length = int.from_bytes(await reader.readexactly(HEADER), "big")
    if length > limit:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {limit}")
    return await reader.readexactly(length)


async def _write_frame(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(len(data).to_bytes(HEADER, "big"))
    writer.write(data)
    await writer.drain()


class Transport:
    """Owns an event loop thread and a replica of the DHT's P2P daemon connection."""

    def __init__(self, dht, workers: int = 4):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="transport", daemon=True)
        self._thread.start()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="handler")
        self.p2p = self._run(dht.replicate_p2p(), timeout=30)

    def _run(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def serve(self, name: str, handler: Handler, *, max_request: int, timeout: float = 60.0,
              on_refused: OnRefused | None = None) -> None:
        """Answer `name` requests with `handler`. An oversized request is dropped unread (no reply)
        and reported to `on_refused` with reason "oversize", so the service can count it."""
        async def on_stream(info, reader, writer):
            remote = str(info.peer_id)
            try:
                request = await asyncio.wait_for(_read_frame(reader, max_request), timeout)
                response = await self._loop.run_in_executor(self._pool, handler, remote, request)
                await asyncio.wait_for(_write_frame(writer, response), timeout)
                # Close only once the caller has read the reply and closed its side: closing first
                # can cut the reply short in p2pd (seen as IncompleteReadError by the caller, which
                # then resends a chunk the trainer already took).
                with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(1), LINGER_S)
            except FrameTooLarge as e:
                log.warning("%s from %s refused: %s", name, remote[-8:], e)
                if on_refused is not None:
                    on_refused(remote, "oversize", str(e))
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                log.info("%s from %s broke off: %r", name, remote[-8:], e)
            except Exception:  # a handler bug must not kill the server
                log.exception("%s handler failed on a request from %s", name, remote[-8:])
            finally:
                writer.close()

        self._run(self.p2p.add_binary_stream_handler(name, on_stream), timeout=30)

    def request(self, peer_id: str, name: str, data: bytes, *, max_response: int, timeout: float = 60.0) -> bytes:
        from hivemind.p2p import PeerID

        async def call():
            _, reader, writer = await self.p2p.call_binary_stream_handler(PeerID.from_base58(peer_id), name)
            try:
                await _write_frame(writer, data)
                return await _read_frame(reader, max_response)
            finally:
                writer.close()

        try:
            return self._run(asyncio.wait_for(call(), timeout), timeout=timeout + 5)
        except (asyncio.TimeoutError, concurrent.futures.TimeoutError):
            raise TransportError(f"{name} to {peer_id[-8:]} timed out after {timeout:.0f}s") from None
        except TransportError:
            raise
        except Exception as e:
            raise TransportError(f"{name} to {peer_id[-8:]} failed: {e!r}") from None

    def close(self) -> None:
        try:  # closes our client connection to p2pd (and its socket file); the daemon is the DHT's
            self._run(self.p2p.shutdown(), timeout=5)
        except Exception as e:
            log.debug("p2p client shutdown: %r", e)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
