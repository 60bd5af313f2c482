"""A laptop's rollout on a Q4_K_M copy of the base, live: it proves the copy against the manifest's
probe, its chunks pass the trainer's honesty check at Q4_K_M's tolerance; a rollout given another
model's GGUF says so in one line and exits 3 instead of generating."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import node_events, start_authorised_trainer, wait_for

from nodes.engines import gguf_export as G
from nodes.engines.quantize import quantize_gguf
from nodes.models.tiny import tiny_model_dir
from scenarios.processes import NodeProcess

pytestmark = pytest.mark.slow


def accounting(trainer) -> dict:
    lines = node_events(trainer, "accounting")
    return lines[-1] if lines else {"accepted": 0, "rejected": {}}


def test_a_q4_rollout_is_accepted_and_another_models_gguf_is_refused(tmp_path, launched):
    q4 = quantize_gguf(G.ensure_base_gguf(tiny_model_dir(0)), tmp_path / "tiny-q4_k_m.gguf", "q4_k_m")
    other = quantize_gguf(G.ensure_base_gguf(tiny_model_dir(1)), tmp_path / "other-q4_k_m.gguf", "q4_k_m")
    run, trainer = start_authorised_trainer(
        launched, tmp_path, "quantized",
        grpo={"prompts_per_step": 8, "prompts_per_chunk": 2, "group_size": 4, "steps": 100_000},
        sync={"mode": "async", "staleness": 4}, swarm={"announce_period_s": 1.0})
    maddr = trainer.wait_joined()

    wrong = subprocess.run([sys.executable, "-m", "nodes", "node", "--run", str(run), "--key", str(tmp_path / "w.key"),
                            "--base-gguf", str(other), "--threads", "1", "--initial-peers", maddr,
                            "--workdir", str(tmp_path / "wrong")],
                           capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, check=False)
    assert wrong.returncode == 3, wrong.stderr
    last = wrong.stderr.strip().splitlines()[-1]
    assert "cannot serve as rollout" in last and "(q4_k_m) is not the manifest's base" in last, last
    assert "Traceback" not in wrong.stderr

    laptop = NodeProcess("laptop", tmp_path / "laptop", ["--run", str(run), "--key", str(tmp_path / "l.key"),
                                                         "--base-gguf", str(q4), "--threads", "1",
                                                         "--initial-peers", maddr]).start()
    launched.append(laptop)
    wait_for(lambda: accounting(trainer)["accepted"] >= 6, 240, "6 chunks from the Q4_K_M rollout", [trainer, laptop])
    # it follows the trainer's adapters (async: its first chunks after a step may still be of v0)
    wait_for(lambda: max(e["version"] for e in node_events(laptop, "chunk")) >= 1, 240,
             "a Q4_K_M chunk made with a trained adapter", [trainer, laptop])
    assert accounting(trainer)["rejected"].get("dishonest", 0) == 0, accounting(trainer)
    assert "matches the manifest's probe" in (tmp_path / "laptop" / "node.log").read_text()
    laptop.stop()
    trainer.stop()
