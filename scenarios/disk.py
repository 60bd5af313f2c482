"""A node whose disk fills up: its workdir on a small filesystem of its own (a tmpfs of a given size).

`SmallDisk(name, workdir, size_mb)` mounts the tmpfs at the workdir (before the node starts);
`fill()` takes all but the last few KiB with a ballast file, so the node's next real write fails
with ENOSPC, and `free()` removes the ballast. Needs root and Linux. Each filesystem's source
name (the device column of /proc/mounts) is `es<runner pid>-disk-<name>`: `remove()` unmounts a
run's on every exit path, and `remove_leftovers()` unmounts those of runners that died.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scenarios.netem.topology import PREFIX, process_alive

BALLAST = ".ballast"
LEAVE_BYTES = 8 * 1024
"""What `fill()` leaves free: a few small writes may still fit, nothing the size of a chunk."""


class DiskError(RuntimeError):
    """A small disk could not be made or changed (the message says why)."""


def unavailable() -> str | None:
    """Why small per-node disks cannot be made here, or None when they can."""
    if sys.platform != "linux":
        return "small disks need Linux (tmpfs)"
    if os.geteuid() != 0:
        return "small disks need root (mount -t tmpfs)"
    for tool in ("mount", "umount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


class SmallDisk:
    def __init__(self, name: str, path: Path, size_mb: float):
        """Mount a `size_mb` tmpfs at `path` (made if missing; an existing one must be empty,
        or the files there would be hidden)."""
        self.name, self.path, self.size_mb = name, Path(path), size_mb
        self.source = f"{PREFIX}{os.getpid()}-disk-{name}"
        self.path.mkdir(parents=True, exist_ok=True)
        if any(self.path.iterdir()):
            raise DiskError(f"{self.path} is not empty: a small disk mounted there would hide its files")
        _run("mount", "-t", "tmpfs", "-o", f"size={max(1, int(size_mb * 1024))}k,mode=0755", self.source,
             str(self.path))

    @property
    def description(self) -> str:
        return f"disk {self.size_mb:g} MB (tmpfs)"

    @property
    def console(self) -> Path:
        """Beside the disk, for the node's stdout and stderr: a full disk must not silence the
        terminal the launcher reads (the join line, a fatal error)."""
        return self.path.with_name(f".{self.path.name}.console")

    @property
    def mounted(self) -> bool:
        return any(source == self.source and point == self.path.resolve() for source, point in _our_mounts())

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    @property
    def full(self) -> bool:
        """Too full for the node to write its status (what `fill` leaves, or less)."""
        return self.free_bytes() <= 4 * LEAVE_BYTES

    def fill(self) -> None:
        """Take all but the last few KiB (the ballast grows if the node freed some meanwhile)."""
        with open(self.path / BALLAST, "ab") as f:
            for _ in range(5):  # the node writes meanwhile: what was free a moment ago may not be now
                more = self.free_bytes() - LEAVE_BYTES
                if more <= 0:
                    return
                try:
                    os.posix_fallocate(f.fileno(), os.fstat(f.fileno()).st_size, more)
                    return
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise

    def free(self) -> None:
        """Give the space back (remove the ballast)."""
        (self.path / BALLAST).unlink(missing_ok=True)

    def remove(self) -> None:
        """Unmount (lazily when a process still has files open there: the node may still run).
        What the node wrote there goes with it. Idempotent."""
        if self.mounted:
            _unmount(self.path)


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DiskError(f"{' '.join(args)}: {result.stderr.strip() or f'exit {result.returncode}'}")


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
        _run("umount", "-l", str(path))


def _our_mounts() -> list[tuple[str, Path]]:
    """(source, mount point) of the tmpfs mounts named by this module (any runner's)."""
    found = []
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "tmpfs" and fields[0].startswith(PREFIX) and "-disk-" in fields[0]:
            # /proc/mounts writes a space in a path as \040 (octal escapes)
            point = fields[1].encode().decode("unicode_escape").encode("latin-1").decode()
            found.append((fields[0], Path(point)))
    return found


def remove_leftovers() -> list[str]:
    """Unmount the small disks of runners that are gone; returns their source names."""
    removed = []
    for source, point in _our_mounts():
        owner = source[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not process_alive(int(owner)):
            try:
                _unmount(point)
            except DiskError:
                continue
            removed.append(source)
    return removed
