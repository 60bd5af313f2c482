"""Launching and stopping real `swarm node` processes (used by the simulator and the tests).

Each node runs in its own process group, so stopping it reaches its DHT child, p2pd and
watchdog too: SIGTERM to the node, then to the group, then SIGKILL after a grace period. Nothing is ever killed
by name.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def swarm_command(*args: str) -> list[str]:
    """Run the CLI with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "nodes", *args]


@dataclass
class NodeProcess:
    name: str
    workdir: Path
    args: list[str]
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    maddr: str | None = None
    wrap: list = field(default_factory=list)
    """A command prefix the node runs under, e.g. `ip netns exec NS` (an emulated host)."""
    console: Path | None = None
    """Where the node's stdout and stderr are captured (node.out, stderr.log): its workdir unless
    set; a node whose workdir can fill up keeps its terminal elsewhere, as on a real machine."""

    def start(self) -> NodeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        console = self.console or self.workdir
        console.mkdir(parents=True, exist_ok=True)
        self.stdout_path = console / "node.out"
        self.stderr_path = console / "stderr.log"  # the node writes node.log itself
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ECHO_SWARM_EXIT_WITH_LAUNCHER": "1", **self.env}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*self.wrap, *swarm_command("node", "--workdir", str(self.workdir), *self.args)],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_joined(self, timeout: float = 90.0) -> str:
        """Block until the node prints the multiaddr others can join with; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stdout_path.read_text().splitlines():
                if line.startswith("join with: --initial-peers "):
                    self.maddr = line.split()[-1]
                    return self.maddr
            if not self.alive():
                raise RuntimeError(f"node {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"node {self.name} did not join within {timeout:.0f}s:\n{self.log_tail()}")

    def status(self) -> dict | None:
        try:
            return json.loads((self.workdir / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill_hard(self) -> None:
        """SIGKILL the node process alone (not its group): what a crash looks like."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP (or SIGCONT) the node's whole process group: its DHT child and p2pd stop too."""
        if self.alive():
            _signal_group(self.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the node alone, so it shuts its DHT child and p2pd down in order; then SIGTERM
        its process group and finally SIGKILL whatever is left of it."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session: the group id is the node's pid
        _signal_group(pgid, signal.SIGCONT)  # a frozen node cannot act on SIGTERM
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait()
        return self.proc.returncode


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
