"""A trainer killed with SIGKILL and restarted on the same workdir and key resumes from its
checkpoint without counting any chunk twice; and an adapter version a rollout node fetched over
P2P loads with `PeftModel.from_pretrained` and reproduces the trainer's own logits.

One real run (module fixture): a trainer (transformers) and a rollout node (llama.cpp) as real
`swarm node` processes on 127.0.0.1, async mode, publish every 2 steps. The trainer is killed
after step 3 (so step 3's chunks, and whatever it had buffered, are lost with it), its process
group is reaped, a replay of a chunk it saw before the crash is planted in the rollout's spool,
and the trainer is started again with the same workdir and key until it finishes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from conftest import start_node, wait_for

from scenarios.processes import NodeProcess, _group_alive
from scenarios.scenario import NodeSpec, Scenario, Settings
from scenarios.simulate import prepare
from swarm.trust import TrustRoot

STEPS = 8
PUBLISH_EVERY = 2
KILL_AFTER_STEP = 3  # one step past the checkpoint at step 2: that step's consumption is lost
PERIOD = 1.0  # announce period: the rollout notices the trainer is back within seconds




def read_metrics(workdir: Path) -> list[dict]:
    """metrics.jsonl as a list; a line torn by the SIGKILL (no newline, glued to the next) is skipped."""
    out = []
    try:
        text = (workdir / "metrics.jsonl").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"kind": "torn", "raw": line})
    return out


def reconciles(acct: dict) -> bool:
    return acct["accepted"] == acct["consumed"] + sum(acct["dropped"].values()) + acct["buffered"]


def plant_replay(rollout_dir: Path, rollout_key: Path, chunk_id: str, manifest, version: int) -> Path:
    """A chunk reusing `chunk_id`, properly signed by the rollout's key, left in its spool: the rollout
    resends it to whoever trains next, exactly as it resends chunks spooled while no trainer answered."""
    from crypto.envelope import sign_envelope
    from crypto.identity import Identity
    from nodes.rollout import CHUNK_TYPE
    from swarm.chunk import TrajectoryChunk, TrajectoryGroup, encode_chunk

    identity = Identity.load(rollout_key)
    g = manifest.grpo
    chunk = TrajectoryChunk(
        run_id=manifest.run.id, chunk_id=chunk_id, producer_key_id=identity.key_id, policy_version=version,
        task=manifest.task.name, sampling={"temperature": g.temperature, "max_new_tokens": g.max_new_tokens},
        created_at=time.time(), groups=(TrajectoryGroup((5, 6, 7), ((8, 9),) * 2, ((-1.0, -1.0),) * 2),),
    )
    envelope = sign_envelope(CHUNK_TYPE, encode_chunk(chunk), [identity])
    spool = rollout_dir / "spool"
    spool.mkdir(exist_ok=True)
    # Named as the newest file, so the bounded spool (which drops its oldest) keeps it until it is sent.
    path = spool / f"{time.time_ns() + 10**15}.chunk"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(envelope)
    tmp.rename(path)
    return path


@pytest.fixture(scope="module")
def restarted_run(tmp_path_factory, launched):
    from swarm.manifest import load_manifest

    out = tmp_path_factory.mktemp("restart") / "run"
    scenario = Scenario(
        Settings(name="restart", steps=STEPS, publish_every=PUBLISH_EVERY, staleness=2, announce_period_s=PERIOD),
        (NodeSpec("trainer", role="trainer", engine="transformers"), NodeSpec("roll", role="rollout", engine="llamacpp")),
    )
    run, _ = prepare(scenario, out)
    signed = load_manifest(run)
    keys = out / "keys"

    def node(name: str, role: str, engine: str, peers: list[str]) -> NodeProcess:
        return start_node(launched, out, run, name, role, engine, peers)

    t0 = time.monotonic()
    trainer = node("trainer", "trainer", "transformers", [])
    trainer_maddr = trainer.wait_joined()
    rollout = node("roll", "rollout", "llamacpp", [trainer_maddr])
    rollout_maddr = rollout.wait_joined()
    tdir, rdir = trainer.workdir, rollout.workdir

    def steps_logged():
        return [e for e in read_metrics(tdir) if e.get("kind") == "step"]

    wait_for(lambda: any(e["step"] >= KILL_AFTER_STEP for e in steps_logged()), 300,
             f"the trainer to log step {KILL_AFTER_STEP}", [trainer, rollout], poll=0.1)

    # -- the crash: SIGKILL the node process alone, then reap what it leaves (DHT child, p2pd) --
    trainer.kill_hard()
    killed_at = time.monotonic()
    before = read_metrics(tdir)
    pgid = trainer.pid
    trainer.stop(grace=5)  # SIGTERM then SIGKILL to the group; the orphans are reaped by init shortly after
    wait_for(lambda: not _group_alive(pgid), 15, "the killed trainer's process group (DHT child, p2pd) to die")
    shutil.copyfile(tdir / "node.log", tdir / "node.before-crash.log")

    from nodes.trainer.checkpoint import load_checkpoint

    state = load_checkpoint(tdir / "checkpoint")
    assert state is not None, "no checkpoint on disk after the crash"
    ckpt_step, ckpt_meta = int(state[0]["meta.step"]), state[1]
    replayed_id = ckpt_meta["seen"][0]
    planted = plant_replay(rdir, keys / "roll.key", replayed_id, signed.manifest, ckpt_step)

    # -- restart: same workdir, same key, join through the rollout node (the old bootstrap is gone) --
    lines_before = len(before)
    trainer2 = node("trainer", "trainer", "transformers", [rollout_maddr])
    trainer2.wait_joined()
    restarted_at = time.monotonic()
    wait_for(lambda: any(e.get("kind") == "done" for e in read_metrics(tdir)[lines_before:]), 300,
             "the restarted trainer to finish", [trainer2, rollout], poll=0.3)
    final_version = STEPS
    # The rollout fetches the final version when it next looks at the trainer's record.
    wait_for(lambda: (rdir / "adapters" / f"v{final_version}" / "version.dsse").exists(), 60,
             f"the rollout node to fetch v{final_version}", [trainer2, rollout])
    wait_for(lambda: not planted.exists(), 30, "the rollout to resend its spooled chunks", [trainer2, rollout])
    after = read_metrics(tdir)[lines_before:]
    print(f"run: crash after {killed_at - t0:.0f}s, restart took {restarted_at - killed_at:.0f}s, "
          f"done after {time.monotonic() - t0:.0f}s in all")
    yield {
        "run": run, "signed": signed, "trainer": trainer2, "rollout": rollout, "tdir": tdir, "rdir": rdir,
        "keys": keys, "before": before, "after": after, "ckpt_step": ckpt_step, "ckpt_meta": ckpt_meta,
        "replayed_id": replayed_id, "final_version": final_version,
    }
    for proc in (trainer2, rollout):
        proc.stop(grace=5)


def trainer_records(d: dict) -> dict:
    """Every signed version record in the trainer's adapter store, verified with the trainer's key."""
    from crypto.identity import Identity
    from swarm.versions import verify_version

    trainer_key = Identity.load(d["keys"] / "trainer.key")
    trusted = {trainer_key.key_id: trainer_key.public_key}
    records = {}
    for vdir in sorted((d["tdir"] / "adapters").glob("v*")):
        record = verify_version((vdir / "version.dsse").read_bytes(), trusted_keys=trusted,
                                run_digest=d["signed"].digest)
        assert vdir.name == f"v{record.version}"
        assert hashlib.sha256((vdir / "adapter_model.safetensors").read_bytes()).hexdigest() == record.adapter_sha256
        records[record.version] = record
    return records


@pytest.mark.slow
def test_trainer_sigkill_restart_resumes_from_checkpoint_without_double_counting(restarted_run):
    d = restarted_run
    before, after, ckpt_step, meta = d["before"], d["after"], d["ckpt_step"], d["ckpt_meta"]

    # The checkpoint is the last published version (publish and checkpoint go together) and
    # holds accepted minus buffered, so it reconciles by itself.
    steps_before = [e["step"] for e in before if e.get("kind") == "step"]
    last_logged = steps_before[-1]
    assert last_logged >= KILL_AFTER_STEP
    # (a kill between publishing step s and logging it leaves a checkpoint one step ahead of the log)
    assert last_logged - last_logged % PUBLISH_EVERY <= ckpt_step <= last_logged + 1
    assert ckpt_step % PUBLISH_EVERY == 0 and ckpt_step >= PUBLISH_EVERY
    acct0 = meta["acct"]
    assert acct0["accepted"] == acct0["consumed"] + sum(acct0["dropped"].values())

    # It says it resumed, and its first step continues from the checkpoint, not from 0.
    log = (d["tdir"] / "node.log").read_text()
    assert f"resumed from checkpoint at step {ckpt_step}" in log, d["trainer"].log_tail(40)
    assert "taking over training" not in log
    steps_after = [e for e in after if e.get("kind") == "step"]
    assert [e["step"] for e in steps_after] == list(range(ckpt_step + 1, STEPS + 1))
    assert [e for e in after if e.get("kind") == "done"][-1]["steps"] == STEPS

    # Counters continue from the checkpoint's: the first step after the restart adds just its batch.
    accts = [e for e in after if e.get("kind") == "accounting"]
    step_accts = [after[i + 1] for i, e in enumerate(after) if e.get("kind") == "step"]  # each step's own line
    assert all(a.get("kind") == "accounting" for a in step_accts)
    first_batch = sum(steps_after[0]["lags"].values())
    assert step_accts[0]["consumed"] == acct0["consumed"] + first_batch
    assert step_accts[0]["accepted"] >= acct0["accepted"] + first_batch
    # Chunks accepted after the checkpoint (buffered, or consumed by the lost step) died with the
    # process: counted before the crash, absent after it.
    acct_crash = [e for e in before if e.get("kind") == "accounting"][-1]
    if ckpt_step < last_logged:  # the steps logged after the checkpoint consumed chunks that are now lost
        assert acct_crash["consumed"] > acct0["consumed"] and acct_crash["accepted"] > acct0["accepted"]
    print(f"checkpoint at step {ckpt_step}, crash after step {last_logged}: "
          f"{acct_crash['accepted'] - acct0['accepted']} accepted chunks lost with the process")
    last = accts[-1]
    assert reconciles(last), last
    assert all(reconciles(a) for a in accts)

    # No chunk is consumed twice: the signed records of every version name disjoint chunks, and
    # together exactly as many as the trainer counts consumed.
    records = trainer_records(d)
    assert sorted(records) == list(range(0, STEPS + 1, PUBLISH_EVERY))
    digests = [c.digest for r in records.values() for c in r.chunks]
    assert len(digests) == len(set(digests)), "a chunk digest appears in two version records"
    assert len(digests) == last["consumed"]
    assert records[0].chunks == ()
    for v in sorted(records)[1:]:  # one unbroken chain across the crash
        parent = records[v - PUBLISH_EVERY]
        assert (records[v].parent_version, records[v].parent_sha256) == (parent.version, parent.adapter_sha256)
    # ... and the provenance log holds exactly that chain: one entry per version, in order.
    from swarm.provenance.log import ProvenanceLog

    log = ProvenanceLog(d["tdir"] / "provenance", TrustRoot(d["signed"]))
    assert [r.version for r in log.records] == sorted(records)

    # A chunk id the trainer saw before the crash, resent from the rollout's spool, is refused as
    # a replay (the checkpoint keeps the seen ids).
    assert last["rejected"].get("replay", 0) >= 1, last
    assert "trainer refused our chunk: replay" in (d["rdir"] / "node.log").read_text()


@pytest.mark.slow
def test_version_fetched_over_p2p_loads_with_peft_and_matches_trainer_logits(restarted_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nodes.models import resolve_base
    from nodes.tasks import make_task
    from nodes.trainer.checkpoint import load_checkpoint
    from nodes.trainer.policy import Policy, PolicyConfig
    from swarm.adapters.files import load_version

    d = restarted_run
    m = d["signed"].manifest
    v = d["final_version"]
    fetched, own = d["rdir"] / "adapters" / f"v{v}", d["tdir"] / "adapters" / f"v{v}"
    record = trainer_records(d)[v]

    # The rollout's copy is the trainer's, byte for byte, and matches the signed digest.
    for name in ("adapter_model.safetensors", "adapter_config.json", "version.dsse"):
        assert (fetched / name).read_bytes() == (own / name).read_bytes(), name
    assert hashlib.sha256((fetched / "adapter_model.safetensors").read_bytes()).hexdigest() == record.adapter_sha256

    base_dir = resolve_base(m.model.base, m.model.sha256)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    prompts = make_task(m.task.name, m.task.options).prompts(123)
    texts = [next(prompts).text for _ in range(4)]
    rows = [tokenizer(t)["input_ids"] for t in texts]

    def logits_of(model) -> list[torch.Tensor]:
        with torch.no_grad():
            return [model(input_ids=torch.tensor([r])).logits[0] for r in rows]

    def max_diff(a, b) -> float:
        return max(float((x - y).abs().max()) for x, y in zip(a, b))

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    bare = logits_of(base)
    peft_model = PeftModel.from_pretrained(base, str(fetched)).eval()
    got = logits_of(peft_model)

    config = PolicyConfig(r=m.lora.r, alpha=m.lora.alpha, targets=tuple(m.lora.targets), lr=m.grpo.lr,
                          grad_clip=m.grpo.grad_clip, clip=m.grpo.clip, kl_coef=m.grpo.kl_coef,
                          temperature=m.grpo.temperature)
    policy = Policy(base_dir, config, seed=m.run.seed, threads=1)
    state = load_checkpoint(d["tdir"] / "checkpoint")  # the trainer's own training state, at the last step
    assert int(state[0]["meta.step"]) == v
    policy.load_state_dict(state[0])
    from_checkpoint = logits_of(policy.model)
    policy.set_adapter_tensors(load_version(own, record.adapter_sha256))  # the trainer's published copy
    from_published = logits_of(policy.model)

    print(f"v{v}: |peft - trainer checkpoint| {max_diff(got, from_checkpoint):.2e}, |peft - trainer copy| "
          f"{max_diff(got, from_published):.2e}, |peft - bare base| {max_diff(got, bare):.2e}")
    assert max_diff(got, from_checkpoint) < 1e-4
    assert max_diff(got, from_published) < 1e-4
    assert max_diff(got, bare) > 1e-3, "the trained adapter does not change the logits: the test proves nothing"


def log_of(workdir: Path, signed):
    from swarm.provenance.log import ProvenanceLog

    return ProvenanceLog(workdir / "provenance", TrustRoot(signed))


def _trainer_in_process(workdir: Path, signed, identity, store=None, log=None, transport=None, seen=()):
    """A TrainerWorker on `workdir` of a node that never joins (nothing here needs peers): a
    restart is a new one. `store`: the node's adapter store as it is when it becomes trainer;
    `transport` and `seen` (the records its view holds, as the DHT would give them), for one that
    asks peers."""
    from nodes.context import WorkerContext
    from nodes.metrics import MetricsLog
    from nodes.node import Node, NodeOptions
    from nodes.trainer.worker import TrainerWorker
    from swarm.adapters.store import AdapterStore
    from swarm.membership import SwarmView
    from swarm.records import Hardware

    node = Node(signed, identity, NodeOptions(listen=[], workdir=workdir), Hardware(torch=True), 1.0)
    node.view = SwarmView(records=list(seen))
    ctx = WorkerContext(signed=signed, identity=identity, workdir=workdir, swarm=node, transport=transport,
                        store=store or AdapterStore(workdir / "adapters", signed.digest),
                        log=log or log_of(workdir, signed),
                        metrics=MetricsLog(workdir / "metrics.jsonl"), threads=1)
    return TrainerWorker(ctx)


SAMPLES = [((5, 6, 7), (8, 9)), ((5, 6, 7), (9, 8))]
OLD_LOGPROBS = [[-1.0, -1.0], [-1.0, -1.0]]


def _two_trainer_run(tmp_path: Path, name: str):
    """A prepared run whose nodes a and b may both train: (signed manifest, a's key, b's key)."""
    from crypto.identity import Identity
    from swarm.manifest import load_manifest

    scenario = Scenario(Settings(name=name, steps=8, publish_every=2),
                        (NodeSpec("a", role="trainer", engine="transformers"),
                         NodeSpec("b", role="trainer", engine="transformers")))
    run, _ = prepare(scenario, tmp_path / "run")
    keys = (Identity.load(tmp_path / "run" / "keys" / f"{n}.key") for n in ("a", "b"))
    return (load_manifest(run), *keys)


def test_a_trainer_whose_checkpoint_the_swarm_has_passed_continues_from_the_newer_version(tmp_path):
    """Trainer A checkpoints at v2 and dies; B takes over and publishes v4; A rejoins (as a rollout it
    verified v4) and is trainer again: it must continue from v4, not fork a second v3, v4... from v2."""
    from nodes.trainer.checkpoint import load_checkpoint
    from swarm.provenance.sync import LogRequest, apply_reply, log_reply

    signed, a_id, b_id = _two_trainer_run(tmp_path, "passed")

    def train_and_publish(worker, steps: int) -> None:
        for _ in range(steps):
            worker.policy.train_step(SAMPLES, [[1.0, 0.0]], OLD_LOGPROBS)
        worker._publish()

    def handed(src, dst, dst_log, version: int) -> None:  # what the `log` and `adapter` protocols do
        assert apply_reply(dst_log, log_reply(src.ctx.log, LogRequest(have=dst_log.size).encode()))
        dst.accept(src.store.bundle(version), want_version=version, log=dst_log)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _trainer_in_process(tmp_path / "a", signed, a_id)
    a.seen.add("c" * 32)
    train_and_publish(a, 2)
    assert int(load_checkpoint(tmp_path / "a" / "checkpoint")[0]["meta.step"]) == 2

    from swarm.adapters.store import AdapterStore

    b_store, b_log = AdapterStore(tmp_path / "b" / "adapters", signed.digest), log_of(tmp_path / "b", signed)
    for v in (0, 2):
        handed(a, b_store, b_log, v)
    b = _trainer_in_process(tmp_path / "b", signed, b_id, b_store, b_log)
    assert b.step == 2  # failover from A's v2
    train_and_publish(b, 2)
    v4 = b.store.latest()
    assert (v4.version, v4.trainer_key_id) == (4, b_id.key_id)

    a_store, a_log = AdapterStore(tmp_path / "a" / "adapters", signed.digest), log_of(tmp_path / "a", signed)
    a_store.load(a_log)  # A's own v0, v2 on disk, with their entries in A's log ...
    handed(b, a_store, a_log, 4)  # ... and B's v4, verified while A was a rollout
    a2 = _trainer_in_process(tmp_path / "a", signed, a_id, a_store, a_log)
    assert a2.step == 4 and a2.store.latest() == v4
    assert "c" * 32 in a2.seen  # replay protection survives the switch
    train_and_publish(a2, 2)
    v6 = a2.store.latest()
    assert (v6.version, v6.parent_version, v6.parent_sha256) == (6, 4, v4.adapter_sha256)
    assert [r.version for r in a2.ctx.log.records] == [0, 2, 4, 6]  # one log across both trainers
    assert {r.trainer_key_id for r in a2.ctx.log.records} == {a_id.key_id, b_id.key_id}


def test_a_successor_whose_head_files_died_publishes_the_next_version_at_once(tmp_path):
    """A follower holds the log up to A's v4 but only v2's files when A dies (v4's files died with
    it). It continues from v2's weights as v5, the next version of the same chain, and publishes v5
    at once: before, it sat at step 4 serving v2 and refused every v2 chunk as no longer held, while
    the rollouts waited for a version that needed their chunks first (a clean-clone CI run stalled)."""
    from swarm.adapters.files import load_version
    from swarm.adapters.store import AdapterStore
    from swarm.provenance.sync import LogRequest, apply_reply, log_reply

    signed, a_id, b_id = _two_trainer_run(tmp_path, "lostfiles")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _trainer_in_process(tmp_path / "a", signed, a_id)
    for _ in range(2):
        for _ in range(2):
            a.policy.train_step(SAMPLES, [[1.0, 0.0]], OLD_LOGPROBS)
        a._publish()
    assert a.store.latest().version == 4

    import torch

    b_store, b_log = AdapterStore(tmp_path / "b" / "adapters", signed.digest), log_of(tmp_path / "b", signed)
    assert apply_reply(b_log, log_reply(a.ctx.log, LogRequest(have=0).encode()))  # entries up to v4 ...
    v2 = None
    for v in (0, 2):
        v2 = b_store.accept(a.store.bundle(v), want_version=v, log=b_log)  # ... files up to v2
    b = _trainer_in_process(tmp_path / "b", signed, b_id, b_store, b_log)

    v5 = b.store.latest()
    assert (v5.version, v5.parent_version, v5.trainer_key_id) == (5, 4, b_id.key_id)
    assert b.step == 5 and b.status().version == 5  # what rollouts are told to fetch
    weights = load_version(b_store.path(5), v5.adapter_sha256)
    assert all(torch.equal(weights[k], t) for k, t in load_version(b_store.path(2), v2.adapter_sha256).items())
    assert 2 in b.versions  # the rollouts' in-flight v2 chunks are still checked, not refused as stale
    assert [r.version for r in b.ctx.log.records] == [0, 2, 4, 5]


def test_a_successor_holding_no_weights_continues_from_the_newest_version_a_peer_serves(tmp_path):
    """As above, but the successor holds no version's files at all (it joined on a full disk, so
    stored nothing): v4's files died with A, and a rollout serves v2 over the `adapter` protocol.
    The successor fetches v2 (verified against its log) and continues from it as v5; before, it
    failed the trainer role for good ("no peer served v4")."""
    from types import SimpleNamespace

    from crypto.identity import Identity
    from swarm.adapters.store import AdapterStore
    from swarm.messages import AdapterRequest, decode
    from swarm.provenance.sync import LogRequest, apply_reply, log_reply
    from swarm.transport import MemoryHub, make_transport

    signed, a_id, b_id = _two_trainer_run(tmp_path, "noweights")
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    a = _trainer_in_process(tmp_path / "a", signed, a_id)
    for _ in range(2):
        for _ in range(2):
            a.policy.train_step(SAMPLES, [[1.0, 0.0]], OLD_LOGPROBS)
        a._publish()

    hub = MemoryHub()
    c_store, c_log = AdapterStore(tmp_path / "c" / "adapters", signed.digest), log_of(tmp_path / "c", signed)
    assert apply_reply(c_log, log_reply(a.ctx.log, LogRequest(have=0).encode()))
    for v in (0, 2):
        c_store.accept(a.store.bundle(v), want_version=v, log=c_log)  # the rollout fetched up to v2
    rollout = make_transport("memory", hub=hub, peer_id="C")
    rollout.serve(f"{signed.namespace}/adapter", lambda _peer, data: c_store.bundle(decode(AdapterRequest, data).version)
                  or b"", max_request=AdapterRequest.MAX_BYTES)
    c_id = Identity.generate()
    c_record = SimpleNamespace(peer_id="C", adapter_version=2, key_id=c_id.key_id, public_key=c_id.public_key.hex())

    b_log = log_of(tmp_path / "b", signed)
    assert apply_reply(b_log, log_reply(a.ctx.log, LogRequest(have=0).encode()))  # entries up to v4, no files
    b = _trainer_in_process(tmp_path / "b", signed, b_id, log=b_log,
                            transport=make_transport("memory", hub=hub, peer_id="B"), seen=[c_record])
    v5 = b.store.latest()
    assert (v5.version, v5.parent_version, v5.trainer_key_id) == (5, 4, b_id.key_id)
    assert b.step == 5 and 2 in b.versions and [r.version for r in b.ctx.log.records] == [0, 2, 4, 5]
    rollout.close()


@pytest.mark.parametrize("killed", ["before_version_write", "after_version_write"])
def test_kill_around_publication_leaves_one_consistent_version(tmp_path, killed):
    """The narrow window of a publication: the checkpoint is written first, then the version. A kill
    between the two re-publishes the version on restart (same weights, same chunks, same parent);
    a kill after both resumes without re-publishing and without carrying the chunks over again."""
    from crypto.identity import Identity
    from nodes.trainer.checkpoint import load_checkpoint
    from swarm.adapters.files import adapter_bytes
    from swarm.manifest import load_manifest
    from swarm.versions import ChunkAttestation

    scenario = Scenario(Settings(name="window", steps=4, publish_every=2),
                        (NodeSpec("trainer", role="trainer", engine="transformers"),))
    run, _ = prepare(scenario, tmp_path / "run")
    signed, identity = load_manifest(run), Identity.load(tmp_path / "run" / "keys" / "trainer.key")
    workdir = tmp_path / "trainer"
    workdir.mkdir()

    worker = _trainer_in_process(workdir, signed, identity)
    assert worker.store.latest().version == 0
    for _ in range(2):
        worker.policy.train_step(SAMPLES, [[1.0, 0.0]], OLD_LOGPROBS)
    consumed = [ChunkAttestation(*(hashlib.sha256(f"{what}{i}".encode()).hexdigest()
                                   for what in ("chunk", "producer", "envelope"))) for i in range(3)]
    worker.consumed = list(consumed)
    worker.acct["accepted"] = worker.acct["consumed"] = len(consumed)
    if killed == "before_version_write":
        def crash(*_args, **_kw):
            raise RuntimeError("SIGKILL")
        worker.store.put = crash
        with pytest.raises(RuntimeError):
            worker._publish()
        assert not (workdir / "adapters" / "v2").exists()
    else:
        worker._publish()
    expected_sha = hashlib.sha256(adapter_bytes(worker.policy.adapter_tensors())).hexdigest()
    assert int(load_checkpoint(workdir / "checkpoint")[0]["meta.step"]) == 2
    del worker

    restarted = _trainer_in_process(workdir, signed, identity)
    assert restarted.step == 2
    assert restarted.consumed == []  # named by v2 on disk now, not to be named again by v4
    records = trainer_records({"keys": tmp_path / "run" / "keys", "tdir": workdir, "signed": signed})
    assert sorted(records) == [0, 2]
    v2 = records[2]
    assert list(v2.chunks) == consumed
    assert (v2.parent_version, v2.parent_sha256) == (0, records[0].adapter_sha256)
    assert v2.adapter_sha256 == expected_sha
    assert restarted.store.latest() == v2  # the record on disk, not a re-made one
    assert restarted.acct["consumed"] == len(consumed)
