"""`swarm simulate --emulation transport`: the fallback where real packets cannot be shaped (no
root). The same scenario file runs with every node on 127.0.0.1 and its links emulated inside
the transport; the run finishes through a partition, and the report says which emulation applied
and what it measured through it."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

SCENARIO = """
[scenario]
name = "shaped"
steps = 5
timeout_s = 300
announce_period_s = 1.0

[[region]]
name = "eu"
[[region]]
name = "asia"

[[link]]
between = ["eu", "asia"]
delay_ms = 30

[[node]]
name = "trainer"
role = "trainer"
engine = "transformers"
region = "eu"

[[node]]
name = "rollout"
role = "rollout"
engine = "llamacpp"
region = "asia"
up_mbit = 20
down_mbit = 40
max_tok_s = 150

[[event]]
at_s = 3
action = "partition"
regions = ["eu", "asia"]
[[event]]
at_s = 8
action = "heal"
regions = ["eu", "asia"]
"""


def test_links_emulated_inside_the_transport_run_and_are_reported(tmp_path):
    (tmp_path / "shaped.toml").write_text(SCENARIO)
    result = run_cli("simulate", str(tmp_path / "shaped.toml"), "--emulation", "transport", "--out",
                     str(tmp_path / "out"), "--quiet", timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "links emulated inside the transport: asked for with --emulation transport" in result.stdout
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    network = summary["network"]
    assert network["emulation"].startswith("inside the transport") and "DHT" in network["emulation"]
    [link] = network["links"]
    assert link["configured_rtt_ms"] == 60 and link["within_15pct"], link
    assert all(b["within_15pct"] for b in network["bandwidth"]) and len(network["bandwidth"]) == 2
    assert summary["steps_done"] == 5 and [e["action"] for e in summary["timeline"]] == ["partition", "heal"]
    # bytes per link, as the nodes' transports shaped them: chunks asia -> eu, adapter versions eu -> asia
    sent = network["link_bytes"]
    assert sent["asia->eu"] > 5 * 1000 and sent["eu->asia"] > 5 * 1000, sent
    assert network["node_received_bytes"]["trainer"]["asia"] == sent["asia->eu"]
    assert summary["chunk_flow"]["reconciled"], summary["chunk_flow"]
    # a slower device without root: the rollout generates no faster than its cap
    assert summary["devices"]["rollout"]["profile"] == "at most 150 tokens/s (cap)"
    assert 0 < summary["nodes"]["rollout"]["tokens_per_s"] <= 150
    links = json.loads((tmp_path / "out" / "network" / "links-rollout.json").read_text())
    assert links["self"] == "rollout" and links["cut"] == []  # healed
