"""Slower hardware on one machine: a CPU quota through cgroups holds a busy process back, is
removed at the end, and a later run removes the groups a dead runner left. Needs root and a
cgroup cpu controller (CI has both); elsewhere skipped with the reason."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from scenarios import cpu_quota
from scenarios.cpu_quota import CpuQuota

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(cpu_quota.unavailable() is not None, reason=str(cpu_quota.unavailable()))]


def test_a_quota_holds_a_busy_process_back_and_is_removed():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    quota = CpuQuota("t", "busy", 0.2)
    try:
        quota.apply(busy.pid)
        assert str(busy.pid) in (quota.path / "cgroup.procs").read_text().split()
        before = psutil.Process(busy.pid).cpu_times()
        time.sleep(1.5)
        after = psutil.Process(busy.pid).cpu_times()
        used = after.user + after.system - before.user - before.system
        assert quota.throttled_periods() > 0
        assert used < 0.75  # at most 0.2 s of CPU per wall second (0.3 at full speed + slack)
        assert "0.2 core(s)" in quota.description
    finally:
        busy.kill()
        busy.wait()
        quota.remove()
    assert not quota.path.exists()


def test_a_later_run_removes_the_groups_of_a_dead_runner():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(dead.stdout)  # a runner that has exited
    base = CpuQuota("x", "y", 1.0).path.parent
    left = base / f"{cpu_quota.PREFIX}{pid}-sim-slow"
    left.mkdir()
    mine = CpuQuota("live", "n", 0.5)
    mine.path.mkdir()
    try:
        assert left.name in cpu_quota.remove_leftovers()
        assert not left.exists() and mine.path.exists()  # our own (live runner) group stays
    finally:
        mine.remove()
        if left.exists():
            left.rmdir()
