"""Emulated geo-distributed links with real packets: one network namespace per node.

Layout (all of it inside namespaces this module creates; the machine's own network is untouched):

    hub namespace:  bridge br0 -- h<i> (veth)  ...one per host
    host namespace: eth0 (the veth's other end), 10.77.<region>.<n>/16, lo

- **bandwidth**: `tbf` on the host's eth0 (its uplink) and on the hub's h<i> (its downlink: the
  hub sends towards the host through it), so no IFB is needed;
- **delay, jitter, loss**, on the receiving side, by the first of these that works here:
  - `netem`, where the kernel has it: on the hub's h<i> (what the host receives), an `htb` with
    one class per source region (a u32 filter on the source subnet), each with a `netem` leaf for
    the link from that region; the downlink limit is the htb's rate, replacing the tbf;
  - otherwise (this machine: DESIGN.md §7, no netem and no module loading) the NFQUEUE delayer:
    iptables (mangle PREROUTING) in the host hands every packet from another host to
    `scenarios.netem.delayer`, which holds it for the one-way delay of the region pair it came
    over, drops a share and releases the rest in order (holding on the sender's egress collapses
    TCP);
- **partitions**: iptables DROP rules between two regions' subnets, ahead of the queue.

Every namespace is named `es<runner pid>-<tag>-<name>`: `down()` removes a run's on every exit
path (its processes first), and `remove_leftovers()` removes those of runners that died.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "es"
QUEUE = 0
BRIDGE = "br0"


@dataclass(frozen=True)
class LinkSpec:
    """One direction of a region pair (the same both ways unless a timeline event changes it)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0


@dataclass(frozen=True)
class Host:
    name: str
    region: str
    up_mbit: float = 0.0
    """Uplink bandwidth; 0 = as fast as the machine goes."""
    down_mbit: float = 0.0


class NetemError(RuntimeError):
    """Link emulation cannot run here (the message says why and what to install)."""


def unavailable() -> str | None:
    """Why namespaced link emulation cannot run on this machine, or None when it can."""
    if sys.platform != "linux":
        return "link emulation needs Linux network namespaces"
    if os.geteuid() != 0:
        return "link emulation needs root (network namespaces, tc, iptables)"
    for tool in ("ip", "tc", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (make installs iptables and libnetfilter-queue-dev when root)"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return "the netfilterqueue package is missing (pip install NetfilterQueue, after libnetfilter-queue-dev)"
    return None


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetemError(f"`{' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def netem_commands(dev: str, subnets: dict[str, str], links: dict[str, LinkSpec], down_mbit: float) -> list[list[str]]:
    """`tc` commands that shape what reaches a host through `dev` (the hub's end of its veth):
    per source region (`subnets`: region -> CIDR) a class of an htb whose leaf is a netem qdisc
    with the link from that region (`links`: region -> spec); the htb's rate is the downlink."""
    rate = f"{down_mbit}mbit" if down_mbit else "10gbit"
    commands = [["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb"],
                ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate]]
    for k, (region, subnet) in enumerate(subnets.items(), start=10):
        commands += [
            ["tc", "class", "add", "dev", dev, "parent", "1:1", "classid", f"1:{k}", "htb", "rate", rate, "ceil", rate],
            ["tc", "qdisc", "add", "dev", dev, "parent", f"1:{k}", "handle", f"{k}:", *_netem(links[region])],
            ["tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
             "src", subnet, "flowid", f"1:{k}"]]
    return commands


def _netem(spec: LinkSpec) -> list[str]:
    """A netem leaf for one link; a queue long enough for 100 Mbit over a 300 ms path."""
    return ["netem", "limit", "100000", "delay", f"{spec.delay_ms}ms", *([f"{spec.jitter_ms}ms"] if spec.jitter_ms else []),
            "loss", f"{spec.loss * 100}%"]


def _tbf(mbit: float) -> list[str]:
    burst_bits = max(32_000, int(mbit * 1e6 / 250))  # 4 ms of traffic, at least 4 KB
    return ["tbf", "rate", f"{mbit}mbit", "burst", str(burst_bits // 8), "latency", "400ms"]


@dataclass
class Topology:
    tag: str
    regions: tuple[str, ...]
    hosts: tuple[Host, ...]
    links: dict[tuple[str, str], LinkSpec]
    """(from region, to region) -> spec; a missing pair has no delay, jitter or loss."""
    workdir: Path
    seed: int = 0
    delay_by: str = "auto"
    """"netem", "nfqueue", or "auto": netem where the kernel has it (settled by `up`)."""
    delayers: dict[str, subprocess.Popen] = field(default_factory=dict)
    cut: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if len(self.regions) > 250 or any(sum(h.region == r for h in self.hosts) > 250 for r in self.regions):
            raise NetemError("at most 250 regions and 250 hosts per region")
        self._ip = {}
        for r, region in enumerate(self.regions, start=1):
            for n, host in enumerate([h for h in self.hosts if h.region == region], start=1):
                self._ip[host.name] = f"10.77.{r}.{n}"

    # -- names -------------------------------------------------------------------------------
    @property
    def hub(self) -> str:
        return f"{PREFIX}{os.getpid()}-{self.tag}-hub"

    def ns(self, host: str) -> str:
        return f"{PREFIX}{os.getpid()}-{self.tag}-{host}"

    def ip(self, host: str) -> str:
        return self._ip[host]

    def wrap(self, host: str) -> list[str]:
        """The command prefix that runs a program inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    def subnet(self, region: str) -> str:
        return f"10.77.{self.regions.index(region) + 1}.0/24"

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> Topology:
        """Create everything; on any failure, remove what was made and raise NetemError."""
        why = unavailable()
        if why:
            raise NetemError(why)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            _run("ip", "netns", "add", self.hub)
            self._in(self.hub, "ip", "link", "set", "lo", "up")
            self._in(self.hub, "ip", "link", "add", BRIDGE, "type", "bridge")
            self._in(self.hub, "ip", "link", "set", BRIDGE, "up")
            if self.delay_by == "auto":
                self.delay_by = "netem" if self._netem_works() else "nfqueue"
            for i, host in enumerate(self.hosts):
                self._add_host(i, host)
        except BaseException:
            self.down()
            raise
        return self

    def _add_host(self, i: int, host: Host) -> None:
        ns, hub_end = self.ns(host.name), f"h{i}"
        _run("ip", "netns", "add", ns)
        # Both ends are born in the hub namespace, one moved at once: nothing in the root namespace.
        self._in(self.hub, "ip", "link", "add", hub_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._in(self.hub, "ip", "link", "set", hub_end, "master", BRIDGE)
        self._in(self.hub, "ip", "link", "set", hub_end, "up")
        self._in(ns, "ip", "link", "set", "lo", "up")
        self._in(ns, "ip", "addr", "add", f"{self.ip(host.name)}/16", "dev", "eth0")
        self._in(ns, "ip", "link", "set", "eth0", "up")
        if host.up_mbit:
            self._in(ns, "tc", "qdisc", "add", "dev", "eth0", "root", *_tbf(host.up_mbit))
        for region in self.regions:  # counting-only rules (no target): bytes received per source region
            self._in(ns, "iptables", "-t", "mangle", "-A", "PREROUTING", "-s", self.subnet(region))
        if self.delay_by == "netem":
            for command in netem_commands(hub_end, {r: self.subnet(r) for r in self.regions},
                                          {r: self.links.get((r, host.region), LinkSpec()) for r in self.regions},
                                          host.down_mbit):
                self._in(self.hub, *command)
            return
        if host.down_mbit:
            self._in(self.hub, "tc", "qdisc", "add", "dev", hub_end, "root", *_tbf(host.down_mbit))
        self._write_links(host)
        with open(self.workdir / f"delayer-{host.name}.log", "wb") as errors:
            delayer = subprocess.Popen(
                [*self.wrap(host.name), sys.executable, "-m", "scenarios.netem.delayer", str(QUEUE),
                 str(self._links_path(host)), str(self.seed + i)],
                stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, start_new_session=True)
        self.delayers[host.name] = delayer
        if delayer.stdout.readline().strip() != b"ready":
            raise NetemError(f"the delayer of {host.name} did not start: see {self.workdir}/delayer-{host.name}.log")
        self._in(ns, "iptables", "-t", "mangle", "-A", "PREROUTING", "-s", "10.77.0.0/16", "-j", "NFQUEUE",
                 "--queue-num", str(QUEUE))

    def down(self) -> None:
        """Stop the delayers and every process left in our namespaces, then remove them."""
        for proc in self.delayers.values():
            _stop(proc.pid)
        for name in [self.ns(h.name) for h in self.hosts] + [self.hub]:
            _remove_namespace(name)
        self.delayers.clear()

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # -- timeline ----------------------------------------------------------------------------
    def partition(self, a: str, b: str) -> None:
        """Drop every packet between regions a and b, both ways, until `heal(a, b)`."""
        self._cut(a, b, "-I")
        self.cut.add((a, b))

    def heal(self, a: str, b: str) -> None:
        if (a, b) in self.cut:
            self._cut(a, b, "-D")
            self.cut.discard((a, b))

    def _cut(self, a: str, b: str, op: str) -> None:
        for here, there in ((a, b), (b, a)):
            for host in (h for h in self.hosts if h.region == here):
                rule = ["PREROUTING", "1"] if op == "-I" else ["PREROUTING"]
                self._in(self.ns(host.name), "iptables", "-t", "mangle", op, *rule, "-s", self.subnet(there),
                         "-j", "DROP")

    def set_link(self, a: str, b: str, spec: LinkSpec) -> None:
        """Change the a <-> b link (both directions) at run time."""
        self.links[(a, b)] = self.links[(b, a)] = spec
        for i, host in enumerate(self.hosts):
            if host.region not in (a, b):
                continue
            if self.delay_by == "netem":  # the class of the other end's region on this host's downlink
                k = 10 + self.regions.index(b if host.region == a else a)
                self._in(self.hub, "tc", "qdisc", "change", "dev", f"h{i}", "parent", f"1:{k}", "handle", f"{k}:",
                         *_netem(spec))
            else:
                self._write_links(host)
                self.delayers[host.name].send_signal(signal.SIGHUP)

    def received_bytes(self) -> dict[tuple[str, str], int]:
        """(from region, to host) -> bytes the host received from that region so far (what the
        partition rules let through, before the delayer's loss)."""
        subnets = {self.subnet(r): r for r in self.regions}
        out = {}
        for host in self.hosts:
            dump = _run("ip", "netns", "exec", self.ns(host.name), "iptables-save", "-c", "-t", "mangle").stdout
            for line in dump.splitlines():  # "[pkts:bytes] -A PREROUTING -s 10.77.1.0/24" (no -j)
                parts = line.split()
                if len(parts) == 5 and parts[1:4] == ["-A", "PREROUTING", "-s"] and parts[4] in subnets:
                    out[(subnets[parts[4]], host.name)] = int(parts[0].strip("[]").split(":")[1])
        return out

    def emulator_cpu_s(self) -> float:
        """CPU seconds the delayers used so far (the emulator's own cost, for the report)."""
        import psutil

        total = 0.0
        for proc in self.delayers.values():
            try:
                times = psutil.Process(proc.pid).cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    # -- helpers -----------------------------------------------------------------------------
    def _netem_works(self) -> bool:
        """Whether this kernel has netem: tried on a veth in the hub namespace (veth is what the
        topology needs anyway; a dummy device may be missing)."""
        probe = "netem-probe"
        self._in(self.hub, "ip", "link", "add", probe, "type", "veth", "peer", "name", f"{probe}-b")
        try:
            return _run("ip", "netns", "exec", self.hub, "tc", "qdisc", "add", "dev", probe, "root", "netem",
                        "delay", "1ms", check=False).returncode == 0
        finally:
            self._in(self.hub, "ip", "link", "del", probe)

    def _links_path(self, host: Host) -> Path:
        return self.workdir / f"links-{host.name}.json"

    def _write_links(self, host: Host) -> None:
        """The delayer's table: per source region, the link from there to this host's region."""
        table = {}
        for region in self.regions:
            spec = self.links.get((region, host.region), LinkSpec())
            table[self.subnet(region)] = {"delay_ms": spec.delay_ms, "jitter_ms": spec.jitter_ms, "loss": spec.loss}
        path = self._links_path(host)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, path)

    @staticmethod
    def _in(ns: str, *args: str) -> None:
        _run("ip", "netns", "exec", ns, *args)


def _stop(pid: int, grace: float = 3.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: poll its existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _remove_namespace(name: str) -> None:
    """Kill whatever still runs in namespace `name` (by pid), then delete it."""
    pids = _run("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        _stop(int(pid), grace=1.0)
    _run("ip", "netns", "del", name, check=False)


def our_namespaces() -> list[str]:
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def remove_leftovers() -> list[str]:
    """Remove the namespaces (and their processes) of runners that are gone: a later run cleans up
    after one that crashed or was SIGKILLed. Returns the names removed."""
    removed = []
    for name in our_namespaces():
        owner = name[len(PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or process_alive(int(owner)):
            continue
        _remove_namespace(name)
        removed.append(name)
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
