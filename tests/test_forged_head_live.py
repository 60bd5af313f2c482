"""A self-signed version far ahead, with a gap, and the trainer that would continue from it (live).

Found by an attacker: a peer served a version it signed itself, numbered 1,000 ahead of the run,
whose parent nobody held; rollouts and the demoted trainer accepted it, and when the attacker
left, the real trainer "took over training from adapter v1117" (reward 0.22 -> 0.0).

Here the attacker is a member holding the genuine log, whose record claims it holds every
version and which serves, on the real `log` and `adapter` protocols, the genuine entries followed
by its own entry (a gap of 1,000 versions) under its own checkpoint. The authorised trainer is
killed; the second authorised key takes over. It asks the attacker first (the best claimed
holder), refuses its history, and continues the run from the genuine head; the rollout follows.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import node_events, wait_for, write_signed_run
from swarm_client import SwarmClient

from crypto.identity import Identity
from scenarios.processes import NodeProcess
from swarm.provenance.audit import audit

pytestmark = pytest.mark.slow
PERIOD = 1.0
AHEAD = 1000


def forged_log_reply(attacker: SwarmClient, calls: Counter):
    """Whatever the asker holds, one more entry: the attacker's own v(head + AHEAD), parent unknown,
    under a checkpoint the attacker signed."""
    import dataclasses
    import time

    from swarm.adapters.bundle import pack_parts
    from swarm.messages import decode
    from swarm.provenance import checkpoints
    from swarm.provenance.sync import LogHeader, LogRequest
    from swarm.versions import sign_version

    me = attacker.identity
    attacker.log.learn_keys({me.key_id: me.public_key})

    def handler(remote: str, data: bytes) -> bytes:
        calls["log"] += 1
        have, head = decode(LogRequest, data).have, attacker.log.head()
        forged = sign_version(dataclasses.replace(
            head, version=head.version + AHEAD, step=head.version + AHEAD, parent_version=head.version + AHEAD - 1,
            parent_entry="ab" * 32, trainer_key_id=me.key_id, created_at=time.time()), me)
        keys = json.dumps({k: v.hex() for k, v in attacker.log.keys.items()}).encode()
        return pack_parts(LogHeader(size=have + 1, count=1).encode(), checkpoints.sign(attacker.log, me), keys,
                          b"", b"", forged)

    return handler


def test_a_successor_refuses_a_forged_head_and_continues_the_genuine_chain(tmp_path, launched):
    first, second = Identity.generate(), Identity.generate()
    first.save(tmp_path / "first.key")
    second.save(tmp_path / "second.key")
    run = write_signed_run(tmp_path, "forged-head",
                           grpo={"prompts_per_step": 8, "prompts_per_chunk": 2, "group_size": 2, "steps": 100_000},
                           swarm={"announce_period_s": PERIOD, "trainer_keys": [first.key_id, second.key_id]})

    def node(name, role, *peers):
        args = ["--run", str(run), "--key", str(tmp_path / f"{name}.key"), "--role", role, "--threads", "1",
                "--engine", "transformers", *(["--initial-peers", *peers] if peers else [])]
        launched.append(proc := NodeProcess(name, tmp_path / name, args).start())
        return proc

    trainer = node("first", "trainer")
    maddr = trainer.wait_joined()
    successor, rollout = node("second", "auto", maddr), node("rollout", "rollout", maddr)
    nodes = [trainer, successor, rollout]
    wait_for(lambda: min((n.status() or {}).get("adapter_version", -1) for n in (successor, rollout)) >= 2, 180,
             "both followers to hold v2", nodes)

    attacker = SwarmClient(run, tmp_path / "attacker", [maddr], engine=False).start()
    try:
        from swarm.adapters.peers import PeerFailures
        from swarm.provenance.witness import witness_log

        attacker.log.learn_keys({r.key_id: bytes.fromhex(r.public_key) for r in attacker.node.trainers()})
        assert witness_log(attacker, [trainer.status()["peer_id"]], PeerFailures())  # holds the genuine log
        calls: Counter = Counter()
        attacker.transport.serve(attacker.protocol("log"), forged_log_reply(attacker, calls), max_request=128)
        attacker.node.advertise(adapter_version=10**6)  # the best holder there is, by its own record
        wait_for(lambda: any(p["adapter_version"] == 10**6 for p in successor.status()["peers"]), 30,
                 "the successor to read the attacker's claim", nodes)

        trainer.kill_hard()
        wait_for(lambda: successor.status()["role"] == "trainer", 60, "the second key to take the slot",
                 [successor, rollout])
        took_over = successor.status()["adapter_version"]
        wait_for(lambda: len(node_events(successor, "step")) >= 2, 180, "the successor's own steps",
                 [successor, rollout])
        assert calls["log"] >= 1  # the attacker was asked (first) and its history refused ...
        assert took_over < AHEAD  # ... the successor continued from the genuine head
        assert "refused" in successor.log_tail(400) and "wrong_signer" in successor.log_tail(400)
        wait_for(lambda: rollout.status()["adapter_version"] > took_over, 120, "the rollout to follow", [successor, rollout])
    finally:
        attacker.close()
    successor.stop()
    rollout.stop()
    for workdir in (successor.workdir, rollout.workdir):  # one chain, no gap, only authorised signers
        report = audit(workdir)
        assert report.ok, report.failure
        versions = [r.version for r in report.records]
        assert versions == list(range(versions[0], versions[-1] + 1)) and versions[-1] < AHEAD
        assert {r.trainer_key_id for r in report.records} == {first.key_id, second.key_id}
