"""Role assignment is pure: same view -> same answer everywhere, bounded trainers, only authorised
keys train, and a live incumbent keeps its slot whatever a challenger claims."""
from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.manifest import RunManifest, RunSection, SwarmSection
from swarm.records import Hardware, NodeInfo
from swarm.roles import assign_roles, can_train

KEY = "a" * 64


def manifest(slots=1, trainer_keys=()):
    """Listed trainer keys; none listed: open training (any member may train), so the slot rules
    can be tested on their own."""
    return RunManifest(run=RunSection(id="t", owner_key_id=KEY),
                       swarm=SwarmSection(trainer_slots=slots, trainer_keys=tuple(trainer_keys),
                                          open_training=not trainer_keys))


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


def test_a_live_incumbent_keeps_its_slot_whatever_a_challenger_claims():
    incumbent = info("A", 100, role="trainer")
    assert assign_roles([incumbent, info("B", 140)], manifest())["A"] == "trainer"
    assert assign_roles([incumbent, info("B", 200)], manifest())["A"] == "trainer"  # was: 2x faster replaced it
    boaster = info("B", 1e6, pref="trainer", gpus=(("H100", 80.0),), ram=2048.0)
    assert assign_roles([incumbent, boaster], manifest()) == {"A": "trainer", "B": "rollout"}


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


# -- training is authorised, not claimed (provenance issue, section 0) ----------------------------
OWNER, OTHER, ATTACKER = "1" * 64, "2" * 64, "3" * 64
H100 = (("H100", 80.0),)


def boaster(peer, key, role="trainer"):
    """A record that claims everything: the trainer role, a trainer preference, an H100, 1e6 tok/s."""
    return info(peer, 1e6, role=role, pref="trainer", gpus=H100, ram=2048.0, key=key)


def test_a_challenger_claiming_far_better_hardware_does_not_displace_a_live_authorised_incumbent():
    m = manifest(trainer_keys=[OWNER, OTHER])
    incumbent = info("T", 5, role="trainer", key=OWNER)
    for challenger in (boaster("C", OTHER, role="rollout"), boaster("C", OTHER, role="joining")):
        assert assign_roles([incumbent, challenger, info("R", 50)], m) == {"T": "trainer", "C": "rollout", "R": "rollout"}


def test_two_authorised_claimants_resolve_by_the_owners_key_order_not_by_claimed_hardware():
    """A challenger that also claims the trainer role (a lie, or a view that raced) does not win
    on hardware: the key listed first in swarm.trainer_keys keeps the slot."""
    incumbent = info("T", 5, role="trainer", key=OWNER)
    liar = boaster("A", OTHER)  # "A" < "T": it would also win a peer-id tie-break
    assert assign_roles([incumbent, liar], manifest(trainer_keys=[OWNER, OTHER]))["T"] == "trainer"
    assert assign_roles([incumbent, liar], manifest(trainer_keys=[OTHER, OWNER]))["A"] == "trainer"


def test_when_the_incumbents_record_is_absent_the_best_authorised_candidate_takes_the_slot():
    m = manifest(trainer_keys=[OWNER, OTHER, "4" * 64])
    incumbent = info("T", 500, role="trainer", key=OWNER)
    rest = [info("B", 200, key=OTHER), info("C", 300, key="4" * 64), info("D", 10_000, gpus=H100)]  # D unauthorised
    assert assign_roles([incumbent, *rest], m)["T"] == "trainer"
    assert assign_roles(rest, m) == {"B": "rollout", "C": "trainer", "D": "rollout"}


def test_an_incumbent_that_prefers_rollout_hands_the_slot_on():
    m = manifest(trainer_keys=[OWNER, OTHER])
    leaving = info("T", 500, role="trainer", pref="rollout", key=OWNER)
    assert assign_roles([leaving, info("B", 200, key=OTHER)], m) == {"T": "rollout", "B": "trainer"}


def test_an_unauthorised_key_never_gets_the_slot_however_it_claims():
    from swarm.roles import trainers_of

    m = manifest(trainer_keys=[OWNER])
    for role in ("trainer", "rollout", "joining"):
        attacker = boaster("M", ATTACKER, role=role)
        assert assign_roles([attacker], m) == {"M": "rollout"}  # even alone: the slot stays empty
        assert assign_roles([attacker, info("T", 1, role="trainer", key=OWNER)], m) == {"M": "rollout", "T": "trainer"}
        assert assign_roles([attacker, info("T", 1, key=OWNER)], m) == {"M": "rollout", "T": "trainer"}
        assert [r.peer_id for r in trainers_of([attacker, info("T", 1, key=OWNER)], m)] == ["T"]


def test_nobody_trains_when_no_key_is_listed_and_training_is_not_open():
    closed = RunManifest(run=RunSection(id="t", owner_key_id=KEY))  # the parse default: fail-safe
    assert not closed.trainer_allowed(OWNER) and not closed.trainer_allowed(ATTACKER)
    assert set(assign_roles([info("T", 1, role="trainer", key=OWNER), boaster("M", ATTACKER)], closed).values()) == {
        "rollout"}


keyed_views = st.lists(
    st.builds(
        info,
        peer=st.text("abcdefgh", min_size=1, max_size=3),
        tok_s=st.floats(0, 1e6),
        role=st.sampled_from(["joining", "trainer", "rollout"]),
        pref=st.sampled_from(["auto", "trainer", "rollout"]),
        gpus=st.sampled_from([(), H100]),
        torch=st.booleans(),
        ram=st.sampled_from([0.5, 8.0, 2048.0]),
        key=st.sampled_from([OWNER, OTHER, ATTACKER, "4" * 64]),
    ),
    max_size=10,
)  # duplicate peers and keys included: records of one peer, and a key named by several records


@settings(max_examples=300, deadline=None)
@given(keyed_views, st.lists(st.sampled_from([OWNER, OTHER, "4" * 64]), max_size=3, unique=True), st.randoms())
def test_the_answer_is_independent_of_record_order_and_only_authorised_keys_train(records, keys, rnd):
    m = manifest(trainer_keys=keys) if keys else RunManifest(run=RunSection(id="t", owner_key_id=KEY))
    expected = assign_roles(records, m)
    for _ in range(3):
        shuffled = records[:]
        rnd.shuffle(shuffled)
        assert assign_roles(shuffled, m) == expected
    trainers = [peer for peer, role in expected.items() if role == "trainer"]
    assert len(trainers) <= 1
    newest = {peer: max((r for r in records if r.peer_id == peer), key=lambda r: (r.issued_at, repr(r)))
              for peer in trainers}
    assert all(newest[peer].key_id in keys for peer in trainers)  # ATTACKER never, nobody when none listed
    latest = {r.peer_id: max((x for x in records if x.peer_id == r.peer_id), key=lambda x: (x.issued_at, repr(x)))
              for r in records}
    incumbents = [r for r in latest.values() if r.role == "trainer" and can_train(r, m)]
    if incumbents:  # a live, eligible incumbent is never displaced by a non-incumbent
        assert trainers and latest[trainers[0]].role == "trainer"


def test_a_node_whose_trainer_failed_to_start_gives_up_the_slot_and_is_never_picked_again():
    import dataclasses

    m = manifest(trainer_keys=[OWNER, OTHER])
    incumbent = info("T", 500, role="trainer", pref="trainer", key=OWNER)
    failed = dataclasses.replace(incumbent, failed={"trainer": "base tiny is not the model the manifest pins"})
    standby = info("S", 5, key=OTHER)
    assert assign_roles([incumbent, standby], m) == {"T": "trainer", "S": "rollout"}
    assert assign_roles([failed, standby], m) == {"T": "rollout", "S": "trainer"}
    rolled_out_only = dataclasses.replace(incumbent, failed={"rollout": "no llama.cpp"})
    assert assign_roles([rolled_out_only, standby], m)["T"] == "trainer"  # a failed rollout still may train
