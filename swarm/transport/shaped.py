"""Emulated links inside the transport: the fallback of `swarm simulate` where it cannot shape
real packets (no root, not Linux). Same link model as the namespaced emulator: per region pair
a one-way delay, jitter and loss; per node an uplink and a downlink rate; partitions.

`ShapedTransport` wraps any Transport and shapes the requests this node makes, both ways:
    request:  wait one-way delay (us -> them) + the bytes' time on the narrower of our uplink
              and their downlink (FIFO: a busy link queues), then send;
    reply:    the same from them to us (their uplink, our downlink);
    loss:     each message of n packets loses one with probability 1 - (1 - loss)^n; a loss
              costs a retransmission timeout (TCP's minimum, 200 ms), as TCP would;
    partition: the request stalls, as over a cut link: it goes on if the link heals before the
              request's timeout, else fails then.
What it cannot shape, the report says: traffic it does not carry (the DHT's own), and requests
other nodes make to us (their transport shapes those, without sharing our link's queue).
The bytes it shaped are counted per (source region, receiving node), both ways of each request,
and shown in `stats()` (status.json's `door`) as `link_bytes` {"REGION>NODE": bytes}: summed over
the nodes, every shaped request is counted once.

The links file (JSON, written by the simulator, re-read when it changes):
    {"self": NAME, "nodes": {PEER_ID: {"name", "region", "up_mbit", "down_mbit"}, ...},
     "links": {"A->B": {"delay_ms", "jitter_ms", "loss"}, ...}, "cut": [["A", "B"], ...]}
"""
from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from swarm.transport.base import Transport, TransportError

PACKET_BYTES = 1448  # a TCP segment's payload on a 1500-byte MTU
RTO_S = 0.2
CUT_POLL_S = 0.5  # how often a request stalled by a partition looks whether it healed
HEADERS_BYTES = 64  # framing and stream overhead per message, roughly


class LinkModel:
    """The links file, parsed; `reload()` picks up the simulator's changes (timeline events)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.seen = None
        self.reload()

    def reload(self) -> None:
        st = self.path.stat()
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)  # each write is a new file (atomic replace): a new inode
        if seen == self.seen:
            return
        raw = json.loads(self.path.read_text())
        self.seen = seen
        self.nodes = raw["nodes"]
        self.me = next(n for n in self.nodes.values() if n["name"] == raw["self"])
        self.links = raw["links"]
        self.cut = {frozenset(pair) for pair in raw.get("cut", [])}

    def link(self, a: str, b: str) -> dict:
        return self.links.get(f"{a}->{b}", {"delay_ms": 0.0, "jitter_ms": 0.0, "loss": 0.0})


def _rate(*mbits: float) -> float:
    """Bytes/s of the narrower end (0 = unlimited)."""
    limits = [m for m in mbits if m]
    return min(limits) * 1e6 / 8 if limits else 0.0


class ShapedTransport(Transport):
    def __init__(self, inner: Transport, links: Path, *, seed: int = 0, clock=time.monotonic, sleep=time.sleep):
        self.inner, self.model = inner, LinkModel(links)
        self.clock, self.sleep = clock, sleep
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._free_at = {"up": 0.0, "down": 0.0}  # when our uplink / downlink is next idle
        self.link_bytes: dict[str, int] = {}  # "source region>receiving node" -> bytes shaped

    def serve(self, *args, **kwargs) -> None:
        self.inner.serve(*args, **kwargs)

    def close(self) -> None:
        self.inner.close()

    def stats(self) -> dict:
        with self._lock:
            return {**self.inner.stats(), "link_bytes": dict(self.link_bytes)}

    def request(self, peer_id: str, name: str, data: bytes, *, max_response: int, timeout: float = 60.0,
                progress_timeout: float | None = None) -> bytes:
        self.model.reload()
        peer = self.model.nodes.get(peer_id)
        if peer is None:  # not in the scenario (e.g. a test's own client): unshaped
            return self.inner.request(peer_id, name, data, max_response=max_response, timeout=timeout,
                                      progress_timeout=progress_timeout)
        me, started = self.model.me, self.clock()
        while self._cut(me, peer):  # like TCP over a cut link: stall; go on if it heals in time
            left = timeout - (self.clock() - started)
            if left <= 0:
                raise TransportError(f"no route to {peer['name']} (emulated partition)")
            self.sleep(min(CUT_POLL_S, left))
            self.model.reload()
        self.sleep(self.delay(me, peer, len(data), "up"))
        reply = self.inner.request(peer_id, name, data, max_response=max_response,
                                   timeout=max(0.1, timeout - (self.clock() - started)),
                                   progress_timeout=progress_timeout)
        self.sleep(self.delay(peer, me, len(reply), "down"))
        return reply

    def _cut(self, me: dict, peer: dict) -> bool:
        return me["region"] != peer["region"] and frozenset((me["region"], peer["region"])) in self.model.cut

    def delay(self, src: dict, dst: dict, size: int, ours: str) -> float:
        """Seconds a message of `size` bytes from src to dst takes beyond the real transport:
        the link's delay (with jitter), its queue and transfer time on the narrower end, and
        any retransmission timeouts. `ours`: which of our two links carries it."""
        link = self.model.link(src["region"], dst["region"])
        size += HEADERS_BYTES
        with self._lock:
            key = f"{src['region']}>{dst['name']}"
            self.link_bytes[key] = self.link_bytes.get(key, 0) + size
            rate = _rate(src["up_mbit"], dst["down_mbit"])
            now = self.clock()
            transfer = size / rate if rate else 0.0
            done = max(now, self._free_at[ours]) + transfer
            self._free_at[ours] = done
            jitter = self.rng.uniform(-link["jitter_ms"], link["jitter_ms"]) if link["jitter_ms"] else 0.0
            packets = -(-size // PACKET_BYTES)
            lost = link["loss"] and self.rng.random() < 1 - (1 - link["loss"]) ** packets
        return (done - now) + (link["delay_ms"] + jitter) / 1000 + (RTO_S if lost else 0.0)


def links_file(path: Path, me: str, nodes: dict, links: dict, cut=()) -> None:
    """Write (atomically) the links file a ShapedTransport reads; `nodes`: peer id -> node dict."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps({"self": me, "nodes": nodes, "links": links, "cut": [list(c) for c in cut]}))
    tmp.replace(path)
