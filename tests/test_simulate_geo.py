"""`swarm simulate` of a geo-distributed scenario: real node processes in network namespaces,
their links measured against the scenario before the run, a timeline that partitions the
regions, kills and restarts a rollout; the run still finishes, the report says what the network
was and what happened, and nothing (namespace or process) is left behind."""
from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli

from scenarios.netem.topology import our_namespaces, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]

SCENARIO = """
[scenario]
name = "geo-test"
steps = 6
timeout_s = 400
announce_period_s = 1.0

[[region]]
name = "eu"
[[region]]
name = "asia"

[[link]]
between = ["eu", "asia"]
delay_ms = 25
jitter_ms = 1

[[node]]
name = "trainer"
role = "trainer"
engine = "transformers"
region = "eu"
up_mbit = 50
down_mbit = 50

[[node]]
name = "rollout"
role = "rollout"
engine = "llamacpp"
region = "asia"
up_mbit = 10
down_mbit = 20

[[event]]
at_s = 4
action = "partition"
regions = ["eu", "asia"]
[[event]]
at_s = 9
action = "heal"
regions = ["eu", "asia"]
[[event]]
at_s = 12
action = "kill"
node = "rollout"
[[event]]
at_s = 14
action = "restart"
node = "rollout"

[[assert]]
metric = "steps_done"
at_least = 6
[[assert]]
metric = "links_off"
at_most = 0
"""


def test_a_two_region_run_with_a_partition_and_a_restart_finishes_and_reports_its_network(tmp_path):
    (tmp_path / "geo.toml").write_text(SCENARIO)
    before = set(our_namespaces())
    result = run_cli("simulate", str(tmp_path / "geo.toml"), "--baseline", "--out", str(tmp_path / "out"), "--quiet",
                     timeout=700)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "link eu-asia: round trip" in result.stdout
    summary = json.loads((tmp_path / "out" / "geo-test" / "report" / "summary.json").read_text())
    assert summary["steps_done"] == 6
    network = summary["network"]
    assert network["emulation"].startswith("network namespaces")
    [link] = network["links"]
    assert link["configured_rtt_ms"] == 50 and link["within_15pct"], link
    assert network["emulator_cpu_s"] > 0
    bandwidth = {(b["node"], b["direction"]): b for b in network["bandwidth"]}
    assert {k: b["configured_mbit_s"] for k, b in bandwidth.items()} == {
        ("trainer", "up"): 20, ("trainer", "down"): 10, ("rollout", "up"): 10, ("rollout", "down"): 20}
    assert all(b["within_15pct"] for b in bandwidth.values()), bandwidth
    assert [e["action"] for e in summary["timeline"]] == ["partition", "heal", "kill", "restart"]
    assert set(our_namespaces()) <= before and not [n for n in our_namespaces() if f"{os.getpid()}" in n]

    # What the report shows beyond the links: the assertions, the bytes each link carried, the
    # chunk flow end to end, dissemination to the rollout, and the co-located baseline overlaid.
    assert [(a["assertion"], a["passed"]) for a in summary["assertions"]] == [
        ("steps_done >= 6", True), ("links_off <= 0", True)]
    assert network["link_bytes"]["asia->eu"] > 0 and network["link_bytes"]["eu->asia"] > 0
    assert summary["chunk_flow"]["reconciled"], summary["chunk_flow"]
    assert summary["dissemination"]["rollout"]["versions"] >= 1
    assert {"tokens_time", "busy_time", "dissemination", "link_bytes"} <= set(summary["plots"])
    baseline = summary["baseline"]
    assert baseline["scenario"] == "geo-test-colocated" and baseline["reward_steps"] == list(range(1, 7))
    assert baseline["reward_ratio_last10"] is not None
    colocated = json.loads((tmp_path / "out" / "geo-test-colocated" / "report" / "summary.json").read_text())
    assert colocated["network"]["emulation"].startswith("none") and colocated["timeline"] == []
    page = (tmp_path / "out" / "compare" / "index.html").read_text()
    assert "geo-test-colocated" in page and "2 runs compared" in page
    assert "comparison: " in result.stdout and "vs the co-located baseline" in result.stdout
