"""Links emulated inside the transport (the simulator's fallback without root): each request and
reply waits its link's delay and its bytes' time on the narrower end, a busy link queues, losses
cost a retransmission timeout, a partition stalls until the timeout, and the simulator's changes
to the links file take effect. A fake clock makes the delays exact; the messages are real (an
in-memory transport)."""
from __future__ import annotations

import pytest
from conftest import run_cli

from swarm.transport import MemoryHub, TransportError, make_transport
from swarm.transport.shaped import HEADERS_BYTES, RTO_S, ShapedTransport, links_file

NODES = {"A": {"name": "a", "region": "eu", "up_mbit": 10.0, "down_mbit": 20.0},
         "B": {"name": "b", "region": "asia", "up_mbit": 0.0, "down_mbit": 5.0}}
LINKS = {"eu->asia": {"delay_ms": 40.0, "jitter_ms": 0.0, "loss": 0.0},
         "asia->eu": {"delay_ms": 60.0, "jitter_ms": 0.0, "loss": 0.0}}


class FakeTime:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def shaped(tmp_path):
    hub = MemoryHub()
    b = make_transport("memory", hub=hub, peer_id="B")
    b.serve("echo", lambda peer, data: b"ok", max_request=1 << 20)
    make_transport("memory", hub=hub, peer_id="C").serve("echo", lambda peer, data: b"ok", max_request=1 << 20)
    fake = FakeTime()
    path = tmp_path / "links-a.json"
    links_file(path, "a", NODES, LINKS)
    a = ShapedTransport(make_transport("memory", hub=hub, peer_id="A"), path, clock=fake.clock, sleep=fake.sleep)
    yield a, fake, path
    a.close()
    b.close()


def test_a_request_waits_delay_and_transfer_time_both_ways(shaped):
    a, fake, _ = shaped
    assert a.request("B", "echo", bytes(10_000), max_response=64, timeout=10) == b"ok"
    up = (10_000 + HEADERS_BYTES) / (5e6 / 8) + 0.040  # our 10 Mbit uplink, their 5 Mbit downlink: 5
    down = (2 + HEADERS_BYTES) / (20e6 / 8) + 0.060  # their unlimited uplink, our 20 Mbit downlink
    assert fake.slept == [round(up, 6), round(down, 6)]


def test_a_busy_link_queues_and_an_unknown_peer_is_not_shaped(shaped):
    a, fake, _ = shaped
    first = a.delay(NODES["A"], NODES["B"], 100_000, "up")
    second = a.delay(NODES["A"], NODES["B"], 100_000, "up")  # sent at the same instant: waits for the first
    transfer = (100_000 + HEADERS_BYTES) / (5e6 / 8)
    assert first == pytest.approx(transfer + 0.04) and second == pytest.approx(2 * transfer + 0.04)
    fake.slept.clear()
    assert a.request("C", "echo", b"x", max_response=64, timeout=10) == b"ok" and fake.slept == []


def test_loss_costs_retransmission_timeouts_in_proportion(shaped):
    a, _, path = shaped
    lossy = {**LINKS, "eu->asia": {"delay_ms": 0.0, "jitter_ms": 0.0, "loss": 0.05}}
    unlimited = {"A": {**NODES["A"], "up_mbit": 0.0}, "B": {**NODES["B"], "down_mbit": 0.0}}  # no queueing
    links_file(path, "a", unlimited, lossy)
    a.model.reload()
    one_packet = [a.delay(unlimited["A"], unlimited["B"], 100, "up") for _ in range(2000)]
    share = sum(d >= RTO_S for d in one_packet) / len(one_packet)
    assert 0.03 < share < 0.07  # 5 % of one-packet messages lose their packet
    big = [a.delay(unlimited["A"], unlimited["B"], 20 * 1448, "up") for _ in range(500)]
    assert sum(d >= RTO_S for d in big) / len(big) > 0.55  # 1 - 0.95^21 = 0.66 of 21-packet messages


def test_a_partition_stalls_requests_and_a_heal_releases_them(shaped):
    a, fake, path = shaped
    links_file(path, "a", NODES, LINKS, cut=[("asia", "eu")])
    with pytest.raises(TransportError, match="emulated partition"):
        a.request("B", "echo", b"x", max_response=64, timeout=7)
    assert sum(fake.slept) == 7 and max(fake.slept) <= 0.5  # stalled, looking for a heal all along

    def heal_after_two_looks(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.slept) == 2:
            links_file(path, "a", NODES, LINKS)
    a.sleep = heal_after_two_looks
    fake.slept.clear()
    assert a.request("B", "echo", b"x", max_response=64, timeout=7) == b"ok"  # healed within the timeout
    assert fake.slept[:2] == [0.5, 0.5] and len(fake.slept) == 4
    a.sleep = fake.sleep
    links_file(path, "a", NODES, {**LINKS, "eu->asia": {"delay_ms": 5.0, "jitter_ms": 0.0, "loss": 0.0}})
    fake.slept.clear()
    assert a.request("B", "echo", b"x", max_response=64, timeout=7) == b"ok"
    assert fake.slept[0] == pytest.approx((1 + HEADERS_BYTES) / (5e6 / 8) + 0.005)  # the new link


def test_a_node_given_a_bad_links_file_says_so_in_one_line(tmp_path):
    (tmp_path / "links.json").write_text("{not json")
    result = run_cli("node", "--run", str(tmp_path / "run.toml"), "--key", str(tmp_path / "k.key"),
                     "--shape-links", str(tmp_path / "links.json"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--shape-links" in result.stderr and "not a readable links file" in result.stderr


def test_shaped_bytes_are_counted_per_link_and_summed_over_nodes_across_restarts(shaped, tmp_path):
    """Each node counts what its transport shaped, both ways of its requests, in status.json's
    `door`; the simulator sums the nodes' counts per link, keeping a restarted node's earlier bytes."""
    import json

    import tomllib

    from scenarios.scenario import parse_scenario
    from scenarios.transport_links import TransportLinks

    a, _, _ = shaped
    a.request("B", "echo", bytes(10_000), max_response=64, timeout=10)
    assert a.stats()["link_bytes"] == {"eu>b": 10_000 + HEADERS_BYTES, "asia>a": 2 + HEADERS_BYTES}

    scenario = parse_scenario(tomllib.loads("""
[scenario]
name = "bytes"
[[region]]
name = "eu"
[[region]]
name = "asia"
[[node]]
name = "a"
role = "trainer"
region = "eu"
[[node]]
name = "b"
role = "rollout"
region = "asia"
"""))
    links = TransportLinks(scenario, tmp_path / "network", {"a": "A", "b": "B"}, "test", tmp_path / "nodes")

    def status(name: str, counts: dict) -> None:
        (tmp_path / "nodes" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "nodes" / name / "status.json").write_text(json.dumps({"door": {"link_bytes": counts}}))

    status("a", {"eu>b": 100, "asia>a": 10})
    status("b", {"asia>a": 5000, "eu>b": 300, "mars>x": 1, "eu>b2": 7})  # unknown receivers are not ours
    links.sample_bytes(1.0)
    status("b", {"asia>a": 200})  # b restarted: its transport counts from zero
    links.sample_bytes(2.0)
    summary = links.summary()
    assert summary["link_bytes"] == {"asia->eu": 10 + 5000 + 200, "eu->asia": 100 + 300}
    assert summary["link_bytes_over_time"][0] == [1.0, {"eu->asia": 400, "asia->eu": 5010}]
