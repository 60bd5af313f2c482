"""Role assignment is pure: same view -> same answer everywhere, bounded trainers, hysteresis."""
from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.manifest import RunManifest, RunSection, SwarmSection
from swarm.records import Hardware, NodeInfo
from swarm.roles import assign_roles

KEY = "a" * 64


def manifest(slots=1, trainer_keys=()):
    return RunManifest(run=RunSection(id="t", owner_key_id=KEY),
                       swarm=SwarmSection(trainer_slots=slots, trainer_keys=tuple(trainer_keys)))


def info(peer, tok_s=100.0, role="rollout", pref="auto", gpus=(), torch=True, ram=16.0, key=None):
    return NodeInfo(
        run_digest="d", peer_id=peer, key_id=key or f"{hash(peer) & 0xffff:064x}", public_key="", hpke_keys={},
        addrs=(), hardware=Hardware(cores=2, ram_gb=ram, gpus=gpus, torch=torch), decode_tok_s=tok_s,
        role=role, role_pref=pref, state="ready", adapter_version=-1, software="t", issued_at=0, expires_at=1,
    )


def test_fastest_eligible_node_trains_and_the_rest_roll_out():
    nodes = [info("A", 100), info("B", 300), info("C", 200)]
    assert assign_roles(nodes, manifest()) == {"A": "rollout", "B": "trainer", "C": "rollout"}


def test_gpu_beats_cpu_and_explicit_preferences_are_respected():
    nodes = [info("A", 900), info("B", 10, gpus=(("H100", 80.0),)), info("C", 5000, pref="rollout")]
    assert assign_roles(nodes, manifest())["B"] == "trainer"
    assert assign_roles(nodes + [info("D", 1, pref="trainer")], manifest())["D"] == "trainer"


def test_ineligible_nodes_never_train():
    nodes = [info("A", 100, torch=False), info("B", 100, ram=0.5), info("C", 50, key="c" * 64)]
    roles = assign_roles(nodes, manifest(trainer_keys=["c" * 64]))
    assert roles == {"A": "rollout", "B": "rollout", "C": "trainer"}
    assert set(assign_roles(nodes[:2], manifest()).values()) == {"rollout"}


def test_incumbent_keeps_slot_unless_challenger_is_clearly_better():
    incumbent = info("A", 100, role="trainer")
    assert assign_roles([incumbent, info("B", 140)], manifest())["A"] == "trainer"  # 1.4x: no flap
    assert assign_roles([incumbent, info("B", 200)], manifest())["B"] == "trainer"  # 2x: replaced


def test_when_the_trainer_record_expires_the_next_candidate_takes_over():
    nodes = [info("A", 500, role="trainer"), info("B", 200), info("C", 300)]
    assert assign_roles(nodes, manifest())["A"] == "trainer"
    assert assign_roles(nodes[1:], manifest()) == {"B": "rollout", "C": "trainer"}


def test_duplicate_records_of_one_peer_resolve_the_same_in_any_order():
    old, new = info("A", 100, role="rollout"), dataclasses.replace(info("A", 100, role="trainer"), issued_at=5)
    assert assign_roles([old, new, info("B", 50)], manifest()) == assign_roles([new, info("B", 50), old], manifest())


def test_two_claimants_for_one_slot_resolve_to_one():
    nodes = [info("A", 100, role="trainer"), info("B", 100, role="trainer")]
    assert assign_roles(nodes, manifest()) == {"A": "trainer", "B": "rollout"}


views = st.lists(
    st.builds(
        info,
        peer=st.text("abcdefgh", min_size=1, max_size=3),
        tok_s=st.floats(0, 1000),
        role=st.sampled_from(["joining", "trainer", "rollout"]),
        pref=st.sampled_from(["auto", "trainer", "rollout"]),
        torch=st.booleans(),
        ram=st.sampled_from([0.5, 8.0]),
    ),
    max_size=12,
    unique_by=lambda r: r.peer_id,  # a view holds one record per peer (the DHT subkey)
)


@settings(max_examples=300, deadline=None)
@given(views, st.integers(1, 4), st.randoms())
def test_every_node_computes_the_same_bounded_answer(records, slots, rnd):
    m = manifest(slots)
    expected = assign_roles(records, m)
    shuffled = records[:]
    rnd.shuffle(shuffled)
    assert assign_roles(shuffled, m) == expected  # order of the view does not matter
    assert set(expected) == {r.peer_id for r in records}  # one role per node, never two
    assert sum(role == "trainer" for role in expected.values()) <= slots
    eligible = [r for r in records if r.role_pref != "rollout" and r.hardware.torch and r.hardware.ram_gb >= 1]
    assert sum(role == "trainer" for role in expected.values()) == min(slots, len(eligible))


@settings(max_examples=100, deadline=None)
@given(views)
def test_assignment_is_stable_once_adopted(records):
    """Feeding the answer back as everyone's current role changes nothing (no flapping)."""
    m = manifest(2)
    first = assign_roles(records, m)
    adopted = [dataclasses.replace(r, role=first[r.peer_id]) for r in records]
    random.Random(0).shuffle(adopted)
    assert assign_roles(adopted, m) == first


def test_a_self_declared_trainer_is_not_a_trainer_to_anyone_else():
    """A member whose record says `role: trainer` but whom the manifest does not allow to train is
    named by nobody's role function: chunks are never sealed to it, its versions never accepted."""
    from swarm.roles import trainers_of

    real, liar = "b" * 64, "c" * 64
    nodes = [info("A", 100, key=real), info("M", 1e9, role="trainer", pref="trainer", gpus=(("H100", 80.0),), key=liar),
             info("R", 50)]
    m = manifest(trainer_keys=[real])
    assert [r.peer_id for r in trainers_of(nodes, m)] == ["A"]
    assert assign_roles(nodes, m)["M"] == "rollout"
