"""P2PTransport over real hivemind DHTs on 127.0.0.1: the door holds against hostile peers.

Two client peers (honest, attacker) live for the module; each test starts its own server peer
with the limits it exercises. The attacker writes raw frames (8-byte big-endian length, body)
on streams it opens itself, to stop where an honest caller would not.
"""
from __future__ import annotations

import asyncio
import threading
import time
import types

import pytest

from swarm.rejections import Reason
from swarm.transport import FrameTooLarge, NoProgress, P2PTransport, TransportError

pytestmark = pytest.mark.slow  # real hivemind DHTs and p2pd daemons, ~30 s

MiB = 1 << 20


def start_dht(peers=()):
    import hivemind

    initial = [str(m) for dht in peers for m in dht.get_visible_maddrs()]
    return hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"], nat_port_map=False,
                        initial_peers=initial)


@pytest.fixture(scope="module")
def clients():
    dhts, transports = [], []
    try:
        for _ in range(2):
            dhts.append(start_dht(dhts[:1]))
            transports.append(P2PTransport(dhts[-1]))
        yield types.SimpleNamespace(dhts=dhts, honest=transports[0], attacker=transports[1],
                                    ids=[str(d.peer_id) for d in dhts])
    finally:
        for t in transports:
            t.close()
        for d in dhts:
            d.shutdown()


@pytest.fixture
def server(clients):
    """start(**P2PTransport kwargs) -> (transport, peer id, refusals [(peer, reason, detail)])."""
    made = []

    def start(**kwargs):
        dht = start_dht(clients.dhts)
        made.append(dht)
        transport = P2PTransport(dht, **kwargs)
        made.append(transport)
        return transport, str(dht.peer_id), []

    try:
        yield start
    finally:
        for thing in reversed(made):
            thing.close() if isinstance(thing, P2PTransport) else thing.shutdown()


def raw(clients, coro_fn, *args, timeout: float = 60):
    """Run coro_fn(p2p, *args) on the attacker's event loop."""
    return clients.attacker._run(coro_fn(clients.attacker.p2p, *args), timeout=timeout)


async def open_stream(p2p, peer: str, name: str):
    from hivemind.p2p import PeerID

    _, reader, writer = await p2p.call_binary_stream_handler(PeerID.from_base58(peer), name)
    return reader, writer


async def is_closed(reader, wait: float = 1.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), wait) == b""
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


def wait_until(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_request_response(clients, server):
    transport, peer, refused = server()
    transport.serve("echo", lambda remote, data: remote.encode() + b":" + data, max_request=64,
                    on_refused=lambda *args: refused.append(args))
    transport.serve("boom", lambda remote, data: 1 / 0, max_request=64)
    honest = clients.ids[0]
    assert clients.honest.request(peer, "echo", b"hi", max_response=128) == honest.encode() + b":hi"
    with pytest.raises(FrameTooLarge):  # reply over our limit: not read
        clients.honest.request(peer, "echo", b"x" * 60, max_response=64)
    with pytest.raises(TransportError):  # request over theirs: dropped unread, counted
        clients.honest.request(peer, "echo", b"x" * 65, max_response=128)
    with pytest.raises(TransportError):  # a handler bug: no reply, and the server lives on
        clients.honest.request(peer, "boom", b"", max_response=128)
    assert clients.honest.request(peer, "echo", b"ok", max_response=128).endswith(b":ok")
    wait_until(lambda: refused)
    assert refused[0][:2] == (honest, Reason.OVERSIZE)
    stats = transport.stats()
    assert stats["refused"] == {"oversize": 1} and stats["served"] == 4 and stats["in_flight"] == 0


def test_byte_budget_holds_against_a_flood_of_partial_frames(clients, server):
    budget = 28 * MiB  # room for 3 frames of 8 MiB; the per-peer cap (2 x max_request) is above it
    transport, peer, refused = server(rate=1000, burst=1000, peer_budget=1 << 40, global_budget=budget)
    transport.serve("chunks", lambda remote, data: b"ok", max_request=16 * MiB,
                    on_refused=lambda *args: refused.append(args))

    async def announce(p2p, n):
        streams = await asyncio.gather(*(open_stream(p2p, peer, "chunks") for _ in range(n)))
        for _, writer in streams:
            writer.write((8 * MiB).to_bytes(8, "big"))
        await asyncio.gather(*(w.drain() for _, w in streams))
        return streams

    async def feed_open_ones(p2p, streams):
        closed = await asyncio.gather(*(is_closed(r) for r, _ in streams))
        kept = [s for s, c in zip(streams, closed) if not c]
        for _, writer in kept:
            writer.write(b"\0" * (8 * MiB - 1))  # all but one byte
        await asyncio.gather(*(w.drain() for _, w in kept))
        return kept

    async def close(p2p, streams):
        for _, writer in streams:
            writer.close()

    streams = raw(clients, announce, 100)
    try:
        wait_until(lambda: len(refused) + transport.stats()["in_flight"] // (8 * MiB) == 100)
        kept = raw(clients, feed_open_ones, streams)
        assert len(kept) == 3
        assert clients.honest.request(peer, "chunks", b"x" * 1024, max_response=8) == b"ok"
        stats = transport.stats()
        assert stats["in_flight"] == 3 * 8 * MiB and stats["peak_in_flight"] <= budget
        assert stats["refused"] == {"busy": 97} and stats["served"] == 1
        assert {(who, reason) for who, reason, _ in refused} == {(clients.ids[1], Reason.BUSY)}
    finally:
        raw(clients, close, streams)
    wait_until(lambda: transport.stats()["in_flight"] == 0)  # released when the streams broke off


def test_slowloris_is_cut_at_one_deadline(clients, server):
    transport, peer, refused = server(header_timeout=1.0, body_base_s=1.0, min_rate=1 * MiB)
    transport.serve("chunks", lambda remote, data: b"ok", max_request=MiB,
                    on_refused=lambda *args: refused.append(args))

    async def trickle(p2p):  # 1 KiB per 100 ms of an announced MiB: would never finish
        reader, writer = await open_stream(p2p, peer, "chunks")
        silent_reader, silent_writer = await open_stream(p2p, peer, "chunks")  # never sends a header
        writer.write(MiB.to_bytes(8, "big"))
        try:
            for _ in range(150):
                writer.write(b"\0" * 1024)
                await writer.drain()
                if await is_closed(reader, 0.1):
                    return True, await is_closed(silent_reader, 5)
            return False, False
        finally:
            writer.close()
            silent_writer.close()

    cut, silent_cut = raw(clients, trickle)
    assert cut and silent_cut
    reasons = sorted((r[1].value, r[2].split()[0]) for r in refused)
    assert reasons == [("timeout", "1048576"), ("timeout", "no")]  # the body's deadline, the header's
    assert transport.stats()["refused"] == {"timeout": 2} and transport.stats()["in_flight"] == 0


def test_no_progress_fails_fast(clients, server):
    transport, peer, _ = server()
    release = threading.Event()
    transport.serve("stuck", lambda remote, data: release.wait(60) and b"late", max_request=64)
    try:
        with pytest.raises(NoProgress) as caught:
            clients.honest.request(peer, "stuck", b"?", max_response=64, timeout=60, progress_timeout=2)
        assert "no reply started" in str(caught.value)
    finally:
        release.set()


def test_flood_is_rate_limited_and_others_served_fairly(clients, server):
    transport, peer, refused = server(workers=1, per_peer=1, rate=20, burst=40)
    order = []

    def work(remote, data):
        order.append(remote)
        time.sleep(0.2)
        return b"done"

    transport.serve("work", work, max_request=64, on_refused=lambda *args: refused.append(args))

    async def flood(p2p, n):
        async def one():
            try:
                reader, writer = await open_stream(p2p, peer, "work")
                writer.write((1).to_bytes(8, "big") + b"!")
                await writer.drain()
                header = await asyncio.wait_for(reader.readexactly(8), 30)
                reply = await reader.readexactly(int.from_bytes(header, "big"))
                writer.close()
                return reply == b"done"
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                return False
        return await asyncio.gather(*(one() for _ in range(n)))

    flooding = threading.Thread(target=lambda: results.extend(raw(clients, flood, 100)))
    results: list[bool] = []
    flooding.start()
    try:
        wait_until(lambda: transport.stats()["queued"] >= 12)  # FIFO would serve all these first
        before = len(order)
        assert clients.honest.request(peer, "work", b"hi", max_response=64) == b"done"
        honest, attacker = clients.ids
        assert order.index(honest, before) - before <= 6  # round robin: not behind the attacker's backlog
    finally:
        flooding.join(60)
    stats = transport.stats()
    limited, busy = stats["refused"].get("rate_limited", 0), stats["refused"].get("busy", 0)
    assert limited > 0 and sum(results) == stats["served"] - 1
    # Every flood request was served or refused, once. (How many of the refusals are rate_limited
    # rather than busy depends on how fast this machine sent them: a CI run under load saw 26, not 60.)
    assert sum(results) + limited + busy == 100, (stats, sum(results))
    assert {(who, reason) for who, reason, _ in refused} >= {(attacker, Reason.RATE_LIMITED)}
    assert {who for who, _, _ in refused} == {attacker}
