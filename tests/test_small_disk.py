"""A node's disk that fills up, on a real small filesystem (tmpfs; root only, skipped elsewhere).

`scenarios.disk.SmallDisk` fills and frees a node's workdir and is unmounted on every path (also
a dead runner's, by a later run); the writes a node makes there fail whole on a full disk and
work again once it is freed: the spool drops nothing, metrics.jsonl gets no torn line (the lost
line is counted), and the pause says which work waits until that work writes again.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading

import pytest

from nodes.disk import Disk, append_whole, is_full
from nodes.metrics import MetricsLog, RoleEvent
from nodes.spool import ChunkSpool
from scenarios import disk as small_disks
from scenarios.disk import SmallDisk

pytestmark = pytest.mark.skipif(small_disks.unavailable() is not None, reason=str(small_disks.unavailable()))


@pytest.fixture
def small(tmp_path):
    d = SmallDisk("unit", tmp_path / "w", 2)
    yield d
    d.remove()


def enospc(write) -> OSError:
    with pytest.raises(OSError) as info:
        write()
    assert info.value.errno == errno.ENOSPC and is_full(info.value)
    return info.value


def test_fill_makes_writes_fail_free_makes_them_work_remove_unmounts(small):
    assert small.mounted and "2 MB" in small.description and not small.full
    (small.path / "before").write_bytes(b"x" * 64 * 1024)
    small.fill()
    assert small.free_bytes() <= small_disks.LEAVE_BYTES and small.full
    enospc(lambda: (small.path / "chunk").write_bytes(b"x" * 64 * 1024))
    small.free()
    assert not small.full
    (small.path / "chunk").write_bytes(b"x" * 64 * 1024)
    small.remove()
    assert not small.mounted and not (small.path / "chunk").exists()
    small.remove()  # idempotent


def test_a_non_empty_workdir_is_refused(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "node.log").write_text("kept")
    with pytest.raises(small_disks.DiskError, match="not empty"):
        SmallDisk("busy", tmp_path / "w", 2)
    assert (tmp_path / "w" / "node.log").read_text() == "kept"


def test_a_later_run_unmounts_the_disks_of_a_dead_runner(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    left = tmp_path / "left"
    left.mkdir()
    source = f"{small_disks.PREFIX}{int(dead.stdout)}-disk-gone"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", source, str(left)], check=True)
    mine = SmallDisk("live", tmp_path / "mine", 1)
    try:
        assert source in small_disks.remove_leftovers()
        assert source not in [s for s, _ in small_disks._our_mounts()]
        assert mine.mounted  # our own (live runner) disk stays
    finally:
        mine.remove()
        if source in [s for s, _ in small_disks._our_mounts()]:
            subprocess.run(["umount", "-l", str(left)], check=False)


def test_the_spool_drops_nothing_and_leaves_no_half_chunk_on_a_full_disk(small):
    spool = ChunkSpool(small.path / "spool", limit=2)
    spool.put(b"a" * 1000)
    spool.put(b"b" * 1000)  # the spool is at its limit: the next put pushes "a" out, once written
    small.fill()
    enospc(lambda: spool.put(b"c" * 64 * 1024))
    assert sorted(p.read_bytes()[:1] for p in spool.dir.iterdir()) == [b"a", b"b"]  # nothing dropped, no .tmp
    small.free()
    assert spool.put(b"c" * 64 * 1024)  # written, then the oldest dropped
    sent = []
    assert spool.flush(lambda envelope: sent.append(envelope[:1]) or True)
    assert sent == [b"b", b"c"]


def test_metrics_lines_lost_to_a_full_disk_are_counted_and_never_torn(small):
    disk = Disk(small.path)
    metrics = MetricsLog(small.path / "metrics.jsonl", disk=disk)
    metrics.write(RoleEvent(role="rollout"))
    small.fill()
    big = RoleEvent(role="r" * 64 * 1024)  # larger than what is left: it would be torn
    metrics.write(big)
    metrics.write(big)
    assert disk.skipped["metrics.jsonl"] == 2
    small.free()
    metrics.write(RoleEvent(role="trainer"))
    lines = (small.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["role"] for line in lines] == ["rollout", "trainer"]
    enospc_free = small.path / "x"
    append_whole(enospc_free, b"ok\n")
    small.fill()
    enospc(lambda: append_whole(enospc_free, b"y" * 64 * 1024))
    assert enospc_free.read_bytes() == b"ok\n"  # the torn tail was cut off


def test_the_pause_names_the_waiting_work_until_it_writes_again(small, caplog):
    disk = Disk(small.path)
    small.fill()
    error = enospc(lambda: (small.path / "v1").write_bytes(b"x" * 64 * 1024))
    with caplog.at_level("INFO", logger="echo_swarm.node"):
        for _ in range(3):  # retries: one log line, not one each
            disk.full("publish", small.path / "v1", error)
        disk.full("spool", small.path / "spool", error)
        assert disk.paused == "disk full (publish)"
        disk.ok("publish")
        assert disk.paused == "disk full (spool)"
        disk.ok("spool")
        assert disk.paused is None
    pauses = [r for r in caplog.records if "disk full: paused" in r.getMessage()]
    resumes = [r for r in caplog.records if "disk space is back" in r.getMessage()]
    assert len(pauses) == 1 and len(resumes) == 1 and "spool" in resumes[0].getMessage()
    with pytest.raises(PermissionError):  # anything but a full disk is not a pause
        disk.full("spool", small.path, PermissionError(errno.EACCES, "denied"))
    stop = threading.Event()
    stop.set()
    disk.wait(stop)  # returns at once when stopping


def test_a_log_append_the_full_disk_refuses_leaves_no_torn_frame(small):
    from test_provenance import H, Run, sha

    from swarm.versions import ChunkAttestation, sign_version

    run = Run(small.path / "run", versions=2)
    entries = run.dir("trainer") / "entries.log"
    size = entries.stat().st_size
    big = run.entry(2, chunks=tuple(ChunkAttestation(sha(str(i).encode()), H, H) for i in range(100)))
    small.fill()
    with open(small.path / "pad", "wb") as f:  # the last pages too: only the slack of the log's own last page is left
        os.posix_fallocate(f.fileno(), 0, small.free_bytes())
    enospc(lambda: run.log.append(sign_version(big, run.trainer)))
    assert entries.stat().st_size == size and run.log.size == 2
    small.free()
    (small.path / "pad").unlink()
    run.log.append(sign_version(big, run.trainer))
    assert run.new_log(run.dir("trainer")).size == 3  # read back whole: the next entry did not follow a torn one


def test_node_log_lines_lost_to_a_full_disk_are_counted_in_the_status(small):
    """node.log on a full disk: the line is lost and counted (status.json's disk.skipped), no
    traceback; lines reach the file again once there is space."""
    import logging

    from nodes.logs import LOG_BACKUPS, LOG_BYTES, WorkdirLog, lines_lost

    handler = WorkdirLog(small.path / "node.log", maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    root = logging.getLogger()
    root.addHandler(handler)
    log = logging.getLogger("echo_swarm.test")
    try:
        log.warning("before")
        small.fill()
        log.warning("x" * 64 * 1024)  # more than is left
        assert lines_lost() == handler.lost == 1
        assert Disk(small.path).summary(log_lines_lost=lines_lost())["skipped"] == {"node.log": 1}
        small.free()
        log.warning("after")
        handler.flush()
        text = (small.path / "node.log").read_text()
        assert "before" in text and "after" in text
    finally:
        root.removeHandler(handler)
        handler.close()
