"""Whom a rollout asks for an adapter: pure ranking, failures remembered with backoff."""
from __future__ import annotations

from swarm.adapters.peers import PeerFailures, rank_holders
from swarm.records import Hardware, NodeInfo


def holder(peer: str, version: int) -> NodeInfo:
    return NodeInfo(run_digest="d", peer_id=peer, key_id="0" * 64, public_key="", hpke_keys={}, addrs=(),
                    hardware=Hardware(), decode_tok_s=1.0, role="rollout", role_pref="auto", state="ready",
                    adapter_version=version, software="t", issued_at=0, expires_at=1)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_peer_that_named_the_version_first_then_trainers_then_newest_holders():
    holders = [holder("old", 5), holder("new", 9), holder("trainer", 7), holder("stale", 2), holder("told", 9)]
    assert rank_holders(5, holders, trainers=["trainer"], first="told") == ["told", "trainer", "new", "old"]


def test_ranking_is_deterministic_whatever_the_order_of_records():
    holders = [holder(p, 6) for p in "dcab"]
    assert rank_holders(6, holders) == rank_holders(6, list(reversed(holders))) == list("abcd")


def test_failures_back_off_exponentially_and_a_success_forgets_them():
    clock = Clock()
    failures = PeerFailures(base_s=2.0, max_s=10.0, clock=clock)
    holders = [holder("hang", 3), holder("good", 3)]
    assert [failures.failed("hang") for _ in range(4)] == [2.0, 4.0, 8.0, 10.0]  # capped
    assert rank_holders(3, holders, failures=failures) == ["good"]
    clock.now += 9.9
    assert rank_holders(3, holders, failures=failures) == ["good"]
    clock.now += 0.2
    assert rank_holders(3, holders, failures=failures) == ["good", "hang"]  # asked again after its backoff
    failures.failed("hang")
    failures.succeeded("hang")
    assert not failures.banned("hang") and failures.failed("hang") == 2.0  # the count starts over


def test_a_banned_peer_is_left_out_even_when_it_named_the_version():
    failures = PeerFailures(clock=Clock())
    failures.failed("told")
    assert rank_holders(1, [holder("x", 1)], first="told", failures=failures) == ["x"]
