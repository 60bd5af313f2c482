"""`swarm simulate` with a node on a small disk of its own that the timeline fills and frees:
the rollout pauses what needs the disk and resumes by itself, the run finishes, and what the node
wrote on its small disk (metrics, log, adapters) is still in the run directory afterwards."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from scenarios import disk

pytestmark = [pytest.mark.slow, pytest.mark.skipif(disk.unavailable() is not None, reason=str(disk.unavailable()))]

SCENARIO = """
[scenario]
name = "disk-test"
steps = 8
timeout_s = 300
announce_period_s = 1.0

[[node]]
name = "trainer"
role = "trainer"
engine = "transformers"

[[node]]
name = "rollout"
role = "rollout"
engine = "llamacpp"
disk_mb = 64

[[event]]
at_step = 2
action = "fill_disk"
node = "rollout"
[[event]]
at_step = 4
action = "free_disk"
node = "rollout"
"""


def test_a_rollout_whose_disk_fills_pauses_and_resumes_and_keeps_its_files(tmp_path):
    (tmp_path / "disk.toml").write_text(SCENARIO)
    result = run_cli("simulate", str(tmp_path / "disk.toml"), "--out", str(tmp_path / "out"), "--quiet", timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert summary["steps_done"] == 8 and [e["action"] for e in summary["timeline"]] == ["fill_disk", "free_disk"]
    assert summary["devices"]["rollout"]["profile"] == "disk 64 MB (tmpfs)"
    workdir = tmp_path / "out" / "nodes" / "rollout"
    log = (workdir / "node.log").read_text()
    assert "resumed" in log and "disk space is back" in log, log[-2000:]
    assert summary["nodes"]["rollout"]["chunks"] > 0 and (workdir / "adapters").is_dir()
    assert not (workdir / ".ballast").exists() and not (workdir.parent / "rollout.kept").exists()
    assert str(tmp_path) not in Path("/proc/mounts").read_text()  # unmounted
    assert summary["chunk_flow"]["reconciled"], summary["chunk_flow"]
