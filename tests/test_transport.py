"""swarm.transport without a network: the pure admission logic, and MemoryTransport's contract."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from swarm.rejections import Reason
from swarm.transport import (
    FrameTooLarge,
    MemoryHub,
    MemoryTransport,
    NoProgress,
    PeerStanding,
    Transport,
    TransportError,
    make_transport,
)
from swarm.transport.admission import ByteBudget, Door, FairQueue, RateLimiter, TokenBucket


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- admission ---------------------------------------------------------------------------------
def test_token_bucket_burst_then_rate():
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.t += 0.5  # one token back
    assert bucket.take() and not bucket.take()
    clock.t += 100  # refills to the burst, not beyond
    assert sum(bucket.take() for _ in range(10)) == 3


def test_rate_limiter_is_per_peer_and_forgets_lru():
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, max_peers=2)
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")  # another peer has its own bucket
    limiter.allow("c")  # evicts "a", the least recently seen
    assert set(limiter.buckets) == {"b", "c"}


def test_byte_budget_per_key_global_and_share():
    budget = ByteBudget(total=100)
    assert budget.reserve("a", 40, key_limit=50)
    assert not budget.reserve("a", 20, key_limit=50)  # over a's limit
    assert budget.reserve("b", 50, key_limit=50)
    assert not budget.reserve("c", 20, key_limit=50)  # over the global budget
    assert budget.in_flight == 90 and budget.peak == 90
    budget.release("a", 40)
    assert budget.in_flight == 50 and "a" not in budget.by_key
    assert not budget.reserve("c", 10, key_limit=50, share=0.5)  # a low priority may fill half only
    assert budget.reserve("c", 10, key_limit=50, share=1.0)
    assert budget.peak == 90 and "d" not in budget.by_key


def test_fair_queue_priority_then_round_robin():
    q = FairQueue(workers=100, per_peer=100)
    for i in range(3):
        q.push("a", f"a{i}", priority=0)
        q.push("b", f"b{i}", priority=0)
    q.push("sybil", "s0", priority=1)
    q.push("bad", "x0", priority=2)
    order = [q.pop()[1] for _ in range(8)]
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2", "s0", "x0"]
    assert q.pop() is None and len(q) == 0


def test_fair_queue_concurrency_limits_and_queue_cap():
    q = FairQueue(workers=3, per_peer=2, max_queued_per_peer=3)
    assert all(q.push("a", i) for i in range(3)) and not q.push("a", 3)  # a's queue is full
    q.push("b", "b0")
    assert [q.pop() for _ in range(3)] == [("a", 0), ("b", "b0"), ("a", 1)]
    assert q.pop() is None  # 3 workers busy
    q.done("b")
    assert q.pop() is None  # a free worker, but "a" already runs 2
    q.done("a")
    assert q.pop() == ("a", 2) and q.total_running == 2 and q.running == {"a": 2}
    q.push("c", "c0")
    assert q.drain() == [("c", "c0")] and len(q) == 0


def test_door_counts_refusals():
    clock = Clock()
    door = Door(rate=1.0, burst=1, peer_budget=1000, global_budget=1000, clock=clock)
    assert door.arrive("a") is None and door.arrive("a") is Reason.RATE_LIMITED
    assert door.reserve("svc", "a", 100, max_request=40) is Reason.BUSY  # 2 x max_request per peer
    assert door.reserve("svc", "a", 80, max_request=40) is None
    assert door.reserve("other", "a", 80, max_request=40) is None  # per (service, peer)
    stats = door.stats()
    assert stats["in_flight"] == 160 and stats["refused"] == {"rate_limited": 1, "busy": 1}


def test_peer_standing_backs_off_exponentially_and_forgets():
    clock = Clock()
    standing = PeerStanding(base_s=10, max_s=40, forget_s=100, clock=clock)
    assert standing("new") == 1
    standing.accepted("good")
    assert standing("good") == 0
    standing.rejected("good")
    assert standing("good") == 2
    clock.t += 10.5
    assert standing("good") == 0  # served its first 10 s
    for expected in (20, 40, 40):  # the 2nd, 3rd and 4th rejection: 20 s, 40 s, capped at 40 s
        standing.rejected("good")
        clock.t += expected - 0.5
        assert standing("good") == 2
        clock.t += 1
        assert standing("good") == 0
    clock.t += 101  # a quiet series is forgotten: back to the first step
    standing.rejected("good")
    clock.t += 10.5
    assert standing("good") == 0
    standing.rejected("stranger")
    clock.t += 10.5
    assert standing("stranger") == 1  # never accepted: unknown again, not trusted


# -- MemoryTransport ---------------------------------------------------------------------------
@pytest.fixture
def hub():
    hub = MemoryHub()
    made: list[MemoryTransport] = []

    def peer(name: str, **kwargs) -> MemoryTransport:
        made.append(MemoryTransport(hub, name, **kwargs))
        return made[-1]

    yield peer
    for t in made:
        t.close()


def test_request_and_serve(hub):
    a, b = hub("a"), hub("b")
    seen = []
    b.serve("echo", lambda peer, data: seen.append(peer) or data[::-1], max_request=16)
    assert isinstance(a, Transport)
    assert a.request("b", "echo", b"hello", max_response=16) == b"olleh"
    assert seen == ["a"] and b.stats()["served"] == 1 and b.stats()["in_flight"] == 0
    with pytest.raises(TransportError):
        a.request("b", "missing", b"", max_response=16)
    with pytest.raises(TransportError):
        a.request("nobody", "echo", b"", max_response=16)


def test_size_limits_and_on_refused(hub):
    a, b = hub("a"), hub("b")
    refused, ran = [], []
    b.serve("echo", lambda peer, data: ran.append(1) or data * 2, max_request=8,
            on_refused=lambda *args: refused.append(args))
    with pytest.raises(TransportError):
        a.request("b", "echo", b"x" * 9, max_response=100)
    assert not ran and refused[0][:2] == ("a", Reason.OVERSIZE) and "9 bytes" in refused[0][2]
    with pytest.raises(FrameTooLarge):
        a.request("b", "echo", b"x" * 8, max_response=15)
    assert b.stats()["refused"] == {"oversize": 1}


def test_handler_error_is_no_reply_and_server_lives(hub):
    a, b = hub("a"), hub("b")
    b.serve("flaky", lambda peer, data: 1 / len(data) and data, max_request=8)
    with pytest.raises(TransportError):
        a.request("b", "flaky", b"", max_response=8)
    assert a.request("b", "flaky", b"ok", max_response=8) == b"ok"


def test_progress_timeout_and_timeout(hub):
    a, b = hub("a"), hub("b")
    release = threading.Event()
    b.serve("stuck", lambda peer, data: release.wait(30) and b"late", max_request=8)
    try:
        with pytest.raises(NoProgress):
            a.request("b", "stuck", b"", max_response=8, timeout=30, progress_timeout=0.2)
        with pytest.raises(TransportError) as caught:
            a.request("b", "stuck", b"", max_response=8, timeout=0.2, progress_timeout=5)
        assert not isinstance(caught.value, NoProgress)
    finally:
        release.set()


def test_rate_limit_and_busy_refusals(hub):
    a, b = hub("a"), hub("b", clock=Clock(), rate=20, burst=40)  # a frozen clock: no refill during the burst
    c = hub("c", rate=1000, burst=1000, workers=1, per_peer=1, max_queued_per_peer=1)
    refused = []
    for server in (b, c):
        server.serve("echo", lambda peer, data: data, max_request=64, on_refused=lambda *args: refused.append(args))
    outcomes = []
    for _ in range(50):  # burst 40
        try:
            outcomes.append(a.request("b", "echo", b"x", max_response=64))
        except TransportError:
            outcomes.append(None)
    assert outcomes.count(b"x") == 40 and b.stats()["refused"] == {"rate_limited": 10}
    assert {r[1] for r in refused} == {Reason.RATE_LIMITED}

    gate = threading.Event()
    c.serve("slow", lambda peer, data: gate.wait(10) and data, max_request=64,
            on_refused=lambda *args: refused.append(args))
    calls = [threading.Thread(target=lambda: a.request("c", "slow", b"y", max_response=64, timeout=10))
             for _ in range(2)]
    for t in calls:  # one runs, one waits in a's queue (max 1)
        t.start()
    try:
        _wait(lambda: c.stats()["running"] == 1 and c.stats()["queued"] == 1)
        with pytest.raises(TransportError):
            a.request("c", "slow", b"z", max_response=64)
        assert c.stats()["refused"] == {"busy": 1} and refused[-1][:2] == ("a", Reason.BUSY)
    finally:
        gate.set()
        for t in calls:
            t.join(10)
    assert c.stats()["served"] == 2 and c.stats()["in_flight"] == 0


def test_byte_budget_refuses_busy(hub):
    a, b = hub("a"), hub("b", global_budget=100)
    gate = threading.Event()
    b.serve("hold", lambda peer, data: gate.wait(10) and b"ok", max_request=60)
    first = threading.Thread(target=lambda: a.request("b", "hold", b"x" * 60, max_response=8, timeout=10))
    first.start()
    try:
        _wait(lambda: b.stats()["in_flight"] == 60)
        with pytest.raises(TransportError):
            a.request("b", "hold", b"x" * 60, max_response=8)
        assert b.stats()["refused"] == {"busy": 1}
    finally:
        gate.set()
        first.join(10)
    assert b.stats()["in_flight"] == 0 and b.stats()["peak_in_flight"] == 60


def test_priority_serves_good_peers_first(hub):
    standing = PeerStanding()
    standing.accepted("good")
    standing.rejected("bad")
    server = hub("server", workers=1)
    order, gate = [], threading.Event()
    server.serve("work", lambda peer, data: gate.wait(10) and (order.append(peer) or b""), max_request=8,
                 priority=standing)
    peers = [hub(name) for name in ("blocker", "bad", "new", "good")]
    calls = [threading.Thread(target=p.request, args=("server", "work", b""), kwargs={"max_response": 8})
             for p in peers]
    calls[0].start()
    _wait(lambda: server.stats()["running"] == 1)
    for t in calls[1:]:
        t.start()
    _wait(lambda: server.stats()["queued"] == 3)
    gate.set()
    for t in calls:
        t.join(10)
    assert order == ["blocker", "good", "new", "bad"]


def test_make_transport_and_light_import():
    hub = MemoryHub()
    t = make_transport("memory", hub=hub, peer_id="x")
    assert isinstance(t, MemoryTransport) and hub.get("x") is t
    t.close()
    assert hub.get("x") is None
    with pytest.raises(ValueError):
        make_transport("carrier-pigeon")
    code = "import sys, swarm.transport; print('hivemind' in sys.modules or 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _wait(predicate, timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")
