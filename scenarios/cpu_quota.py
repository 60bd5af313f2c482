"""Slower hardware on one machine: a node's processes under a CPU quota (cgroups).

A scenario node with `cpu_cores = 0.25` runs as if it had a quarter of one core: its process joins
a cgroup whose CFS quota is 25 ms per 100 ms period (cgroup v2 `cpu.max`, or v1's cpu controller
`cpu.cfs_quota_us`), and the processes it starts later (its DHT child, p2pd) inherit it. Needs
root; each group is named `es<runner pid>-<tag>-<node>` and removed when the run ends, and a
later run removes those of runners that died.
"""
from __future__ import annotations

import os
from pathlib import Path

from scenarios.netem.topology import PREFIX, process_alive

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _base() -> tuple[Path, str] | None:
    """(directory groups are made in, 'v2' or 'v1'), or None without a usable cpu controller."""
    if (ROOT / "cgroup.controllers").is_file():
        return (ROOT, "v2") if "cpu" in (ROOT / "cgroup.controllers").read_text().split() else None
    if (ROOT / "cpu" / "cpu.cfs_quota_us").is_file():
        return ROOT / "cpu", "v1"
    return None


def unavailable() -> str | None:
    """Why CPU quotas cannot be applied here, or None when they can."""
    if os.geteuid() != 0:
        return "CPU quotas need root (cgroups)"
    if _base() is None:
        return "no cgroup cpu controller is mounted at /sys/fs/cgroup"
    return None


class CpuQuota:
    def __init__(self, tag: str, node: str, cores: float):
        self.cores = cores
        base, self.version = _base() or (ROOT, "none")
        self.path = base / f"{PREFIX}{os.getpid()}-{tag}-{node}"

    @property
    def description(self) -> str:
        return f"CPU quota {self.cores:g} core(s) (cgroup {self.version} CFS)"

    def apply(self, pid: int) -> None:
        """Put process `pid` (and what it starts from now on) under the quota."""
        self.path.mkdir(exist_ok=True)
        quota = max(1000, int(self.cores * PERIOD_US))
        if self.version == "v2":
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_periods(self) -> int:
        """Periods in which the quota held the group back (cpu.stat), 0 if unknown."""
        try:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        except OSError:
            return 0
        return int(stat.get("nr_throttled", 0))

    def remove(self) -> None:
        _remove_group(self.path)


def _remove_group(path: Path) -> None:
    """Move what is left in the group to the parent (an empty group is the only removable one), then remove it."""
    try:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (path.parent / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # it exited meanwhile
        path.rmdir()
    except OSError:
        pass


def remove_leftovers() -> list[str]:
    """Remove the groups of runners that are gone; returns their names."""
    base = _base()
    removed = []
    for path in sorted(base[0].glob(f"{PREFIX}*")) if base else []:
        owner = path.name[len(PREFIX):].split("-", 1)[0]
        if path.is_dir() and owner.isdigit() and not process_alive(int(owner)):
            _remove_group(path)
            removed.append(path.name)
    return removed
