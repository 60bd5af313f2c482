"""A trainer key rotation in a live swarm, by the owner's signed manifest update (swarm.trust).

Real `swarm node` processes, each with its own copy of the manifest: A trains with the owner's
key, B and R roll out. The owner runs `swarm trust` to hand training from A to B and gives the
update to A and B only. A steps down, B takes over from the head of the log and trains on; R,
which was never given the update, learns it from its peers' `log` replies and follows B's
versions. The audit of R's copy verifies one chain across the rotation.
"""
from __future__ import annotations

import shutil

import pytest
from conftest import make_manifest, node_events, run_cli, wait_for

from crypto.identity import Identity
from scenarios.processes import NodeProcess
from swarm.provenance.audit import audit
from swarm.trust import updates_path

pytestmark = pytest.mark.slow
PERIOD = 1.0


def own_copy(run, d):
    d.mkdir(parents=True, exist_ok=True)
    return shutil.copy(run, d / "run.toml")


def test_the_owner_rotates_the_trainer_key_and_the_swarm_follows(tmp_path, launched):
    owner = Identity.generate()
    owner.save(tmp_path / "owner.key")
    b = Identity.generate()
    b.save(tmp_path / "b.key")
    run = make_manifest(tmp_path, tmp_path / "owner.key", "--announce-period", str(PERIOD), "--steps", "100000")

    def node(name, key, role, *peers):
        args = ["--run", str(own_copy(run, tmp_path / f"m-{name}")), "--key", str(key), "--role", role,
                "--threads", "1", "--engine", "transformers", *(["--initial-peers", *peers] if peers else [])]
        launched.append(proc := NodeProcess(name, tmp_path / name, args).start())
        return proc

    a = node("a", tmp_path / "owner.key", "trainer")
    maddr = a.wait_joined()
    r = node("r", tmp_path / "r.key", "rollout", maddr)
    bn = node("b", tmp_path / "b.key", "auto", maddr)
    nodes = [a, r, bn]
    wait_for(lambda: len(node_events(a, "step")) >= 2 and (bn.status() or {}).get("adapter_version", -1) >= 1,
             180, "A's first steps, followed by B", nodes)
    before = a.status()["adapter_version"]

    result = run_cli("trust", "--run", str(tmp_path / "m-a" / "run.toml"), "--owner-key", str(tmp_path / "owner.key"),
                     "--add-trainer-key", b.key_id, "--remove-trainer-key", owner.key_id,
                     "--from-version", str(before + 1))  # a handover: A's versions after `before` are void
    assert result.returncode == 0, result.stderr
    shutil.copy(updates_path(tmp_path / "m-a" / "run.toml"), updates_path(tmp_path / "m-b" / "run.toml"))

    wait_for(lambda: (bn.status() or {}).get("role") == "trainer" and a.status()["role"] == "rollout", 60,
             "B to take the slot and A to step down", nodes)
    wait_for(lambda: len(node_events(bn, "step")) >= 2, 120, "B's own training steps", nodes)
    wait_for(lambda: (r.workdir / "provenance" / "updates.jsonl").exists() and audit(r.workdir).ok
             and audit(r.workdir).records[-1].trainer_key_id == b.key_id, 120, "R to follow B's versions", nodes)

    # R was never given the update: it came in a peer's `log` reply, and R kept it.
    assert not updates_path(tmp_path / "m-r" / "run.toml").exists()
    assert (r.workdir / "provenance" / "updates.jsonl").read_bytes() == \
        updates_path(tmp_path / "m-a" / "run.toml").read_bytes()
    assert [e["role"] for e in node_events(a, "role")] == ["trainer", "rollout"]
    own_log = (bn.workdir / "node.log").read_text()  # the node's own log, in its workdir
    assert "role rollout -> trainer" in own_log
    # B learns the update from its own MANIFEST.updates or, first, from a peer's log reply (a race:
    # a clean-clone CI run saw the second); either way it holds exactly the owner's update.
    assert (bn.workdir / "provenance" / "updates.jsonl").read_bytes() == \
        updates_path(tmp_path / "m-a" / "run.toml").read_bytes()
    assert "gguf_writer" not in own_log  # third-party INFO noise stays out

    for proc in nodes:
        proc.stop()
    report = audit(r.workdir)
    assert report.ok, report.failure
    signers = [rec.trainer_key_id for rec in report.records]
    serials = [rec.manifest_serial for rec in report.records]
    assert signers[0] == owner.key_id and signers[-1] == b.key_id  # one chain across the rotation
    assert serials == sorted(serials) and serials[-1] == 1
    assert all(s == b.key_id for s, n in zip(signers, serials) if n == 1)
    versions = [rec.version for rec in report.records]
    assert versions == list(range(versions[0], versions[-1] + 1))  # no gap, no second history
