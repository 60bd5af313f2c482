"""The rollout worker: hold the newest adapter, generate groups, sign, seal, send.

Async mode streams chunks continuously, tagged with the version used; sequential mode
generates only with the trainer's current version and only while the trainer still needs
groups for its step. When no trainer is reachable, signed chunks are spooled to disk (bounded)
and sealed at send time to whoever trains then: nothing is lost, staleness is the trainer's call.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from crypto.envelope import sign_envelope
from crypto.sealing import SealContext, seal
from nodes.adapter_store import MAX_BUNDLE_BYTES, AdapterStore
from nodes.metrics import MetricsLog
from nodes.trajectory import TrajectoryChunk, TrajectoryGroup, encode_chunk, new_chunk_id
from swarm.transport import TransportError
from swarm.versions import VersionError

log = logging.getLogger("echo_swarm.rollout")
CHUNK_TYPE = "application/vnd.echo-swarm.trajectory-chunk"
PROMPTS_PER_CHUNK = 4
SPOOL_LIMIT = 64
POLL_S = 0.05
"""How long a rollout waits before asking again when the trainer has enough data."""
SPOOL_FULL_WAIT_S = 1.0
"""Pause after spooling into a full spool: no trainer for a while, refresh the spool slowly."""


def trainer_keys(node) -> dict[str, bytes]:
    """Keys whose adapter versions we accept: nodes in the trainer role that may train."""
    m = node.signed.manifest
    return {r.key_id: bytes.fromhex(r.public_key) for r in node.view.records
            if r.role == "trainer" and m.trainer_allowed(r.key_id)}


def fetch_version(node, transport, store: AdapterStore, version: int, first: str | None = None,
                  gguf: bool = False) -> bool:
    """Get `version` from `first` (the trainer that told us of it) or any peer whose record says it
    holds it, trainers first; verify before keeping it. Records lag by up to an announce period,
    so the peer that just named the version is asked before them."""
    trainers = {r.peer_id for r in node.view.records if r.role == "trainer"}
    holders = sorted((r.peer_id for r in node.view.records if r.peer_id not in (node.peer_id, first)
                      and r.adapter_version >= version), key=lambda p: (p not in trainers, p))
    for peer in ([first] if first else []) + holders:
        try:
            data = transport.request(peer, f"{node.signed.namespace}/adapter",
                                     fetch_request(store, version, gguf), max_response=MAX_BUNDLE_BYTES,
                                     timeout=30)
            store.accept(data, want_version=version, trusted_keys=trainer_keys(node))
            return True
        except (TransportError, VersionError) as e:
            log.warning("adapter v%d from %s refused: %s", version, peer[-8:], e)
    return False


def fetch_request(store: AdapterStore, version: int, gguf: bool) -> bytes:
    """Ask for `version`; naming the version we hold lets the peer send just the delta."""
    held = store.latest()
    return json.dumps({"version": version, "have": held.version if held else -1, "gguf": gguf}).encode()


class RolloutWorker:
    def __init__(self, node, transport, store: AdapterStore, metrics: MetricsLog, engine_kind: str,
                 threads: int | None):
        from nodes.engines import make_engine
        from nodes.models import resolve_base
        from nodes.tasks import make_task

        m = node.signed.manifest
        self.node, self.transport, self.store, self.metrics = node, transport, store, metrics
        self.engine = make_engine(engine_kind, resolve_base(m.model.base, m.model.sha256), threads=threads)
        self.task = make_task(m.task.name, m.task.options)
        seed = int(hashlib.sha256(f"{m.run.seed}/{node.identity.key_id}".encode()).hexdigest()[:8], 16)
        self.seed = seed
        self.prompts = self.task.prompts(seed)
        self.spool = Path(node.options.workdir) / "spool"
        self.spool.mkdir(exist_ok=True)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rollout", daemon=True)
        self.counter = 0
        self.need = 1  # groups the trainer can still use, as of its last reply
        self.told: tuple[int, str | None] = (-1, None)  # (trainer's version, its peer id) as of its last reply

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                if not self._once():
                    self.stop_event.wait(POLL_S)
            except Exception:
                log.exception("rollout iteration failed; retrying")
                self.stop_event.wait(1.0)

    def _once(self) -> bool:
        """One chunk if the trainer can use one; False when there is nothing to do yet."""
        sequential = self.node.signed.manifest.sync.mode == "sequential"
        trainers = [r for r in self.node.view.records if r.role == "trainer" and r.peer_id != self.node.peer_id]
        if trainers and self.need <= 0:
            self._ask_status(trainers)
        held = self._adopt_newest(trainers)
        if held is None:
            return False
        if trainers and self._flush_spool(trainers) is False:
            return False
        if trainers and sequential and self.told[0] != held.version:
            self.need = 0  # on-policy: generate only with the version the trainer trains; ask it again
        if trainers and self.need <= 0:
            return False  # the trainer has enough for now
        started = time.perf_counter()
        envelope, samples, tokens, gen_s = self._generate(held.version)
        sent = self._send(envelope, trainers) if trainers else False
        spool_full = not sent and self._spool(envelope)
        self.metrics.write("chunk", version=held.version, samples=samples, tokens=tokens, gen_s=gen_s,
                           busy_s=time.perf_counter() - started, engine=self.engine.name, sent=sent)
        if spool_full:
            self.stop_event.wait(SPOOL_FULL_WAIT_S)
        return True

    def _adopt_newest(self, trainers):
        """Switch the engine to the newest version a trainer announced (reply or DHT record)."""
        held = self.store.latest()
        newest = max([r.extra.get("version", -1) for r in trainers] + [self.told[0]])
        if newest > (held.version if held else -1) and fetch_version(
                self.node, self.transport, self.store, newest, first=self.told[1],
                gguf=self.engine.name == "llamacpp"):
            held = self.store.latest()
            self.engine.set_adapter(held.version, self.store.path(held.version))
            self.node.adapter_version = held.version
            log.info("now generating with adapter v%d", held.version)
        return held

    def _round_robin(self, trainers) -> list:
        k = self.counter % len(trainers)
        return trainers[k:] + trainers[:k]

    def _on_reply(self, reply: dict, peer_id: str) -> None:
        self.need = int(reply.get("need", 1))
        self.told = (int(reply.get("version", -1)), peer_id)

    def _ask_status(self, trainers) -> None:
        """Pull the trainer's version and how many groups it can use: a tiny request, so rollouts
        can wait for demand without generating chunks that would only go stale."""
        for trainer in self._round_robin(trainers):
            try:
                reply = self.transport.request(trainer.peer_id, f"{self.node.signed.namespace}/status", b"{}",
                                               max_response=4096, timeout=10)
                self._on_reply(json.loads(reply), trainer.peer_id)
                return
            except (TransportError, ValueError) as e:
                log.info("no status from trainer %s: %s", trainer.peer_id[-8:], e)

    def _generate(self, version: int) -> tuple[bytes, int, int, float]:
        from nodes.engines.base import SamplingParams

        g = self.node.signed.manifest.grpo
        prompts = [next(self.prompts).text for _ in range(PROMPTS_PER_CHUNK)]
        params = SamplingParams(temperature=g.temperature, max_new_tokens=g.max_new_tokens)
        self.counter += 1
        started = time.perf_counter()
        groups = self.engine.generate(prompts, g.group_size, params, seed=(self.seed + self.counter) % 2**31)
        gen_s = time.perf_counter() - started
        chunk = TrajectoryChunk(
            run_id=self.node.signed.manifest.run.id, chunk_id=new_chunk_id(),
            producer_key_id=self.node.identity.key_id, policy_version=version, task=self.task.name,
            sampling={"temperature": g.temperature, "max_new_tokens": g.max_new_tokens}, created_at=time.time(),
            groups=tuple(TrajectoryGroup.from_samples(s) for s in groups),
        )
        tokens = sum(len(s.completion_ids) for group in groups for s in group)
        envelope = sign_envelope(CHUNK_TYPE, encode_chunk(chunk), [self.node.identity])
        return envelope, chunk.num_samples, tokens, gen_s

    def _send(self, envelope: bytes, trainers) -> bool:
        """Seal to every current trainer, deliver to one (round robin); True once one accepts."""
        recipients = {r.key_id: bytes.fromhex(r.hpke_keys["x25519"]) for r in trainers if "x25519" in r.hpke_keys}
        context = SealContext(self.node.signed.manifest.run.id, self.node.identity.key_id, new_chunk_id())
        blob = seal(envelope, recipients, context)
        for trainer in self._round_robin(trainers):
            try:
                reply = json.loads(self.transport.request(trainer.peer_id, f"{self.node.signed.namespace}/chunks",
                                                          blob, max_response=4096, timeout=30))
            except (TransportError, ValueError) as e:
                log.info("could not deliver to trainer %s: %s", trainer.peer_id[-8:], e)
                continue
            if reply.get("reason") == "not_trainer":  # e.g. restarting, still loading: not delivered, keep it
                log.info("trainer %s is not taking chunks yet", trainer.peer_id[-8:])
                continue
            self._on_reply(reply, trainer.peer_id)
            if not reply.get("ok"):
                log.info("trainer refused our chunk: %s", reply.get("reason"))
            return True  # delivered; a refusal (e.g. stale) is final, resending would not help
        return False

    def _spool(self, envelope: bytes) -> bool:
        """Keep a signed chunk for later (bounded, the oldest go first); True if the spool was full."""
        files = sorted(self.spool.glob("*.chunk"))
        dropped = files[: max(0, len(files) - SPOOL_LIMIT + 1)]
        for old in dropped:
            old.unlink(missing_ok=True)
            log.warning("spool full: dropped the oldest chunk %s", old.name)
        path = self.spool / f"{time.time_ns()}.chunk"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(envelope)
        tmp.rename(path)
        return bool(dropped)

    def _flush_spool(self, trainers) -> bool | None:
        """Send spooled chunks first, oldest first. False if a trainer is still unreachable."""
        for path in sorted(self.spool.glob("*.chunk")):
            if not self._send(path.read_bytes(), trainers):
                return False
            path.unlink(missing_ok=True)
        return None
