"""Shared fixtures: keys and signed manifests in tmp dirs, real node processes, a reaper.

Every process a test starts is registered and stopped by process group at the end of the
session; the reaper also checks that nothing a node spawned (DHT child, p2pd) outlived it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HIVEMIND_LOGLEVEL", "ERROR")


def run_cli(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `swarm ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nodes", *args], capture_output=True, text=True, timeout=timeout,
        cwd=cwd, stdin=subprocess.DEVNULL, check=False,
    )


@pytest.fixture(scope="session")
def launched():
    """Registry of NodeProcess objects; all are stopped (by process group) when the session ends."""
    procs = []
    yield procs
    for p in procs:
        p.stop(grace=5)


@pytest.fixture
def owner(tmp_path):
    from crypto.identity import Identity

    identity = Identity.generate()
    identity.save(tmp_path / "owner.key")
    return identity, tmp_path / "owner.key"


def make_manifest(tmp_path: Path, owner_key: Path, *extra: str, name: str = "run.toml") -> Path:
    out = tmp_path / name
    result = run_cli("init", "--out", str(out), "--owner-key", str(owner_key), "--run-id", "test", *extra)
    assert result.returncode == 0, result.stderr
    return out


def wait_for(predicate, timeout: float, what: str, nodes=(), poll: float = 0.2):
    """Poll `predicate` until it returns something truthy (returned); fail early, with its log,
    if one of `nodes` (NodeProcess) exits, and with every node's log tail on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for node in nodes:
            if not node.alive():
                raise AssertionError(f"{node.name} exited ({node.proc.returncode}) while waiting for {what}:\n"
                                     f"{node.log_tail(40)}")
        time.sleep(poll)
    tails = "\n".join(f"--- {n.name}\n{n.log_tail(40)}" for n in nodes)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def start_node(launched: list, out: Path, run: Path, name: str, role: str, engine: str, peers=()):
    """A real `swarm node` for a run prepared by `scenarios.simulate.prepare` (keys in OUT/keys,
    workdir OUT/nodes/NAME), registered for stopping at the end of the session."""
    from scenarios.processes import NodeProcess

    args = ["--run", str(run), "--key", str(out / "keys" / f"{name}.key"), "--role", role, "--engine", engine,
            "--threads", "1", *(["--initial-peers", *peers] if peers else [])]
    proc = NodeProcess(name, out / "nodes" / name, args).start()
    launched.append(proc)
    return proc


def save_lora(base_dir: Path, out: Path, seed: int, r: int = 8, alpha: int = 16, **lora) -> Path:
    """A random LoRA with non-zero B (a fresh PEFT LoRA has B = 0, i.e. is the base)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from nodes.trainer.policy import LORA_TARGETS

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(LORA_TARGETS), **lora))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    peft.save_pretrained(out)
    return out
