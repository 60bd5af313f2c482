"""`swarm simulate`: run a scenario as real `swarm node` processes on 127.0.0.1, watch, report.

Real processes, not threads or mocks, so the run exercises exactly what users deploy (DHT join,
signed manifest, role assignment, transport). The runner only reads what nodes write anyway
(status.json, metrics.jsonl) and stops every node by process group in a `finally`, so an early
exit, a timeout, Ctrl-C or SIGTERM all end with no process left and a report written.

Out dir layout: scenario.toml (copy), run.toml (signed manifest), keys/{owner,NAME}.key,
nodes/NAME/ (each node's workdir: status.json, metrics.jsonl, node.log, stderr.log, node.out), report/.
"""
from __future__ import annotations

import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from scenarios.processes import NodeProcess
from scenarios.report import MetricsTail, sparkline, summarize, write_report
from scenarios.scenario import Scenario, ScenarioError, scenario_manifest, trainer_candidates

RATE_WINDOW_S = 20.0
QUIET_EVERY_S = 15.0
EXIT_CODES = {"done": 0, "timeout": 1, "node_exited": 1, "interrupted": 130}
WITNESS_WAIT_S = 10.0
BYTES_EVERY_S = 5.0  # how often the per-link byte counters are read
WITNESS_LINE = b"\n\xe2\x80\x94 echo-swarm-witness/"  # "— echo-swarm-witness/": a cosignature line


def prepare(scenario: Scenario, out: Path) -> tuple[Path, dict]:
    """Fresh out dir, keys, and the manifest signed by the same code as `swarm init`; it
    authorises the keys of the scenario's "trainer" and "auto" nodes to train, no others."""
    from crypto.identity import Identity
    from swarm.manifest import load_manifest, sign_manifest, write_manifest

    if out.exists() and any(out.iterdir()):
        raise ScenarioError(f"--out {out} already exists and is not empty; choose a new directory")
    owner = Identity.generate()
    keys = {spec.name: Identity.generate() for spec in scenario.nodes}
    trainers = tuple(keys[name].key_id for name in trainer_candidates(scenario))  # only these may train
    manifest = scenario_manifest(scenario, owner.key_id, trainers)  # a bad setting fails before anything is written
    (out / "keys").mkdir(parents=True, exist_ok=True)
    if scenario.source_path:
        shutil.copyfile(scenario.source_path, out / "scenario.toml")
    owner.save(out / "keys" / "owner.key")
    for name, key in keys.items():
        key.save(out / "keys" / f"{name}.key")
    run = out / "run.toml"
    write_manifest(sign_manifest(manifest, owner), run)
    grpo = load_manifest(run).manifest.grpo  # exactly what the nodes will verify and read
    return run, {"prompts_per_step": grpo.prompts_per_step, "group_size": grpo.group_size,
                 "max_new_tokens": grpo.max_new_tokens}


class Simulation:
    def __init__(self, scenario: Scenario, out: Path, *, quiet: bool = False, console: Console | None = None,
                 node_cls: type = NodeProcess, emulation: str = "auto"):
        self.scenario, self.out, self.node_cls = scenario, out, node_cls  # tests pass fake nodes
        self.console = console or Console()
        self.quiet = quiet or not self.console.is_terminal
        self.nodes: list[NodeProcess] = []
        self.tails = {n.name: MetricsTail(out / "nodes" / n.name / "metrics.jsonl") for n in scenario.nodes}
        self.events: dict[str, list[dict]] = {n.name: [] for n in scenario.nodes}
        self.started = time.monotonic()
        self.network = None  # a ScenarioNetwork (or TransportLinks) when the scenario has regions
        self.emulation = emulation  # of links: "auto", "namespaces" (real packets) or "transport"
        self.pending = list(scenario.events)  # the timeline, by time
        self.timeline: list[dict] = []  # what was done, when
        self.killed: set[str] = set()  # nodes the timeline took down (not failures)
        self.quotas: dict = {}  # node name -> CpuQuota, for nodes that run like slower hardware
        self.disks: dict = {}  # node name -> SmallDisk, for nodes whose workdir can fill up

    def node_args(self, spec, run: Path, peers: list[str]) -> list[str]:
        return [*(self.network.node_args(spec.name) if self.network else []), "--run", str(run), "--key", str(self.out / "keys" / f"{spec.name}.key"), "--role", spec.role,
                "--engine", spec.engine, "--threads", str(spec.threads),
                *(["--scoring-copy"] if spec.scoring_copy else []),
                *(["--max-tok-s", f"{spec.max_tok_s:g}"] if spec.max_tok_s else []),
                *(["--initial-peers", *peers] if peers else [])]

    def run(self) -> int:
        s = self.scenario.settings
        self.say(f"scenario {s.name}: {len(self.scenario.nodes)} nodes, {s.steps} steps, "
                 f"{s.mode} (S={s.staleness}), out {self.out}")
        self.say("preparing keys and the signed manifest (the first run also builds the tiny base model)")
        run, grpo = prepare(self.scenario, self.out)
        self.started = time.monotonic()
        outcome = "interrupted"
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self.network_up()
            self.started, self.started_unix = time.monotonic(), time.time()
            outcome = self.launch_and_watch(run)
        except KeyboardInterrupt:
            self.say("interrupted")
        finally:
            self.wall_s = time.monotonic() - self.started
            codes = self.stop_all()
            self.devices = self.device_profiles()
            for quota in self.quotas.values():
                quota.remove()
            self.disks_down()
            if self.network is not None:
                self.network.sample_bytes(self.wall_s)
                self.network_summary = self.network.summary()
                self.network.down()
            signal.signal(signal.SIGTERM, previous)
        return self.report(outcome, grpo, codes)

    def network_up(self) -> None:
        """The scenario's regions and links as namespaces, measured before any node starts; the
        CPU quotas of nodes that run like slower hardware, and the small disks."""
        self.quotas_up()
        self.disks_up()
        if not self.scenario.regions:
            return
        from scenarios.netem.topology import unavailable
        from scenarios.network import ScenarioNetwork

        why = unavailable() if self.emulation != "transport" else "asked for with --emulation transport"
        if why and self.emulation == "namespaces":
            raise ScenarioError(f"{self.scenario.source}: --emulation namespaces shapes real packets, but {why}")
        if why:
            from crypto.identity import Identity
            from scenarios.transport_links import TransportLinks

            self.say(f"links emulated inside the transport: {why}")
            peer_ids = {n.name: Identity.load(self.out / "keys" / f"{n.name}.key").peer_id
                        for n in self.scenario.nodes}
            self.network = TransportLinks(self.scenario, self.out / "network", peer_ids, why, self.out / "nodes")
        else:
            self.network = ScenarioNetwork(self.scenario, self.out / "network")
        removed = self.network.up()
        if removed:
            self.say(f"removed {len(removed)} network namespace(s) a dead run left behind")
        for link in self.network.measure_links():
            a, b = link["between"]
            self.say(f"link {a}-{b}: round trip {link['measured_rtt_ms']:.1f} ms measured, "
                     f"{link['configured_rtt_ms']:.0f} ms configured")
        for bw in self.network.measure_bandwidth():
            self.say(f"{bw['node']} {bw['direction']}link (to/from {bw['peer']}): {bw['measured_mbit_s']:.1f} Mbit/s "
                     f"measured, {bw['configured_mbit_s']:g} configured")
        self.network.mark_launch()

    def launch_and_watch(self, run: Path) -> str:
        specs, deadline = self.scenario.nodes, self.started + self.scenario.settings.timeout_s
        self.say(f"launching {specs[0].name} (bootstrap peer) and waiting for its address")
        first = self.spawn(specs[0], run, [])
        try:
            maddr = first.wait_joined(timeout=max(1.0, deadline - time.monotonic()))
        except (RuntimeError, TimeoutError):
            if not first.alive():
                return self.failed(first)
            self.say(f"timeout: {specs[0].name} did not join within the scenario's timeout_s")
            return "timeout"
        self.say(f"{specs[0].name} joined at {maddr}; launching {len(specs) - 1} more")
        for spec in specs[1:]:
            self.spawn(spec, run, [maddr])
        self.run_file, self.bootstrap = run, maddr
        return self.watch(deadline)

    def device_profiles(self) -> dict:
        """node -> how it was made to behave like other hardware (the report's "device" column)."""
        profiles = {}
        for n in self.scenario.nodes:
            quota, disk = self.quotas.get(n.name), self.disks.get(n.name)
            parts = [quota.description if quota else "", f"at most {n.max_tok_s:g} tokens/s (cap)" if n.max_tok_s else "",
                     disk.description if disk else ""]
            if any(parts):
                profiles[n.name] = {"profile": "; ".join(filter(None, parts)),
                                    **({"throttled_periods": quota.throttled_periods()} if quota else {})}
        return profiles

    def _usable(self, device, what: str, hint: str = "") -> list[str]:
        """Check a device-limit module (cpu_quota, disk) can work here, and remove what dead runs
        left of it (returned); a ScenarioError naming the reason otherwise."""
        why = device.unavailable()
        if why:
            raise ScenarioError(f"{self.scenario.source}: this scenario gives nodes {what}, but {why}{hint}")
        return device.remove_leftovers()

    def disks_up(self) -> None:
        small = [n for n in self.scenario.nodes if n.disk_mb]
        if not small:
            return
        from scenarios import disk

        removed = self._usable(disk, "a small disk (disk_mb)")
        if removed:
            self.say(f"unmounted {len(removed)} small disk(s) a dead run left behind")
        for n in small:
            self.disks[n.name] = disk.SmallDisk(n.name, self.out / "nodes" / n.name, n.disk_mb)

    def disks_down(self) -> None:
        """Unmount each small disk, keeping what the node wrote there (its metrics, log, adapters
        and provenance are the run's record): copied out, unmounted, moved back."""
        for name, small in self.disks.items():
            workdir = self.out / "nodes" / name
            kept = workdir.with_name(f"{name}.kept")
            small.free()
            shutil.copytree(workdir, kept, symlinks=True)
            small.remove()
            for item in [*kept.iterdir(), *small.console.glob("*")]:
                item.rename(workdir / item.name)
            kept.rmdir()
            small.console.rmdir()
        self.disks.clear()

    def quotas_up(self) -> None:
        slow = [n for n in self.scenario.nodes if n.cpu_cores]
        if not slow:
            return
        from scenarios import cpu_quota

        self._usable(cpu_quota, "a CPU quota (cpu_cores)", "; max_tok_s (a tokens/s cap) makes a node slower without root")
        self.quotas = {n.name: cpu_quota.CpuQuota("sim", n.name, n.cpu_cores) for n in slow}

    def fire_due_events(self) -> None:
        """Apply the timeline's events whose time (seconds since the nodes launched) or trainer
        step has come, in file order among those due."""
        elapsed, steps = time.monotonic() - self.started, self.steps_done()
        due = [e for e in self.pending if (e.at_step and steps >= e.at_step) or (not e.at_step and elapsed >= e.at_s)]
        for event in due:
            self.pending.remove(event)
            current = {n.name: n for n in self.nodes}
            if event.action == "kill":
                current[event.node].kill_hard()
                self.killed.add(event.node)
            elif event.action in ("freeze", "thaw"):
                current[event.node].freeze(event.action == "freeze")
            elif event.action == "fill_disk":
                self.disks[event.node].fill()
            elif event.action == "free_disk":
                self.disks[event.node].free()
            elif event.action == "restart":
                spec = next(s for s in self.scenario.nodes if s.name == event.node)
                current[event.node].stop(grace=2.0)  # what a kill -9 left (its DHT child, p2pd)
                peers = [m for n in current.values() if n.alive() for m in (n.status() or {}).get("maddrs", [])[:1]]
                self.spawn(spec, self.run_file, peers or [self.bootstrap])
                self.killed.discard(event.node)
            else:
                self.network.apply(event)
            what = event.node or "-".join(event.regions)
            self.timeline.append({"t": round(time.monotonic() - self.started, 1), "at_s": event.at_s,
                                  "at_step": event.at_step, "action": event.action, "target": what})
            self.say(f"[{time.monotonic() - self.started:5.0f}s] timeline: {event.action} {what}")

    def spawn(self, spec, run: Path, peers: list[str]) -> NodeProcess:
        extra = {"wrap": self.network.wrap(spec.name)} if self.network else {}
        if spec.name in self.disks:  # its terminal is not on the disk that fills up
            extra["console"] = self.disks[spec.name].console
        node = self.node_cls(spec.name, self.out / "nodes" / spec.name, self.node_args(spec, run, peers), **extra)
        self.nodes.append(node)
        node.start()
        if spec.name in self.quotas:
            self.quotas[spec.name].apply(node.pid)
        return node

    def watch(self, deadline: float) -> str:
        if self.quiet:
            return self._watch(deadline, lambda: None)
        from rich.live import Live

        with Live(self.render(), console=self.console, refresh_per_second=1, transient=False) as live:
            return self._watch(deadline, lambda: live.update(self.render()))

    def _watch(self, deadline: float, refresh) -> str:
        last_line, last_steps, last_sample = 0.0, -1, time.monotonic()
        while True:
            if self.network is not None and time.monotonic() - last_sample >= BYTES_EVERY_S:
                last_sample = time.monotonic()
                self.network.sample_bytes(last_sample - self.started)
            current = {n.name: n for n in self.nodes}
            dead = [n for name, n in current.items() if not n.alive() and name not in self.killed]
            self.poll()  # after the liveness check: a trainer that logs `done` and exits is not a failure
            self.fire_due_events()  # after the poll: an event at the last step still fires
            if any(e["kind"] == "done" for evs in self.events.values() for e in evs):
                self.wait_for_witnesses(min(deadline, time.monotonic() + WITNESS_WAIT_S))
                refresh()
                return "done"
            if dead:
                refresh()
                return self.failed(dead[0])
            if time.monotonic() > deadline:
                refresh()
                self.say(f"timeout: {self.scenario.settings.timeout_s:.0f}s passed before the trainer's done")
                return "timeout"
            steps = self.steps_done()
            if self.quiet and (steps != last_steps or time.monotonic() - last_line > QUIET_EVERY_S):
                self.say(self.progress_line())
                last_line, last_steps = time.monotonic(), steps
            refresh()
            time.sleep(1.0)

    def poll(self) -> None:
        for name, tail in self.tails.items():
            self.events[name].extend(tail.poll())

    def failed(self, node: NodeProcess) -> str:
        code = node.proc.poll() if node.proc else None
        self.say(f"node {node.name} exited early with code {code}; end of {node.stderr_path}:", "bold red")
        self.say(node.log_tail(20) or "(empty log)")
        return "node_exited"

    def stop_all(self) -> dict[str, int | None]:
        """Stop every node by process group, in parallel, deaf to a second Ctrl-C until done."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if any(n.alive() for n in self.nodes):
                self.say(f"stopping {sum(n.alive() for n in self.nodes)} node(s)")
            with ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
                codes = list(pool.map(lambda n: n.stop(), self.nodes))
        finally:
            signal.signal(signal.SIGINT, previous)
        return {n.name: code for n, code in zip(self.nodes, codes)}

    def report(self, outcome: str, grpo: dict, codes: dict) -> int:
        self.poll()
        malformed = sum(t.malformed for t in self.tails.values())
        spooled = {n.name: len(list((self.out / "nodes" / n.name / "spool").glob("*.chunk"))) for n in self.scenario.nodes}
        summary = summarize(self.scenario, self.events, wall_s=self.wall_s, outcome=outcome,
                            grpo=grpo, exit_codes=codes, malformed=malformed,
                            started_at=getattr(self, "started_unix", None), network=getattr(self, "network_summary", None),
                            timeline=self.timeline, devices=getattr(self, "devices", {}), spooled=spooled)
        path = write_report(summary, self.out / "report")
        self.summary = summary
        rewards = summary["reward_per_step"]
        if rewards:
            self.say(f"reward {rewards[0]:.2f} {sparkline(rewards)} {rewards[-1]:.2f}  "
                     f"({summary['steps_done']} steps; last-10 mean {summary['reward_last10_mean']:.2f})")
        else:
            self.say("no trainer steps were logged")
        acc = summary["accounting"]
        if acc["reconciled"] is not None:
            self.say(f"chunks accepted {acc['accepted']} = consumed {acc['consumed']} + dropped "
                     f"{sum(acc['dropped'].values())} + buffered {acc['buffered']}: "
                     f"{'reconciled' if acc['reconciled'] else 'DOES NOT RECONCILE'}; rejected at intake: "
                     f"{', '.join(f'{k} {v}' for k, v in acc['rejected'].items()) or 'none'}")
        flow = summary["chunk_flow"]
        if flow["produced"] is not None:
            self.say(f"chunks produced {flow['produced']} = accepted {flow['accepted']} + refused "
                     f"{sum(flow['rejected'].values())} + still spooled {flow['spooled_at_end']} + pushed out of a full "
                     f"spool {flow['spool_dropped']} + unaccounted {flow['unaccounted']}: {flow['explanation']}")
        self.say(f"capacity: {summary['capacity']['verdict']}")
        self.say(self.provenance_line(summary))
        killed = [name for name, code in codes.items() if code == -9 and name not in self.killed]
        if killed:
            self.say(f"note: {', '.join(killed)} did not exit within 10s of SIGTERM and were killed")
        failed = [a for a in summary["assertions"] if not a["passed"]]
        for a in summary["assertions"]:
            self.say(f"assert {a['assertion']}: measured {a['measured']}: {'pass' if a['passed'] else 'FAIL'}",
                     None if a["passed"] else "bold red")
        self.say(f"{outcome} after {summary['wall_s']:.0f}s; report: {path.parent / 'index.html'}")
        return EXIT_CODES[outcome] or (1 if failed else 0)

    def wait_for_witnesses(self, until: float) -> None:
        """Give rollouts a moment to verify and countersign the final checkpoint, so the run's
        provenance ends witnessed (they do within a poll or two of the last publication)."""
        trainer = next((n for n, evs in self.events.items() if any(e["kind"] == "done" for e in evs)), None)
        note = self.out / "nodes" / str(trainer) / "provenance" / "checkpoint.note"
        while time.monotonic() < until and note.exists():  # no checkpoint at all: nothing to witness
            try:
                if WITNESS_LINE in note.read_bytes():
                    return
            except OSError:
                pass
            time.sleep(0.2)

    def provenance_line(self, summary: dict) -> str:
        from swarm.provenance.audit import audit

        try:
            report = audit(self.out)
        except FileNotFoundError:
            return "provenance: no log was written"
        if not report.ok:
            return f"provenance: FAILED ({report.failure.kind}): {report.failure.message}"
        shares = [n["witness_share"] for n in summary["nodes"].values() if n.get("witness_share") is not None]
        cost = f"; witnessing took {max(shares):.2%} of a rollout's work at most" if shares else ""
        return (f"provenance: {len(report.records)} versions verified, one chain, checkpoint cosigned by "
                f"{len(report.witnesses)} witness(es){cost}; see `swarm audit {self.out}`")

    # -- what the user sees -------------------------------------------------------------------
    def steps_done(self) -> int:
        return len({e["step"] for evs in self.events.values() for e in evs if e["kind"] == "step"})

    def node_row(self, spec, node: NodeProcess | None) -> list[str]:
        evs, now = self.events[spec.name], time.time()
        status = node.status() if node else None
        steps = [e for e in evs if e["kind"] == "step"]
        chunks = [e for e in evs if e["kind"] == "chunk"]
        logged = [e["role"] for e in evs if e["kind"] == "role"]
        role = (status or {}).get("role") or (logged[-1] if logged else spec.role)
        if node is None:
            state = "waiting"
        elif not node.alive():
            state = f"exited {node.proc.returncode}"
        elif status is None:
            state = "starting"
        elif now - status.get("updated_at", now) > 3 * self.scenario.settings.announce_period_s + 2:
            small = self.disks.get(spec.name)  # a node paused on a full disk cannot write its status
            state = "disk full (no status)" if small is not None and small.full else "stale"
        else:
            state = str(status.get("state", "?"))
        version = max([(status or {}).get("adapter_version", -1)] + [e["version"] for e in steps[-1:]])
        window = [e for e in chunks if e["t"] >= now - RATE_WINDOW_S]
        span = min(RATE_WINDOW_S, now - evs[0]["t"]) if evs and "t" in evs[0] else 0
        gen_s = sum(e["gen_s"] for e in chunks)
        return [spec.name, role, spec.engine, state, "-" if version < 0 else str(version),
                f"{steps[-1]['reward_mean']:.2f}" if steps else "", str(len(chunks)) if chunks else "",
                f"{sum(e['tokens'] for e in chunks) / gen_s:.0f}" if gen_s > 0 else "",
                f"{len(window) / span:.2f}" if chunks and span > 0 else ""]

    def render(self) -> Group:
        table = Table(title=f"swarm simulate: {self.scenario.settings.name}", title_justify="left")
        for column in ("node", "role", "engine", "state", "version", "reward", "chunks", "tok/s", "chunks/s"):
            table.add_column(column, justify="right" if column in ("version", "reward", "chunks", "tok/s",
                                                                   "chunks/s") else "left")
        procs = {n.name: n for n in self.nodes}
        for spec in self.scenario.nodes:
            table.add_row(*self.node_row(spec, procs.get(spec.name)))
        total, done = self.scenario.settings.steps, self.steps_done()
        bar = Table.grid(padding=(0, 1))
        bar.add_row(Text(f"steps {done}/{total}"), ProgressBar(total=total, completed=done, width=40),
                    Text(f"{time.monotonic() - self.started:.0f}s / {self.scenario.settings.timeout_s:.0f}s"))
        return Group(table, bar)

    def progress_line(self) -> str:
        procs = {n.name: n for n in self.nodes}
        parts = []
        for spec in self.scenario.nodes:
            row = self.node_row(spec, procs.get(spec.name))
            parts.append(f"{row[0]} {row[1]} {row[3]}" + (f" v{row[4]}" if row[4] != "-" else "")
                         + (f" r={row[5]}" if row[5] else "") + (f" {row[8]} ch/s" if row[8] else ""))
        elapsed, total = time.monotonic() - self.started, self.scenario.settings.steps
        return f"[{elapsed:5.0f}s] steps {self.steps_done()}/{total} | " + " | ".join(parts)

    def say(self, message: str, style: str | None = None) -> None:
        self.console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def _raise_interrupt(*_):
    raise KeyboardInterrupt
