"""Who may train (provenance issue, section 0): a member that claims the trainer slot does not get it.

Found by an attacker: in a swarm initialised without `--trainer-key` (then: "any capable node may
train"), a peer whose self-signed record claimed an H100 and a million tokens/s took the only
trainer slot within a second; the real trainer stepped down and the rollouts sealed their chunks
to the attacker. Now `swarm init` authorises the owner's key alone by default, and no record's
claims displace a live, authorised incumbent.

Real `swarm node` processes (the trainer runs with the owner's key, one rollout); the attacker
joins in-process (tests/swarm_client.py) with a record that claims everything.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest
from conftest import make_manifest, node_events, wait_for
from swarm_client import ClaimsToTrain, SwarmClient, counting

from scenarios.processes import NodeProcess

pytestmark = pytest.mark.slow
PERIOD = 1.0


def steps(trainer: NodeProcess) -> int:
    return len(node_events(trainer, "step"))


def peers_of(node: NodeProcess) -> dict[str, dict]:
    return {p["peer_id"]: p for p in (node.status() or {}).get("peers", [])}


def test_a_member_claiming_an_h100_does_not_take_the_owners_trainer_slot(tmp_path, launched):
    from crypto.identity import Identity
    from swarm.manifest import load_manifest

    owner = Identity.generate()
    owner.save(tmp_path / "owner.key")
    run = make_manifest(tmp_path, tmp_path / "owner.key", "--announce-period", str(PERIOD), "--steps", "100000")
    assert load_manifest(run).manifest.swarm.trainer_keys == (owner.key_id,)  # `swarm init`'s default: the owner only

    trainer = NodeProcess("trainer", tmp_path / "trainer", ["--run", str(run), "--key", str(tmp_path / "owner.key"),
                                                            "--role", "trainer", "--threads", "1"]).start()
    launched.append(trainer)
    maddr = trainer.wait_joined()
    rollout = NodeProcess("rollout", tmp_path / "rollout", ["--run", str(run), "--key", str(tmp_path / "rollout.key"),
                                                            "--role", "rollout", "--engine", "transformers",
                                                            "--threads", "1", "--initial-peers", maddr]).start()
    launched.append(rollout)
    liar = None
    try:
        wait_for(lambda: steps(trainer) >= 1, 120, "the real trainer's first step", [trainer, rollout])
        real = trainer.status()["peer_id"]

        liar = SwarmClient(run, tmp_path / "liar", [maddr], node_cls=ClaimsToTrain, engine=False).start()
        calls: Counter = Counter()
        for name in ("chunks", "status", "adapter"):
            liar.transport.serve(f"{liar.signed.namespace}/{name}", counting(calls, name), max_request=1 << 20)

        def claim(node: NodeProcess) -> bool:
            """`node` has read the liar's record, which says it is the trainer."""
            return peers_of(node).get(liar.node.peer_id, {}).get("role") == "trainer"

        wait_for(lambda: claim(rollout) and claim(trainer), 30, "both nodes to read the liar's claim", [trainer, rollout])

        # Several announce periods with the claim live: the slot stays with the owner's key.
        before, since = steps(trainer), time.monotonic()
        wait_for(lambda: steps(trainer) >= before + 2 and time.monotonic() - since > 3 * PERIOD, 60,
                 "two more steps and three announce periods with the liar in the swarm", [trainer, rollout])
        assert calls == Counter()  # before: every chunk sealed to it, every status and adapter request its
        assert trainer.status()["role"] == "trainer" and rollout.status()["role"] == "rollout"
        assert [e["role"] for e in node_events(trainer, "role")] == ["trainer"]  # never stepped down
        assert peers_of(rollout)[real]["role"] == "trainer" and claim(rollout)  # the rollout sees both claims ...
        assert [r.peer_id for r in liar.node.trainers()] == [real]  # ... and the role function names only the real one
        assert rollout.status()["adapter_version"] > 0  # and it keeps following the real trainer's versions
    finally:
        if liar is not None:
            liar.close()
        rollout.stop()
        trainer.stop()
