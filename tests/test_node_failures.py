"""No zombie nodes, no tracebacks: what a node does when its role cannot start or its inputs are wrong.

Found trying the build as a new user would: a node whose model failed to load (in a background
thread) stayed up, listed as a ready rollout, and never made a chunk; a trainer that failed that
way left every rollout waiting forever; `--threads 0` hung; a garbage `--announce` hung 35 s and
ended in a traceback; `--workdir` naming a file and a key path nobody can write ended in
tracebacks; `swarm init` accepted a base that did not exist.

Now a role that cannot start is in the node's record (`failed`, with the reason): the role
function gives it to another node, `swarm peers` shows why, and a node left with no role it can
serve exits non-zero with one line. Bad inputs are one line and exit 2, before anything starts.
"""
from __future__ import annotations

import os
import shutil
import time

import pytest
from conftest import node_events, run_cli, wait_for, write_signed_run

from scenarios.processes import NodeProcess


def one_line_error(result, *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- bad inputs: one line, exit 2, before anything starts -----------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_signed_run(tmp_path_factory.mktemp("inputs"), "inputs")


def node(run, tmp_path, *extra: str):
    return run_cli("node", "--run", str(run), "--key", str(tmp_path / "n.key"), "--workdir", str(tmp_path / "w"),
                   *extra, timeout=60)


def test_threads_zero_is_refused(run, tmp_path):
    one_line_error(node(run, tmp_path, "--threads", "0"), "--threads 0", "at least 1")


def test_a_garbage_announce_address_is_refused_at_once(run, tmp_path):
    started = time.monotonic()
    result = node(run, tmp_path, "--announce", "not-an-address")
    one_line_error(result, "--announce 'not-an-address' is not a multiaddr", "/ip4/")
    assert time.monotonic() - started < 30  # not the 35 s join timeout it used to wait for


def test_a_workdir_that_is_a_file_is_refused(run, tmp_path):
    (tmp_path / "w").write_text("not a directory")
    one_line_error(node(run, tmp_path, "--threads", "1"), "--workdir", "is a file")


def test_a_key_path_that_cannot_be_written_is_refused(run, tmp_path):
    (tmp_path / "file").write_text("x")
    result = run_cli("node", "--run", str(run), "--key", str(tmp_path / "file" / "n.key"), "--workdir",
                     str(tmp_path / "w"), timeout=60)
    one_line_error(result, "cannot create a key at", "--key")


def test_init_refuses_a_base_it_cannot_find(tmp_path, owner):
    _, key = owner
    result = run_cli("init", "--out", str(tmp_path / "run.toml"), "--owner-key", str(key),
                     "--base", str(tmp_path / "no-such-model"))
    one_line_error(result, "model.base", "is not a directory")
    assert not (tmp_path / "run.toml").exists()


def test_init_refuses_a_hub_id_that_is_not_downloaded(tmp_path, owner):
    _, key = owner
    env_home = os.environ.get("HF_HOME")
    os.environ["HF_HOME"] = str(tmp_path / "hf")  # an empty cache: nothing downloaded, nothing fetched
    try:
        result = run_cli("init", "--out", str(tmp_path / "run.toml"), "--owner-key", str(key),
                         "--base", "Qwen/Qwen2.5-0.5B-Instruct")
    finally:
        if env_home is None:
            os.environ.pop("HF_HOME")
        else:
            os.environ["HF_HOME"] = env_home
    one_line_error(result, "not in the local Hugging Face cache", "huggingface-cli download Qwen/Qwen2.5-0.5B")


def test_the_pin_covers_every_file_that_decides_the_model(tmp_path):
    from nodes.models.pinning import BaseError, base_digest, resolve_base
    from nodes.models.tiny import tiny_model_dir

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir(), base)
    pinned = base_digest(str(base))
    assert resolve_base(str(base), pinned) == str(base)
    for name, change in (("tokenizer_config.json", b" "), ("config.json", b" ")):
        original = (base / name).read_bytes()
        (base / name).write_bytes(original + change)
        with pytest.raises(BaseError, match="not the model the manifest pins"):
            resolve_base(str(base), pinned)
        (base / name).write_bytes(original)
    (base / "model.safetensors").rename(base / "model-00001-of-00001.safetensors")  # a renamed shard
    assert base_digest(str(base)) != pinned


# -- a role that cannot start (live nodes) -------------------------------------------------------------

def broken_cache(tmp_path):
    """An echo-swarm cache whose embedded model was damaged: this node's base differs from the pin."""
    from nodes.models.tiny import cache_root, tiny_model_dir

    source = tiny_model_dir()
    cache = tmp_path / "broken-cache"
    target = cache / source.relative_to(cache_root())
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return cache


@pytest.mark.slow
def test_a_rollout_whose_model_will_not_load_exits_with_one_line(tmp_path):
    run = write_signed_run(tmp_path, "noload")
    env = {**os.environ, "ECHO_SWARM_CACHE": str(broken_cache(tmp_path))}
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "nodes", "node", "--run", str(run), "--key",
                             str(tmp_path / "r.key"), "--role", "rollout", "--threads", "1",
                             "--engine", "transformers", "--workdir", str(tmp_path / "w")],
                            capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
                            check=False)
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("swarm node: error: cannot serve as rollout: base tiny") and "manifest pins" in last
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_node_that_cannot_load_says_so_gives_up_the_trainer_slot_and_leaves(tmp_path, launched):
    """R rolls out; H trains; H2 stands by. B (prefers to train, but its model is damaged) joins
    while H trains: its rollout fails, so it stays up as a trainer candidate, its record saying
    why. H dies: B takes the free slot, fails to load, gives it up (H2 takes over and trains) and,
    with no role left, exits 3."""
    from crypto.identity import Identity

    names = ("broken", "healthy", "standby")
    keys = {name: Identity.generate() for name in names}
    for name, key in keys.items():
        key.save(tmp_path / f"{name}.key")
    run = write_signed_run(tmp_path, "giveup", grpo={"prompts_per_step": 4, "prompts_per_chunk": 2,
                                                       "group_size": 2, "steps": 100_000},
                           swarm={"announce_period_s": 1.0, "trainer_keys": [keys[n].key_id for n in names]})

    def start(name, role, *peers, env=None):
        args = ["--run", str(run), "--key", str(tmp_path / f"{name}.key"), "--role", role, "--threads", "1",
                "--engine", "transformers", *(["--initial-peers", *peers] if peers else [])]
        launched.append(proc := NodeProcess(name, tmp_path / name, args, env=env or {}).start())
        return proc

    rollout = start("rollout", "rollout")
    maddr = rollout.wait_joined()
    healthy = start("healthy", "auto", maddr)
    wait_for(lambda: len(node_events(healthy, "step")) >= 1, 120, "the first trainer's steps", [healthy, rollout])
    standby = start("standby", "auto", maddr)
    broken = start("broken", "trainer", maddr, env={"ECHO_SWARM_CACHE": str(broken_cache(tmp_path))})
    nodes = [healthy, standby, rollout, broken]

    def failed_in_view(of):
        peers = {p["key_id"]: p for p in (of.status() or {}).get("peers", [])}
        return peers.get(keys["broken"].key_id, {}).get("failed", {})

    wait_for(lambda: "rollout" in failed_in_view(healthy), 120, "the broken node's failed rollout in the swarm", nodes)
    assert "manifest pins" in failed_in_view(healthy)["rollout"] and broken.alive()  # a trainer candidate still

    healthy.kill_hard()
    nodes = [standby, rollout]
    wait_for(lambda: broken.proc.poll() is not None, 120, "the broken node to try the slot and leave", nodes)
    assert broken.proc.returncode == 3
    tail = broken.log_tail(8)
    assert "cannot serve as trainer" in tail and "Traceback" not in tail
    assert tail.strip().splitlines()[-1].startswith("swarm node: error: cannot serve as rollout")
    wait_for(lambda: len(node_events(standby, "step")) >= 2, 180, "the standby node's training steps", nodes)
