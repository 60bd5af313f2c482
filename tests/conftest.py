"""Shared fixtures: keys and signed manifests in tmp dirs, real node processes, a reaper.

Every node process a test starts is registered in `launched` and stopped by process group at
the end of the session. The leftover-process check then fails the run if any process this
session started is still running: after each test module (naming the module; nodes still held
by `launched` excepted) and at the end of the session. It kills what it reports, by pid.
Tests that use `launched` must be marked `slow` (`make test-fast` leaves them out).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pytest

try:
    import psutil
except ImportError:  # read /proc instead (Linux); elsewhere the check finds nothing
    psutil = None

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HIVEMIND_LOGLEVEL", "ERROR")
# hivemind's default torch sharing strategy starts a torch_shm_manager that outlives every DHT.
os.environ.setdefault("HIVEMIND_MEMORY_SHARING_STRATEGY", "file_descriptor")

# -- leftover processes ----------------------------------------------------------------------------
# Every process started from this session inherits this mark in its environment, so one whose
# parent died (re-parented to init, e.g. the p2pd of a node killed with SIGKILL) is still ours.
# A new value per session: another pytest run on this machine never matches.
SESSION_MARK = "ECHO_SWARM_TEST_SESSION"
SESSION_ID = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
os.environ[SESSION_MARK] = SESSION_ID

SETTLE_S = 10.0  # how long leftovers get to exit by themselves (a DHT stopping its p2pd, a node's watchdog)
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL for what is still there after that
LAUNCHED: list = []  # the NodeProcess objects of the `launched` fixture
_BASELINE: set[int] = set()  # descendants that existed before the first test: not ours to judge


class Proc(NamedTuple):
    pid: int
    ppid: int
    started: float  # with pid, names the process (a recycled pid has another start time)
    cmdline: str
    marked: bool  # carries this session's SESSION_MARK


def _processes() -> dict[int, Proc]:
    """Every running process we can see (zombies are gone, only not yet reaped)."""
    procs: dict[int, Proc] = {}
    mark = f"{SESSION_MARK}={SESSION_ID}".encode()
    if psutil is not None:
        for p in psutil.process_iter(["ppid", "create_time", "cmdline", "name", "status", "environ"]):
            info = p.info
            if info["status"] == psutil.STATUS_ZOMBIE:
                continue
            env = info["environ"] or {}
            procs[p.pid] = Proc(p.pid, info["ppid"] or 0, info["create_time"] or 0.0,
                                " ".join(info["cmdline"] or []) or f"[{info['name']}]",
                                env.get(SESSION_MARK) == SESSION_ID)
        return procs
    if not os.path.isdir("/proc"):
        return procs
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
            fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
            if fields[0] in (b"Z", b"X"):
                continue
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except (OSError, ValueError, IndexError):
            continue
        try:
            marked = mark in Path(entry.path, "environ").read_bytes().split(b"\0")
        except OSError:
            marked = False
        name = stat[stat.index(b"(") + 1:stat.rindex(b")")]
        procs[int(entry.name)] = Proc(int(entry.name), int(fields[1]), float(fields[19]),
                                      (cmdline or b"[" + name + b"]").decode(errors="replace"), marked)
    return procs


def _descendants(roots, children: dict[int, list[int]]) -> set[int]:
    found, stack = set(), list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def leftover_processes(exclude_groups=()) -> list[Proc]:
    """The processes this session started that are still running: descendants of this pytest
    process, and orphans found by the session mark. Left out: what ran before the first test,
    self-terminating library helpers (_HELPERS), and every process in, or descended from
    one in, the process groups `exclude_groups` (nodes whose stopping `launched` is in charge of)."""
    me = os.getpid()
    procs = _processes()
    children: dict[int, list[int]] = defaultdict(list)
    for p in procs.values():
        children[p.ppid].append(p.pid)
    ours = _descendants([me], children) | {p.pid for p in procs.values() if p.marked}
    ours -= {me, *_BASELINE}
    groups = set(exclude_groups)
    if groups:
        held = {pid for pid in ours if _pgid(pid) in groups}
        ours -= held | _descendants(held, children)
    return sorted((procs[pid] for pid in ours if not any(h in procs[pid].cmdline for h in _HELPERS)),
                  key=lambda p: p.pid)


# Helpers that libraries start for a process and that exit by themselves once it and its clients
# are gone (they may outlive a node killed with SIGKILL by seconds): torch's shared-memory manager
# (hivemind shares tensors between a DHT and its child process), multiprocessing's own.
_HELPERS = ("torch_shm_manager", "multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _still_running(procs: list[Proc]) -> list[Proc]:
    now = _processes()
    return [p for p in procs if p.pid in now and now[p.pid].started == p.started]


def stop_processes(procs: list[Proc], grace: float = KILL_GRACE_S) -> list[Proc]:
    """SIGTERM each (checked to be the same process, not a recycled pid), SIGKILL whatever is
    still running after `grace`; return what survived even that."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for p in _still_running(procs):
            try:
                os.kill(p.pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while (procs := _still_running(procs)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not procs:
            break
    return procs


def check_no_leftovers(where: str, exclude_groups=(), settle: float = SETTLE_S) -> None:
    """Give leftovers `settle` seconds to exit; then stop them and fail, naming each."""
    deadline = time.monotonic() + settle
    while (left := leftover_processes(exclude_groups)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not left:
        return
    survivors = stop_processes(left)
    lines = "\n".join(f"  pid {p.pid} (parent {p.ppid}): {p.cmdline[:300]}" for p in left)
    note = f"\n{len(survivors)} survived SIGKILL" if survivors else " (now killed)"
    pytest.fail(f"{where} left {len(left)} process(es) running{note}:\n{lines}\n"
                "Stop every process a test starts (register nodes in `launched`, shut DHTs down).",
                pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_processes():
    """Session end: after `launched` has stopped every node (it depends on this fixture, so it is
    torn down first), nothing this session started may still run."""
    _BASELINE.update(p.pid for p in leftover_processes())
    yield
    check_no_leftovers("the test session")


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_processes_per_module(request, _no_leftover_processes):
    """After each module (its module fixtures are torn down first): nothing left but the nodes
    that `launched` will stop at the end of the session."""
    yield
    check_no_leftovers(f"test module {request.module.__name__}",
                       exclude_groups={p.pid for p in LAUNCHED if p.proc is not None})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A test that starts real node processes belongs to the `slow` set (`make test-fast` skips it)."""
    if "launched" in item.fixturenames and item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} uses the `launched` fixture (real node processes) but is not marked "
                    "slow: add `@pytest.mark.slow` to it, or `pytestmark = pytest.mark.slow` to its module",
                    pytrace=False)


def run_cli(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `swarm ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nodes", *args], capture_output=True, text=True, timeout=timeout,
        cwd=cwd, stdin=subprocess.DEVNULL, check=False,
    )


@pytest.fixture(scope="session")
def launched(_no_leftover_processes):
    """Registry of NodeProcess objects; all are stopped (by process group) when the session ends,
    before the leftover-process check runs. Tests using it must be marked slow."""
    yield LAUNCHED
    for p in LAUNCHED:
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


def write_signed_run(tmp: Path, run_id: str, **sections) -> Path:
    """A signed manifest for the tiny base with these sections (plain dicts), by a fresh owner key:
    what the attack tests run their live nodes with."""
    from crypto.identity import Identity
    from nodes.models.pinning import base_digest
    from nodes.runconfig import base_probe
    from swarm.manifest import parse_manifest, sign_manifest, write_manifest

    owner = Identity.generate()
    manifest = parse_manifest({"run": {"id": run_id, "owner_key_id": owner.key_id},
                               "model": {"base": "tiny", "sha256": base_digest("tiny")}, **sections})
    manifest = dataclasses.replace(manifest, model=dataclasses.replace(manifest.model, probe=base_probe(manifest)))
    write_manifest(sign_manifest(manifest, owner), tmp / "run.toml")
    return tmp / "run.toml"


def node_events(node, kind: str) -> list[dict]:
    """A node's metrics events of one kind, read as the report reads them (typed, half lines skipped)."""
    from scenarios.report import read_events

    return [e for e in read_events(node.workdir / "metrics.jsonl")[0] if e["kind"] == kind]


def start_authorised_trainer(launched: list, tmp: Path, run_id: str, **sections):
    """A signed run whose manifest names one trainer key, and a real `swarm node --role trainer`
    with that key: the live target of the attack tests. Returns (run.toml, the trainer's NodeProcess)."""
    from crypto.identity import Identity
    from scenarios.processes import NodeProcess

    key = Identity.generate()
    key.save(tmp / "trainer.key")
    swarm = {**sections.pop("swarm", {}), "trainer_keys": [key.key_id]}
    run = write_signed_run(tmp, run_id, swarm=swarm, **sections)
    trainer = NodeProcess("trainer", tmp / "trainer", ["--run", str(run), "--key", str(tmp / "trainer.key"),
                                                       "--role", "trainer", "--threads", "1"]).start()
    launched.append(trainer)
    return run, trainer


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


def start_node(launched: list, out: Path, run: Path, name: str, role: str, engine: str, peers=(), console=None):
    """A real `swarm node` for a run prepared by `scenarios.simulate.prepare` (keys in OUT/keys,
    workdir OUT/nodes/NAME), registered for stopping at the end of the session."""
    from scenarios.processes import NodeProcess

    args = ["--run", str(run), "--key", str(out / "keys" / f"{name}.key"), "--role", role, "--engine", engine,
            "--threads", "1", *(["--initial-peers", *peers] if peers else [])]
    proc = NodeProcess(name, out / "nodes" / name, args, console=console).start()
    launched.append(proc)
    return proc


def save_lora(base_dir: Path, out: Path, seed: int, r: int = 8, alpha: int = 16, **lora) -> Path:
    """A random LoRA with non-zero B (a fresh PEFT LoRA has B = 0, i.e. is the base)."""
    from nodes.models.random_lora import save_random_lora

    return save_random_lora(base_dir, out, seed, r, alpha, **lora)


def llama_cpp_tokenize(gguf_path, text: str) -> list[int]:
    """llama.cpp's own tokenizer on a GGUF (no BOS), in a child process: an abort in llama.cpp
    (what our old GGUFs caused) fails the test instead of the test run."""
    import json as _json

    code = (f"import llama_cpp; m = llama_cpp.Llama(model_path={str(gguf_path)!r}, n_ctx=64, verbose=False); "
            f"print(m.tokenize({text.encode()!r}, add_bos=False))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return _json.loads(result.stdout.strip().splitlines()[-1])


def trust_root(run_id: str, digest: str, trainer_keys: tuple = (), open_training: bool = False):
    """A trust root for protocol tests without a manifest file: the run's name and digest, and who
    may train (everyone when `open_training`). The owner key is a fixed one nobody signs with."""
    from swarm.manifest import SignedManifest, parse_manifest
    from swarm.trust import TrustRoot

    manifest = parse_manifest({"run": {"id": run_id, "owner_key_id": "0" * 64},
                               "swarm": {"trainer_keys": list(trainer_keys), "open_training": open_training}})
    return TrustRoot(SignedManifest(manifest, digest, b"\0" * 32))


def assert_engines_agree(hf, lc, prompts: list[str], lora_dir: Path, what: str, max_new_tokens: int = 16) -> None:
    """llama.cpp reproduces every log-prob the transformers engine sampled (within 1e-3), on the
    base and with a random LoRA, and the distribution is a real one (not uniform)."""
    import numpy as np

    from nodes.engines import SamplingParams

    for adapter in (None, lora_dir):
        for eng in (hf, lc):
            eng.set_adapter(1 if adapter else None, adapter)
        flat = [s for g in hf.generate(prompts, 3, SamplingParams(max_new_tokens=max_new_tokens), seed=2) for s in g]
        scored = lc.score([s.prompt_ids for s in flat], [s.completion_ids for s in flat])
        err = max(abs(a - b) for s, r in zip(flat, scored) for a, b in zip(s.logprobs, r))
        print(f"{what}, adapter={adapter is not None}: max |dlogp| = {err:.2e}")
        assert err < 1e-3
        assert np.ptp([lp for s in flat for lp in s.logprobs]) > 1.0
