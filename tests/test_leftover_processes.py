"""The conftest's leftover-process check sees what a test leaves running: a child, and an orphan
whose parent already exited (found by the session mark in its environment); and it stops both."""
from __future__ import annotations

import os
import signal
import subprocess

from conftest import leftover_processes, stop_processes


def test_leftover_check_sees_a_leaked_child_and_an_orphan():
    child = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    # sh starts sleep in the background and exits: the sleep is re-parented away from us.
    orphan = int(subprocess.run(["sh", "-c", "sleep 61 >/dev/null 2>&1 & echo $!"], capture_output=True,
                                text=True, check=True, stdin=subprocess.DEVNULL).stdout)
    try:
        found = {p.pid: p for p in leftover_processes()}
        assert child.pid in found and found[child.pid].cmdline == "sleep 60"
        assert orphan in found and found[orphan].cmdline == "sleep 61"
        assert found[child.pid].ppid == os.getpid()
        assert stop_processes([found[child.pid], found[orphan]], grace=5) == []
        child.wait(timeout=5)
        assert {child.pid, orphan}.isdisjoint(p.pid for p in leftover_processes())
    finally:  # whatever failed above, leave nothing behind (or the session check fails the run)
        stop_processes([p for p in leftover_processes() if p.pid in (child.pid, orphan)], grace=1)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=5)
