"""End to end: `swarm simulate` runs real node processes (a trainer, a llama.cpp and a
transformers rollout node) that train the tiny model by RL over sealed chunks and signed
adapter versions. Both sync modes; fixed seeds; the report is what a user reads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def simulate(tmp_path: Path, scenario: str, steps: int) -> dict:
    out = tmp_path / "sim"
    result = run_cli("simulate", str(ROOT / "scenarios" / scenario), "--steps", str(steps), "--quiet",
                     "--out", str(out), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "report:" in result.stdout
    return json.loads((out / "report" / "summary.json").read_text())


@pytest.mark.parametrize("scenario, max_lag", [("default.toml", 2), ("sequential.toml", 0)])
def test_swarm_trains_and_accounts_for_every_chunk(tmp_path, scenario, max_lag):
    summary = simulate(tmp_path, scenario, steps=30)
    assert summary["done"] and summary["steps_done"] == 30
    rewards = summary["reward_per_step"]
    # The warm-up teaches only the format (~0.1 exact match); RL must lift it clearly.
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.1, rewards
    assert max(int(lag) for lag in summary["staleness_histogram"]) <= max_lag
    acct = summary["accounting"]
    assert acct["reconciled"] and acct["consumed"] > 0
    assert acct["accepted"] == acct["consumed"] + sum(acct["dropped"].values()) + acct["buffered"]
    engines = {n["engine"] for n in summary["nodes"].values() if n["chunks"] > 0}
    assert engines == {"llamacpp", "transformers"}  # both engines contributed trajectories
