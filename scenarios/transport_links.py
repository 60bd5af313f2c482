"""A scenario's links emulated inside the nodes' transport (`swarm.transport.shaped`): what
`swarm simulate` falls back to where it cannot shape real packets (no root, not Linux), or uses
when asked (`--emulation transport`). Same interface as `scenarios.network.ScenarioNetwork`.

Every node runs on 127.0.0.1 with `--shape-links FILE`; partitions and link changes rewrite the
files, which each node re-reads before its next request. "Measured" here means through the same
shaping code, in this process, over an in-memory transport: it checks the model is applied as
configured, not what a kernel would do; the report says so.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import median

from scenarios.network import bandwidth_check, bandwidth_probes, probe_pairs, rtt_check, traffic
from scenarios.scenario import Event, Scenario
from swarm.transport import MemoryHub, make_transport
from swarm.transport.shaped import ShapedTransport, links_file

EMULATION = ("inside the transport (no root: {why}): the nodes' own requests (chunks, adapters, status, "
             "provenance) are delayed, throttled and dropped per the link model; the DHT's traffic is not "
             "shaped, and a partition stalls requests but not the DHT")
PROBE = "probe"


class TransportLinks:
    def __init__(self, scenario: Scenario, workdir: Path, peer_ids: dict[str, str], why: str, nodes_dir: Path):
        self.scenario, self.workdir, self.why = scenario, Path(workdir), why
        self.nodes_dir = Path(nodes_dir)  # each node's workdir, NAME/status.json
        self.regions = {n.name: n.region for n in scenario.nodes}
        self.byte_samples: list[tuple[float, dict]] = []
        self._last: dict[tuple[str, str, str], int] = {}  # (reporting node, region, receiver) -> its count
        self._base: dict[tuple[str, str, str], int] = {}  # the same, counted before the node restarted
        self.peer_ids = peer_ids  # node name -> libp2p peer id (from its key)
        self.links = {}
        for link in scenario.links:
            a, b = link.between
            spec = {"delay_ms": link.delay_ms, "jitter_ms": link.jitter_ms, "loss": link.loss}
            self.links[f"{a}->{b}"] = self.links[f"{b}->{a}"] = spec
        self.cut: set[frozenset] = set()
        self.measured: list[dict] = []
        self.bandwidth: list[dict] = []

    def nodes(self) -> dict:
        return {self.peer_ids[n.name]: {"name": n.name, "region": n.region, "up_mbit": n.up_mbit,
                                        "down_mbit": n.down_mbit} for n in self.scenario.nodes}

    def path(self, name: str) -> Path:
        return self.workdir / f"links-{name}.json"

    def write(self) -> None:
        for n in self.scenario.nodes:
            links_file(self.path(n.name), n.name, self.nodes(), self.links, [tuple(c) for c in self.cut])

    def up(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write()
        return []

    def down(self) -> None:
        pass  # nothing outside the run's directory

    def node_args(self, name: str) -> list[str]:
        return ["--shape-links", str(self.path(name))]

    def wrap(self, name: str) -> list[str]:
        return []

    def apply(self, event: Event) -> None:
        a, b = event.regions
        if event.action == "partition":
            self.cut.add(frozenset((a, b)))
        elif event.action == "heal":
            self.cut.discard(frozenset((a, b)))
        elif event.action == "link":
            self.links[f"{a}->{b}"] = self.links[f"{b}->{a}"] = {
                "delay_ms": event.delay_ms, "jitter_ms": event.jitter_ms, "loss": event.loss}
        self.write()

    # -- measuring the model through the shaping code ----------------------------------------
    def _pair(self, src: str, dst: str):
        """src's shaped transport and dst's plain one, on an in-memory hub; dst echoes."""
        hub = MemoryHub()
        server = make_transport("memory", hub=hub, peer_id=self.peer_ids[dst])
        server.serve(PROBE, lambda peer, data: data if len(data) < 64 else b"ok", max_request=64 << 20)
        client = ShapedTransport(make_transport("memory", hub=hub, peer_id=self.peer_ids[src]), self.path(src))
        return client, server

    def measure_links(self) -> list[dict]:
        for a, b, src, dst in probe_pairs(self.scenario):
            client, server = self._pair(src, dst)
            rtts = []
            for _ in range(10):
                started = time.perf_counter()
                client.request(self.peer_ids[dst], PROBE, b"x", max_response=64, timeout=30)
                rtts.append((time.perf_counter() - started) * 1000)
            client.close(), server.close()
            configured = self._link(a, b)["delay_ms"] + self._link(b, a)["delay_ms"]
            self.measured.append(rtt_check(a, b, configured, median(rtts)))
        return self.measured

    def measure_bandwidth(self, seconds: float = 1.0) -> list[dict]:
        """Goodput of each limited node's uplink and downlink through the shaping code: one
        transfer sized for about `seconds` at the expected rate, the link delay left out."""
        for node, direction, peer, expected in bandwidth_probes(self.scenario):
            src, dst = (node, peer) if direction == "up" else (peer, node)
            size = int(expected * 1e6 / 8 * seconds)
            client, server = self._pair(src, dst)
            rtt = self._link(self._region(src), self._region(dst))["delay_ms"] + \
                self._link(self._region(dst), self._region(src))["delay_ms"]
            started = time.perf_counter()
            client.request(self.peer_ids[dst], PROBE, bytes(size), max_response=64, timeout=120)
            took = time.perf_counter() - started - rtt / 1000
            client.close(), server.close()
            self.bandwidth.append(bandwidth_check(node, direction, peer, expected, size * 8 / 1e6 / took))
        return self.bandwidth

    def _region(self, name: str) -> str:
        return next(n.region for n in self.scenario.nodes if n.name == name)

    def _link(self, a: str, b: str) -> dict:
        return self.links.get(f"{a}->{b}", {"delay_ms": 0.0, "jitter_ms": 0.0, "loss": 0.0})

    def mark_launch(self) -> None:
        pass

    def sample_bytes(self, t: float) -> None:
        """Bytes per (source region, receiving node) so far: what every node's transport shaped,
        read from its status.json (a restarted node counts from zero again: its earlier bytes are
        kept)."""
        for n in self.scenario.nodes:
            try:
                counts = json.loads((self.nodes_dir / n.name / "status.json").read_text())["door"]["link_bytes"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for key, count in counts.items() if isinstance(counts, dict) else ():
                src, _, host = str(key).partition(">")
                seen = (n.name, src, host)
                if isinstance(count, int) and host in self.regions:
                    if count < self._last.get(seen, 0):
                        self._base[seen] = self._base.get(seen, 0) + self._last[seen]
                    self._last[seen] = count
        totals: dict[tuple[str, str], int] = {}
        for (_, src, host), count in self._last.items():
            totals[(src, host)] = totals.get((src, host), 0) + count
        for (_, src, host), count in self._base.items():
            totals[(src, host)] = totals.get((src, host), 0) + count
        self.byte_samples.append((round(t, 1), totals))

    def summary(self) -> dict:
        return {"emulation": EMULATION.format(why=self.why), "links": self.measured, "bandwidth": self.bandwidth,
                "emulator_cpu_s": None, **traffic(self.scenario, self.byte_samples)}
