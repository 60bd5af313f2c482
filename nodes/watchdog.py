"""Orphan watchdog: when a node dies (even by SIGKILL) its DHT child and p2pd die too.

hivemind's DHT process and the p2pd daemon do not notice their parent's death. This tiny
process (no heavy imports) snapshots the node's descendants twice a second; once the node is
gone it terminates exactly those processes (matched by pid *and* start time, so a recycled pid
is never hit), then exits. Run as `python -m nodes.watchdog PARENT_PID`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
GRACE_S = 3.0


def start_orphan_watchdog() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nodes.watchdog", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )


def _descendants(parent_pid: int, me: int) -> dict[int, float]:
    import psutil

    try:
        children = psutil.Process(parent_pid).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for child in children:
        if child.pid == me:
            continue
        try:
            found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def _terminate(known: dict[int, float]) -> None:
    import psutil

    procs = []
    for pid, created in known.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.terminate()
                procs.append(proc)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


def main(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the node; we clean up after it
    me = os.getpid()
    known: dict[int, float] = {}
    while os.getppid() == parent_pid:
        known = _descendants(parent_pid, me) or known
        time.sleep(POLL_S)
    _terminate(known)


if __name__ == "__main__":
    main(int(sys.argv[1]))
