"""A node whose workdir fills up pauses, loses nothing, and resumes by itself once space is freed.

Live: a trainer and a rollout node, each with its workdir on a small filesystem of its own
(`scenarios.disk.SmallDisk`, a tmpfs), and an observer that joins the swarm and reads their
records. Filled, a node stays up and its record says `paused: disk full (...)`; freed, the run
goes on. Both used to exit with a traceback (status.json) or lose their worker thread (the trainer's
checkpoint) and stay down.
"""
from __future__ import annotations

import shutil
import time

import pytest
from conftest import node_events, start_node, wait_for
from swarm_client import SwarmClient

from crypto.identity import Identity
from scenarios import disk as small_disks
from scenarios.disk import SmallDisk
from scenarios.scenario import NodeSpec, Scenario, Settings
from scenarios.simulate import prepare

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(small_disks.unavailable() is not None, reason=str(small_disks.unavailable()))]

DISK_MB = 64
TIMEOUT_S = 120  # generous: the conditions below come true within seconds on an idle machine


def test_a_full_workdir_pauses_a_node_which_resumes_when_space_is_freed(tmp_path, launched):
    out = tmp_path / "run"
    scenario = Scenario(Settings(name="disk-full", steps=500, announce_period_s=1.0),
                        (NodeSpec("trainer", role="trainer", engine="transformers"),
                         NodeSpec("a", role="rollout", engine="transformers")))
    run, _ = prepare(scenario, out)
    disks = {name: SmallDisk(name, out / "nodes" / name, DISK_MB) for name in ("trainer", "a")}
    observer = None
    try:
        trainer = start_node(launched, out, run, "trainer", "trainer", "transformers")
        a = start_node(launched, out, run, "a", "rollout", "transformers", [trainer.wait_joined()])
        a_maddr = a.wait_joined()
        observer = SwarmClient(run, tmp_path / "observer", [trainer.maddr, a_maddr], engine=False).start()
        peer = {"trainer": wait_for(lambda: (trainer.status() or {}).get("peer_id"), 60, "trainer status"),
                "a": wait_for(lambda: (a.status() or {}).get("peer_id"), 60, "rollout status")}

        def state(name: str) -> str:
            return next((r.state for r in observer.node.view.records if r.peer_id == peer[name]), "")

        def steps() -> int:
            return max((e["step"] for e in node_events(trainer, "step")), default=0)

        wait_for(lambda: steps() >= 2, 300, "the trainer's step 2", [trainer, a])

        # -- the trainer's disk fills: it trains the step, cannot publish it, waits ------------------
        disks["trainer"].fill()
        wait_for(lambda: state("trainer").startswith("paused: disk full"), TIMEOUT_S,
                 "the trainer's record to say it paused", [trainer, a])
        assert state("trainer") == "paused: disk full (publish)"
        disks["trainer"].free()
        resumed_at = steps()
        wait_for(lambda: steps() >= resumed_at + 2 and state("trainer") == "ready", TIMEOUT_S,
                 "the trainer to publish and train on", [trainer, a])

        # -- the rollout's disk fills: it cannot keep the next version, waits -----------------------
        disks["a"].fill()
        wait_for(lambda: state("a").startswith("paused: disk full"), TIMEOUT_S, "the rollout's record to say it paused",
                 [trainer, a])
        disks["a"].free()
        freed_at, before = time.time(), steps()
        wait_for(lambda: state("a") == "ready" and steps() >= before + 2
                 and any(e["sent"] and e["t"] > freed_at for e in node_events(a, "chunk")), TIMEOUT_S,
                 "the rollout's chunks to flow again", [trainer, a])

        # -- no trainer, a full disk: the chunk it cannot spool waits in memory ----------------------
        trainer.stop(grace=5)
        spool = a.workdir / "spool"
        wait_for(lambda: any(spool.glob("*.chunk")), TIMEOUT_S, "the rollout to spool a chunk", [a])
        disks["a"].fill()
        wait_for(lambda: state("a") == "paused: disk full (spool)", TIMEOUT_S, "the rollout to pause its spool", [a])
        disks["a"].free()
        freed_ns = time.time_ns()
        wait_for(lambda: state("a") == "ready" and max(int(c.stem) for c in spool.glob("*.chunk")) > freed_ns,
                 TIMEOUT_S, "the held chunk (and newer ones) to be spooled", [a])

        # -- the trainer is back: every spooled chunk is delivered, training goes on -----------------
        before = steps()
        restarted = start_node(launched, out, run, "trainer", "trainer", "transformers", [a_maddr])
        wait_for(lambda: not any(spool.glob("*.chunk")) and steps() > before, 300,
                 "the spooled chunks to be delivered and training to go on", [restarted, a])

        for node in (restarted, a):  # no write error escaped (a traceback, a logging error)
            log = (node.workdir / "node.log").read_text() + node.stderr_path.read_text()
            assert "Errno 28" not in log and "os error 28" not in log and "Logging error" not in log, log[-3000:]
        a_log = (a.workdir / "node.log").read_text()
        assert a_log.count("disk space is back") == 2  # once per pause, never per retry
        assert a_log.count("disk full: paused") <= 2  # written only when the disk had room for it
    finally:
        tear_down(observer, launched, out, disks, tmp_path)


def test_a_standby_taking_over_training_with_a_full_disk_pauses_and_trains_once_space_returns(tmp_path, launched):
    """The trainer dies while the standby's disk is full: the standby takes the slot, cannot write
    what a trainer starts with, and waits (its record says so) instead of giving the role up for
    good; once space returns it trains on from the newest published version."""
    out = tmp_path / "run"
    scenario = Scenario(Settings(name="disk-takeover", steps=500, announce_period_s=1.0),
                        (NodeSpec("trainer", role="trainer", engine="transformers"),
                         NodeSpec("standby", role="auto", engine="transformers"),
                         NodeSpec("a", role="rollout", engine="transformers")))
    run, _ = prepare(scenario, out)
    disk = SmallDisk("standby", out / "nodes" / "standby", DISK_MB)
    observer = None
    try:
        trainer = start_node(launched, out, run, "trainer", "trainer", "transformers")
        first = trainer.wait_joined()
        disk.fill()
        standby = start_node(launched, out, run, "standby", "auto", "transformers", [first], console=disk.console)
        a = start_node(launched, out, run, "a", "rollout", "transformers", [first])
        observer = SwarmClient(run, tmp_path / "observer", [first, standby.wait_joined(), a.wait_joined()],
                               engine=False).start()
        standby_peer = Identity.load(out / "keys" / "standby.key").peer_id  # its status.json is not written

        def record():
            return next((r for r in observer.node.view.records if r.peer_id == standby_peer), None)

        wait_for(lambda: len(node_events(trainer, "step")) >= 3 and record() is not None, 300,
                 "the trainer's step 3 and the standby's record", [trainer, standby, a])
        trainer.kill_hard()

        wait_for(lambda: (r := record()) is not None and r.role == "trainer" and r.state.startswith("paused: disk full"),
                 TIMEOUT_S, "the standby to hold the trainer slot, paused on its full disk", [standby, a])
        time.sleep(3)  # still waiting, not failed
        assert record().state.startswith("paused: disk full") and not record().failed, standby.log_tail()

        disk.free()
        wait_for(lambda: len(node_events(standby, "step")) >= 2 and record().state == "ready", TIMEOUT_S,
                 "the standby to train once space returns", [standby, a])
        log = (standby.workdir / "node.log").read_text()
        assert "disk space is back" in log and "cannot serve as trainer" not in log, log[-3000:]
    finally:
        tear_down(observer, launched, out, {"standby": disk}, tmp_path)


def tear_down(observer, launched: list, out, disks: dict, tmp_path) -> None:
    """Stop the run's nodes, unmount their small disks; the logs outlive the disks, for a look
    after a failure."""
    if observer is not None:
        observer.close()
    for node in list(launched):
        if node.workdir.parent == out / "nodes":
            node.stop(grace=5)
    for name, d in disks.items():
        for log in ("node.log", "stderr.log"):
            if (d.path / log).exists():
                shutil.copyfile(d.path / log, tmp_path / f"{name}.{log}")
        d.remove()
