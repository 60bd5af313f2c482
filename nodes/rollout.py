"""The rollout worker: hold the newest adapter, generate groups, sign, seal, send.

Each round: ask the trainer (the node the role function names, never a self-declared one) how
many groups it can use and which version it trains; switch the engine to the newest version we
hold; and generate only when `swarm.sync.may_generate` says so (async: while the trainer wants
groups; sequential: also only with the very version it trains). Chunks are signed, sealed to the
current trainers and sent to one; with no trainer reachable they wait in the spool. A chunk a full
disk will not take waits in memory instead, and nothing new is generated until it is delivered or
spooled (`nodes.disk`: the node's state says it paused).

A second thread follows the trainer: it brings the provenance log up to date (verifying and
countersigning it, as a witness) and fetches each newer version, so neither the network round
trips nor the verification stand in the way of generating.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time

from crypto.envelope import sign_envelope
from crypto.sealing import SealContext, seal
from nodes.context import WorkerContext
from nodes.disk import is_full
from nodes.logs import Throttled
from nodes.metrics import AdoptEvent, ChunkEvent
from nodes.spool import ChunkSpool
from swarm.adapters.fetch import fetch_version
from swarm.adapters.peers import PeerFailures, rank_holders
from swarm.chunk import CHUNK_TYPE, TrajectoryChunk, TrajectoryGroup, encode_chunk, new_chunk_id
from swarm.messages import StatusRequest, Verdict, decode
from swarm.provenance.witness import witness_log
from swarm.rejections import RETRY_LATER, Reason, Rejection
from swarm.sync import may_generate
from swarm.transport import TransportError

log = logging.getLogger("echo_swarm.rollout")
repeating = Throttled(log)
POLL_S = 0.05
"""How long a rollout waits before asking again when the trainer has enough data."""
SPOOL_FULL_WAIT_S = 1.0
LEARN_EVERY_S = 5.0
"""Pause after spooling into a full spool: no trainer for a while, refresh the spool slowly."""


def make_rollout_engine(ctx: WorkerContext, engine_kind: str):
    """(engine, base format): the manifest's pinned base, or the node's `--base-gguf` copy of it once
    it reproduces the manifest's probe within its format's tolerance (BaseError otherwise)."""
    from nodes.engines import make_engine
    from nodes.engines.formats import gguf_format
    from nodes.models import BaseError, resolve_base
    from nodes.models.probe import check_probe

    m = ctx.manifest
    if ctx.base_gguf is None:
        return make_engine(engine_kind, resolve_base(m.model.base, m.model.sha256), threads=ctx.threads), "f32"
    try:
        fmt = gguf_format(ctx.base_gguf)
    except ValueError as e:
        raise BaseError(str(e)) from None
    try:  # prompts are encoded with the base's own tokenizer when it is here, else the GGUF's copy
        tokenizer = resolve_base(m.model.base, m.model.sha256)
    except BaseError:
        tokenizer = None
    engine = make_engine("llamacpp", str(ctx.base_gguf), threads=ctx.threads, tokenizer=tokenizer)
    mean, worst = check_probe(engine, m.model.probe, fmt, f"--base-gguf {ctx.base_gguf}")
    log.info("base GGUF %s (%s) matches the manifest's probe: mean %.4f, worst %.4f", ctx.base_gguf, fmt, mean, worst)
    return engine, fmt


class RolloutWorker:
    def __init__(self, ctx: WorkerContext, engine_kind: str):
        from nodes.tasks import make_task

        m = ctx.manifest
        self.ctx = ctx
        self.engine, self.weights = make_rollout_engine(ctx, engine_kind)
        self.task = make_task(m.task.name, m.task.options)
        self.seed = int(hashlib.sha256(f"{m.run.seed}/{ctx.identity.key_id}".encode()).hexdigest()[:8], 16)
        self.prompts = self.task.prompts(self.seed)
        self.spool = ChunkSpool(ctx.workdir / "spool")
        self.failures = PeerFailures()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rollout", daemon=True)
        self.follower = threading.Thread(target=self._follow, name="rollout-follow", daemon=True)
        self.wake = threading.Event()  # set when the trainer may have a newer version
        self.counter = 0
        self.engine_version = -1  # the adapter version the engine runs
        self.witness_s = 0.0  # witnessing CPU time not yet reported in a ChunkEvent
        self.witness_lock = threading.Lock()
        self.asked_at: dict[str, float] = {}  # peer -> when we last asked its log (see _learn_from)
        self.behind: tuple[int, str | None] = (-1, None)  # the last `told` that was behind us, and checked
        self.need = 1  # groups the trainer can still use, as of its last reply
        self.told: tuple[int, str | None] = (-1, None)  # (trainer's version, its peer id) as of its last reply
        self.unspooled: bytes | None = None  # a chunk the full disk would not take: kept here, retried

    def start(self) -> None:
        self.thread.start()
        self.follower.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        self.thread.join(timeout=5)
        self.follower.join(timeout=5)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                if not self._once():
                    self.stop_event.wait(POLL_S)
            except Exception:
                log.exception("rollout iteration failed; retrying")
                self.stop_event.wait(1.0)

    def _follow(self) -> None:
        while not self.stop_event.is_set():
            self.wake.wait(POLL_S * 4)
            self.wake.clear()
            try:
                if self._fetch_newest(self.ctx.swarm.trainers()):
                    self.ctx.disk.ok("adapters")
            except Exception as e:
                if is_full(e):  # the version (or its log entry) waits for space: fetched again then
                    self.ctx.disk.full("adapters", e.filename or self.ctx.store.root, e)
                    self.ctx.disk.wait(self.stop_event)
                    continue
                log.exception("following the trainer failed; retrying")
                self.stop_event.wait(1.0)

    def _once(self) -> bool:
        """One chunk if the trainer can use one; False when there is nothing to do yet."""
        trainers = self.ctx.swarm.trainers()
        if trainers and self.need <= 0:
            self._ask_status(trainers)
        self.wake.set()  # the follower checks for a newer version meanwhile
        held = self._adopt()
        if held is None:
            return False
        if self.unspooled is not None and not self._keep_unspooled(trainers):
            return False
        if trainers and not self.spool.flush(lambda envelope: self._send(envelope, trainers)):
            return False
        sync = self.ctx.manifest.sync
        if trainers and not may_generate(held.version, self.told[0], self.need, sync.mode, sync.staleness):
            self.need = 0  # ask the trainer again before generating
            return False
        started = time.perf_counter()
        envelope, samples, tokens, gen_s = self._generate(held.version)
        sent = self._send(envelope, trainers) if trainers else False
        spool_full = not sent and self._keep(envelope)
        self.ctx.metrics.write(ChunkEvent(version=held.version, samples=samples, tokens=tokens, gen_s=gen_s,
                                          busy_s=time.perf_counter() - started, engine=self.engine.name, sent=sent,
                                          witness_s=round(self._take_witness_s(), 6),
                                          spool_dropped=int(spool_full)))
        if spool_full:
            self.stop_event.wait(SPOOL_FULL_WAIT_S)
        return True

    def _keep(self, envelope: bytes) -> bool:
        """Spool a chunk no trainer took; True if it pushed the oldest out of a full spool. One the
        full disk refuses is kept in memory (`unspooled`) and retried before anything new is made."""
        try:
            dropped = self.spool.put(envelope)
        except OSError as e:
            self.ctx.disk.full("spool", self.spool.dir, e)  # re-raises anything but a full disk
            self.unspooled = envelope
            return False
        self.ctx.disk.ok("spool")
        return dropped

    def _keep_unspooled(self, trainers) -> bool:
        """Deliver or spool the chunk the full disk refused; True once it is (generating goes on),
        else wait the disk's backoff."""
        envelope, self.unspooled = self.unspooled, None
        if trainers and self._send(envelope, trainers):
            self.ctx.disk.ok("spool")  # it needs the disk no longer
            return True
        self._keep(envelope)
        if self.unspooled is None:
            return True
        self.ctx.disk.wait(self.stop_event)
        return False

    def _fetch_newest(self, trainers) -> bool:
        """Fetch the newest version a trainer announced (reply or DHT record), if newer than ours;
        False if we still lack it."""
        held = self.ctx.store.latest()
        told = self.told
        newest = max([r.trainer.version for r in trainers] + [told[0]])
        if newest > (held.version if held else -1):
            return self._fetch(newest, trainers)
        elif held is not None and told[1] is not None and told[0] < held.version and told != self.behind:
            # The trainer is behind us: was our newest version revoked (a manifest update we
            # lack)? Its log reply carries the owner's updates. Asked once per such reply.
            self.behind = told
            self._witness([told[1]])
        return True

    def _adopt(self):
        """Switch the engine to the newest version we hold, also when the one it runs went away
        (a manifest update revoked its signer): never generate with weights nobody vouches for."""
        store = self.ctx.store
        held = store.latest()
        if held is not None and held.version != self.engine_version:
            self.engine.set_adapter(held.version, store.path(held.version))
            self.engine_version = held.version
            self.ctx.swarm.advertise(adapter_version=held.version)
            self.ctx.metrics.write(AdoptEvent(version=held.version))
            log.info("now generating with adapter v%d", held.version)
        return held

    def _fetch(self, version: int, trainers) -> bool:
        """The version's entry first (the log, verified and witnessed), then its files."""
        peers = rank_holders(version, self.ctx.swarm.holders(version), trainers=[r.peer_id for r in trainers],
                             first=self.told[1], failures=self.failures)
        if self.ctx.log.index_of(version) is None:
            self.ctx.log.learn_keys({r.key_id: bytes.fromhex(r.public_key) for r in trainers})
            if not self._witness(peers):
                return False
        return fetch_version(self.ctx.transport, self.ctx.protocol("adapter"), self.ctx.store, version, peers,
                             log=self.ctx.log, failures=self.failures, gguf=self.engine.name == "llamacpp")

    def _witness(self, peers: list[str]) -> bool:
        started = time.thread_time()  # CPU: what witnessing costs the node, network waits aside
        try:
            return witness_log(self.ctx, peers, self.failures, wait=False)
        finally:
            with self.witness_lock:
                self.witness_s += time.thread_time() - started

    def _learn_from(self, peer: str) -> None:
        """The node our roles name trainer says it is not: it may know a manifest update we lack
        (one that moved training elsewhere). Its log reply carries the owner's updates; asked at
        most once per LEARN_EVERY_S per peer."""
        now = time.monotonic()
        if now - self.asked_at.get(peer, -LEARN_EVERY_S) >= LEARN_EVERY_S:
            self.asked_at[peer] = now
            self._witness([peer])

    def _take_witness_s(self) -> float:
        with self.witness_lock:
            spent, self.witness_s = self.witness_s, 0.0
        return spent

    def _round_robin(self, trainers) -> list:
        k = self.counter % len(trainers)
        return trainers[k:] + trainers[:k]

    def _ask(self, trainer, protocol: str, data: bytes, timeout: float) -> Verdict:
        # The verdict comes only after the trainer scored the chunk: no separate no-progress bound.
        reply = self.ctx.transport.request(trainer.peer_id, self.ctx.protocol(protocol), data,
                                           max_response=Verdict.MAX_BYTES, timeout=timeout, progress_timeout=timeout)
        verdict = decode(Verdict, reply)
        if verdict.reason != Reason.NOT_TRAINER:  # e.g. restarting, still loading: tells us nothing
            self.need, self.told = verdict.need, (verdict.version, trainer.peer_id)
        return verdict

    def _ask_status(self, trainers) -> None:
        """Pull the trainer's version and how many groups it can use: a tiny request, so rollouts
        can wait for demand without generating chunks that would only go stale."""
        for trainer in self._round_robin(trainers):
            try:
                self._ask(trainer, "status", StatusRequest().encode(), timeout=10)
                return
            except (TransportError, Rejection) as e:
                repeating.info(f"status/{trainer.peer_id}", "no status from trainer %s: %s", trainer.peer_id[-8:], e)

    def _generate(self, version: int) -> tuple[bytes, int, int, float]:
        from nodes.engines.base import SamplingParams

        m = self.ctx.manifest
        g = m.grpo
        prompts = [next(self.prompts).text for _ in range(g.prompts_per_chunk)]
        params = SamplingParams(temperature=g.temperature, max_new_tokens=g.max_new_tokens)
        self.counter += 1
        started = time.perf_counter()
        groups = self.engine.generate(prompts, g.group_size, params, seed=(self.seed + self.counter) % 2**31,
                                      chat_template=self.task.chat_template)
        tokens = sum(len(s.completion_ids) for group in groups for s in group)
        gen_s = time.perf_counter() - started
        if self.ctx.max_tok_s:  # a slower device: take as long as it would (a stop cuts the wait, not the count)
            self.stop_event.wait(max(0.0, tokens / self.ctx.max_tok_s - gen_s))
            gen_s = max(time.perf_counter() - started, tokens / self.ctx.max_tok_s)
        chunk = TrajectoryChunk(
            run_id=m.run.id, chunk_id=new_chunk_id(), producer_key_id=self.ctx.identity.key_id,
            policy_version=version, task=self.task.name,
            sampling={"temperature": g.temperature, "max_new_tokens": g.max_new_tokens, "weights": self.weights},
            created_at=time.time(),
            groups=tuple(TrajectoryGroup.from_samples(s) for s in groups),
        )
        envelope = sign_envelope(CHUNK_TYPE, encode_chunk(chunk), [self.ctx.identity])
        return envelope, chunk.num_samples, tokens, gen_s

    def _send(self, envelope: bytes, trainers) -> bool:
        """Seal to every current trainer, deliver to one (round robin); True once one took it."""
        recipients = {r.key_id: bytes.fromhex(r.hpke_keys["x25519"]) for r in trainers if "x25519" in r.hpke_keys}
        context = SealContext(self.ctx.manifest.run.id, self.ctx.identity.key_id, new_chunk_id())
        blob = seal(envelope, recipients, context)
        for trainer in self._round_robin(trainers):
            try:
                verdict = self._ask(trainer, "chunks", blob, timeout=30)
            except (TransportError, Rejection) as e:
                repeating.info(f"deliver/{trainer.peer_id}", "could not deliver to trainer %s: %s", trainer.peer_id[-8:],
                               e)
                continue
            if verdict.reason == Reason.NOT_TRAINER:
                self._learn_from(trainer.peer_id)
            if verdict.reason in RETRY_LATER:
                repeating.info(f"busy/{trainer.peer_id}/{verdict.reason}", "trainer %s is not taking chunks now (%s)",
                               trainer.peer_id[-8:], verdict.reason)
                continue  # not delivered: keep it
            if not verdict.ok:
                repeating.info(f"refused/{verdict.reason}", "trainer refused our chunk: %s", verdict.reason)
            return True  # delivered; a refusal (e.g. stale) is final, resending would not help
        return False
