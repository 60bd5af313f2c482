"""The receive-side delayer: one per emulated node, inside its network namespace.

The kernel here has no netem, so delay, jitter and loss are applied in user space: an iptables
rule (mangle PREROUTING, the node's namespace) hands every packet arriving from another emulated
node to NFQUEUE; this process holds each one for the one-way delay of the link it came over (plus
jitter), drops a share of them (the link's loss), and releases the rest in arrival order per
source, so TCP sees a long pipe, not a reordering one. On the receiving side: held on the
sender's egress, TCP Small Queues collapse throughput (DESIGN.md §7).

    python -m scenarios.netem.delayer QUEUE_NUM LINKS_JSON

LINKS_JSON: {"<source CIDR>": {"delay_ms": d, "jitter_ms": j, "loss": p}, ...}; the first CIDR
that contains a packet's source address decides. Re-read on SIGHUP (a timeline event changed a
link). Packets from no listed source pass at once.
"""
from __future__ import annotations

import collections
import ipaddress
import json
import os
import random
import select
import signal
import sys
import time
from pathlib import Path


class Links:
    def __init__(self, path: Path, seed: int):
        self.path, self.rng = path, random.Random(seed)
        self.table: list[tuple[ipaddress.IPv4Network, float, float, float]] = []
        self.reload()

    def reload(self) -> None:
        raw = json.loads(self.path.read_text())
        self.table = [(ipaddress.ip_network(cidr), v["delay_ms"] / 1e3, v.get("jitter_ms", 0.0) / 1e3,
                       v.get("loss", 0.0)) for cidr, v in raw.items()]

    def hold(self, payload: bytes) -> tuple[str, float] | None:
        """(source, seconds to hold) for an IPv4 packet, or None to drop it."""
        src = ipaddress.IPv4Address(payload[12:16])
        for net, delay, jitter, loss in self.table:
            if src in net:
                if loss and self.rng.random() < loss:
                    return None
                return str(net), max(0.0, delay + (self.rng.uniform(-jitter, jitter) if jitter else 0.0))
        return str(src), 0.0


def serve(queue_num: int, links_path: Path, seed: int = 0) -> None:
    from netfilterqueue import NetfilterQueue

    try:  # a packet held past its time is a longer link than configured: run ahead of the nodes
        os.setpriority(os.PRIO_PROCESS, 0, -15)
    except OSError:
        pass
    links = Links(links_path, seed)
    held: dict[str, collections.deque] = collections.defaultdict(collections.deque)  # per source, in order
    last_release: dict[str, float] = {}
    reload = []
    signal.signal(signal.SIGHUP, lambda *_: reload.append(1))
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))

    def arrived(pkt) -> None:
        decision = links.hold(pkt.get_payload()[:20])
        if decision is None:
            pkt.drop()
            return
        source, wait = decision
        now = time.monotonic()
        at = max(now + wait, last_release.get(source, 0.0))  # never overtake an earlier packet
        last_release[source] = at
        if at <= now:
            pkt.accept()
        else:
            held[source].append((at, pkt))

    nfq = NetfilterQueue()
    nfq.bind(queue_num, arrived, max_len=100_000)
    fd = nfq.get_fd()
    print("ready", flush=True)
    try:
        while not stop:
            if reload:
                reload.clear()
                links.reload()
            now = time.monotonic()
            for queue in held.values():
                while queue and queue[0][0] <= now:
                    queue.popleft()[1].accept()
            due = min((q[0][0] for q in held.values() if q), default=now + 0.05)
            readable, _, _ = select.select([fd], [], [], max(0.0, min(due - now, 0.05)))
            if readable:
                nfq.run(block=False)
    finally:
        for queue in held.values():  # let what we held through: the namespace is going away anyway
            for _, pkt in queue:
                pkt.accept()
        nfq.unbind()


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
