"""Sequential mode survives a rollout node's death: the trainer asks for groups of its current
version from whoever is live, so the surviving node supplies them and the run finishes on-policy."""
from __future__ import annotations

import time

import pytest
from conftest import node_events, start_node, wait_for

from scenarios.scenario import NodeSpec, Scenario, Settings
from scenarios.simulate import prepare

pytestmark = pytest.mark.slow

STEPS = 8
KILL_AFTER_STEP = 2


def test_sequential_run_finishes_when_a_rollout_node_dies(tmp_path, launched):
    out = tmp_path / "run"
    scenario = Scenario(
        Settings(name="churn", mode="sequential", steps=STEPS, announce_period_s=1.0),
        (NodeSpec("trainer", role="trainer", engine="transformers"),
         NodeSpec("a", role="rollout", engine="transformers"), NodeSpec("b", role="rollout", engine="transformers")),
    )
    run, _ = prepare(scenario, out)
    trainer = start_node(launched, out, run, "trainer", "trainer", "transformers")
    maddr = trainer.wait_joined()
    a = start_node(launched, out, run, "a", "rollout", "transformers", [maddr])
    b = start_node(launched, out, run, "b", "rollout", "transformers", [maddr])
    # Both engines of one kind, so neither takes all of a step's demand before the other has loaded
    # (a llama.cpp node on this tiny model did: the run finished before the other made a chunk).
    wait_for(lambda: any(e["step"] >= KILL_AFTER_STEP for e in node_events(trainer, "step"))
             and any(e["sent"] for e in node_events(a, "chunk")) and any(e["sent"] for e in node_events(b, "chunk")),
             300, f"step {KILL_AFTER_STEP} with chunks from both rollouts", [trainer, a, b])
    assert not node_events(trainer, "done"), "the run ended before a rollout could be killed: raise STEPS"

    a.kill_hard()  # SIGKILL, no goodbye: its record simply expires
    killed_at = time.time()
    wait_for(lambda: node_events(trainer, "done"), 300, "the trainer to finish without node a", [trainer, b])

    steps = node_events(trainer, "step")
    assert [e["step"] for e in steps] == list(range(1, STEPS + 1))
    assert all(set(e["lags"]) == {"0"} for e in steps)  # on-policy throughout
    assert any(e["t"] > killed_at for e in node_events(b, "chunk")), "the survivor carried the run on"
    acct = node_events(trainer, "accounting")[-1]
    assert acct["accepted"] == acct["consumed"] + sum(acct["dropped"].values()) + acct["buffered"]
