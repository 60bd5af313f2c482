"""The trainer worker: intake of chunks, GRPO steps on the LoRA, signed version publication.

Accounting invariant: every accepted chunk ends up consumed by exactly one step (named in the
version record that follows) or dropped with a reason; `accepted == consumed + dropped +
buffered` at all times, and each accounting line in metrics.jsonl shows it.

A version the full disk will not take waits (`nodes.disk`): nothing half-written is published, the
publication is retried with a backoff, and chunks are still checked and taken meanwhile.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import Counter, deque
from pathlib import Path

import torch

from nodes.context import WorkerContext
from nodes.disk import is_full
from nodes.metrics import AccountingEvent, DoneEvent, StepEvent
from nodes.trainer.checkpoint import load_checkpoint, save_checkpoint
from nodes.trainer.intake import (
    Accepted,
    PromptIndex,
    check_honesty,
    check_staleness,
    micro_batches,
    open_chunk,
    recompute_rewards,
)
from swarm.chunk import ChunkLimits
from swarm.messages import Verdict
from swarm.provenance import checkpoints
from swarm.records import TrainerState
from swarm.rejections import ChunkRejected, Reason, Rejection, VersionRejected
from swarm.sync import groups_needed, oldest_usable
from swarm.versions import (
    CONFIG_FILE,
    GGUF_FILE,
    WEIGHTS_FILE,
    AdapterVersion,
    ChunkAttestation,
    entry_hash,
    settings_digest,
    sign_version,
)

log = logging.getLogger("echo_swarm.trainer")


class TrainerWorker:
    def __init__(self, ctx: WorkerContext):
        from transformers import AutoTokenizer

        from nodes.models import resolve_base
        from nodes.tasks import make_task
        from nodes.trainer.policy import Policy, PolicyConfig

        m = ctx.manifest
        self.ctx, self.store, self.metrics, self.m = ctx, ctx.store, ctx.metrics, m
        threads = ctx.threads
        base = resolve_base(m.model.base, m.model.sha256)
        self.base_dir, self.gguf_unsupported = base, False
        config = PolicyConfig.from_manifest(m)
        self.policy = Policy(base, config, seed=m.run.seed, threads=threads)
        # The honesty check scores chunks under the version they claim. With `scoring_copy`, on a
        # second copy of the model, so scoring never waits for (or stalls) a training step, at the
        # cost of one more base in memory; by default on the training model itself, in turn with
        # training (`model_lock`), its adapter swapped for the chunk's version meanwhile.
        self.scorer = Policy(base, config, seed=m.run.seed, threads=threads) if ctx.scoring_copy else None
        self.scored_version: int | None = None
        self.score_lock = threading.Lock()
        self.model_lock = self.score_lock if self.scorer is None else contextlib.nullcontext()
        """Held while the training model is trained or read (shared with scoring by default)."""
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.task = make_task(m.task.name, m.task.options)
        self.prompts = PromptIndex(self.task, self.tokenizer)
        eos = self.tokenizer.eos_token_id  # tokens after EOS would be trained on, never scored: refuse them
        self.limits = ChunkLimits.for_run(m.grpo, vocab_size=self.policy.vocab_size,
                                          stop_ids=frozenset() if eos is None else frozenset({eos}))
        self.ready = threading.Condition()
        self.buffer: deque[Accepted] = deque()
        self.training = False  # a batch is taken and being trained on
        self.seen: set[str] = set()
        self.acct = {"accepted": 0, "consumed": 0, "dropped": Counter(), "rejected": Counter()}
        self.acct_pending = False  # rejections counted but not yet in an accounting line
        self.versions: dict[int, dict] = {}  # recent adapter tensors, for the honesty check
        self.consumed: list[ChunkAttestation] = []  # since the last published version
        self.ckpt_dir = Path(ctx.workdir) / "checkpoint"
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="trainer", daemon=True)
        self._restore_or_publish_first()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        with self.ready:
            self.ready.notify_all()
        self.thread.join(timeout=10)
        if self.acct_pending and not self.thread.is_alive():  # e.g. rejections after the last step
            self._write_accounting()

    @property
    def step(self) -> int:
        return self.policy.step

    def _restore_or_publish_first(self) -> None:
        """Continue the run where the verified provenance log says it is.

        Resume from our checkpoint when it is at the log's head (or one publication past it: killed
        between checkpointing and logging, the version is published now with the chunks it
        consumed). When the swarm moved past our checkpoint (another trainer published while we
        rolled out), or we have none, continue from the log's head, as on a failover: anything
        else would fork the chain, and only a version whose whole chain verified is trained on."""
        ctx = self.ctx
        ctx.log.learn_keys({ctx.identity.key_id: ctx.identity.public_key})
        self._catch_up_log()
        self.store.load(ctx.log)
        state, head = load_checkpoint(self.ckpt_dir), ctx.log.head()
        if state is not None and head is not None and head.version > int(state[0]["meta.step"]):
            self._restore_accounting(state[1])  # keep what we saw: replays stay refused
            state = None
        if state is not None:
            tensors, meta = state
            self.policy.load_state_dict(tensors)
            self._restore_accounting(meta)
            if head is None or head.version != self.step:
                self.consumed = [ChunkAttestation(**a) for a in meta.get("pending", [])]
            log.info("resumed from checkpoint at step %d (%d chunks seen)", self.step, len(self.seen))
        elif head is not None:
            from swarm.adapters.files import load_version

            source = head
            if self.store.latest() is None or self.store.latest().version != head.version:
                try:
                    self._fetch(head.version)
                except RuntimeError as e:
                    # The head's files died with its trainer (a follower had its entry, not yet its
                    # files): go on from the newest weights we or a peer hold, as the next version
                    # of the same chain (its entry names the head as parent), never as a second history.
                    source = self.store.latest() or self._fetch_newest_held(below=head.version)
                    if source is None:
                        raise
                    log.warning("%s; continuing from v%d's weights as v%d", e, source.version, head.version + 1)
            self.policy.set_adapter_tensors(load_version(self.store.path(source.version), source.adapter_sha256))
            self.policy.step = head.version
            if source is not head:
                # Published at once (below): rollouts hold `source` or older and would otherwise wait
                # for a version that needs their chunks first. Their in-flight chunks stay checkable.
                self.versions[source.version] = self.policy.adapter_tensors()
                self.policy.step = head.version + 1
            log.info("taking over training from adapter v%d, the head of the verified log", source.version)
        if head is not None and ctx.log.checkpoint_size != ctx.log.size:  # servable to witnesses at once
            ctx.log.set_checkpoint(checkpoints.sign(ctx.log, ctx.identity), ctx.log.size)
        if head is None or head.version != self.step:
            self._publish_when_room()
        if self.step not in self.versions:
            self.versions[self.step] = self.policy.adapter_tensors()
        self._advertise()

    def _catch_up_log(self) -> None:
        """Bring our log up to the swarm's before choosing where to continue: a node that joined
        and was picked to train at once (or was away) would otherwise start a second history."""
        from swarm.adapters.peers import PeerFailures
        from swarm.provenance.witness import witness_log

        ctx = self.ctx
        holders = sorted(ctx.swarm.holders(0), key=lambda r: -r.adapter_version)
        if holders:  # what records say lags a period: ask even when they claim nothing newer
            ctx.log.learn_keys({r.key_id: bytes.fromhex(r.public_key) for r in holders})
            if not witness_log(ctx, [r.peer_id for r in holders], PeerFailures()):
                log.warning("could not bring our provenance log up to v%d from %d peers; continuing from v%d",
                            holders[0].adapter_version, len(holders), ctx.log.head().version if ctx.log.head() else -1)

    def _fetch_newest_held(self, below: int):
        """The newest logged version older than `below` that a peer serves us (a standby that holds
        no weights at all, e.g. one that joined on a full disk), or None."""
        for version in sorted({r.adapter_version for r in self.ctx.swarm.holders(0) if r.adapter_version < below},
                              reverse=True):
            try:
                self._fetch(version)
            except RuntimeError:
                continue
            return self.store.latest()
        return None

    def _fetch(self, version: int) -> None:
        """The weights of the log's head, from whoever holds them (we hold only its entry)."""
        from swarm.adapters.fetch import fetch_version
        from swarm.adapters.peers import PeerFailures, rank_holders

        ctx = self.ctx
        peers = rank_holders(version, ctx.swarm.holders(version))
        if not fetch_version(ctx.transport, ctx.protocol("adapter"), self.store, version, peers, log=ctx.log,
                             failures=PeerFailures()):
            raise RuntimeError(f"cannot take over training: no peer served v{version}, the head of the log")

    def _restore_accounting(self, meta: dict) -> None:
        self.seen = set(meta["seen"])
        self.acct = {"accepted": meta["acct"]["accepted"], "consumed": meta["acct"]["consumed"],
                     "dropped": Counter(meta["acct"]["dropped"]), "rejected": Counter(meta["acct"]["rejected"])}

    def _advertise(self) -> None:
        latest = self.store.latest()
        self.ctx.swarm.advertise(adapter_version=latest.version,
                                 trainer=TrainerState(version=latest.version, step=self.step, need=self._need()))

    def _need(self) -> int:
        return groups_needed(self.m.sync.mode, self.m.grpo.prompts_per_step,
                             sum(len(a.chunk.groups) for a in self.buffer), self.training)

    def status(self, ok: bool = True, reason: Reason | None = None) -> Verdict:
        """Our newest version and the groups we need: the reply to a status poll, and (with the
        chunk's verdict, ok / reason) to every chunk."""
        return Verdict(ok=ok, reason=None if reason is None else Reason(reason).value, need=self._need(),
                       version=self._version())

    # -- intake -----------------------------------------------------------------------------

    def handle_chunk(self, remote: str, blob: bytes) -> Verdict:
        try:
            accepted = self._intake(blob)
            with self.ready:
                if self.stop_event.is_set():  # our final accounting may be written already: the producer keeps it
                    return self.status(ok=False, reason=Reason.NOT_TRAINER)  # (an RLock: status may take it)
                if accepted.chunk.chunk_id in self.seen:  # a concurrent copy got in first
                    raise ChunkRejected(Reason.REPLAY, accepted.chunk.chunk_id)
                self.seen.add(accepted.chunk.chunk_id)
                self.buffer.append(accepted)
                self.acct["accepted"] += 1
                self.acct_pending = True  # also after the last step: stop() writes the final totals
                self.ready.notify_all()
        except Rejection as e:
            self.count_rejection(remote, e)
            return self.status(ok=False, reason=e.reason)
        return self.status()

    def count_rejection(self, remote: str, e: Rejection) -> None:
        """Count a refused chunk (at intake, or refused unread by the transport). The
        trainer loop writes it to metrics.jsonl within ~0.5 s, not only at the next step."""
        with self.ready:
            first = self.acct["rejected"][e.reason.value] == 0
            self.acct["rejected"][e.reason.value] += 1
            self.acct_pending = True
        (log.warning if first else log.debug)("rejected a chunk from %s: %s", remote[-8:], e)

    def _version(self) -> int:
        latest = self.store.latest()
        return latest.version if latest else -1

    def _intake(self, blob: bytes) -> Accepted:
        chunk, attestation = open_chunk(blob, identity=self.ctx.identity, run_id=self.m.run.id,
                                   members=self.ctx.swarm.members(),
                                   limits=self.limits)
        if chunk.chunk_id in self.seen:
            raise ChunkRejected(Reason.REPLAY, chunk.chunk_id)
        if chunk.task != self.task.name or chunk.sampling["temperature"] != self.m.grpo.temperature:
            raise ChunkRejected(Reason.WRONG_SETTINGS, "task or sampling differ from the manifest")
        check_staleness(chunk.policy_version, self.step, self.m.sync.mode, self.m.sync.staleness)
        check_honesty(chunk, self._score(chunk))
        return Accepted(chunk, attestation, recompute_rewards(chunk, self.tokenizer, self.task, self.prompts))

    def _score(self, chunk) -> list[list[float]]:
        """Log-probs of the chunk's completions under the version it claims to come from."""
        tensors = self.versions.get(chunk.policy_version)
        if tensors is None:
            raise ChunkRejected(Reason.STALE, f"v{chunk.policy_version} is no longer held for checking")
        pairs = [(g.prompt_ids, c) for g in chunk.groups for c in g.completions]
        scores = []
        with self.score_lock, torch.no_grad():
            scorer, training = self.scorer or self.policy, None
            if self.scorer is None:
                training = self.policy.adapter_tensors()  # put back after scoring
            if self.scorer is None or self.scored_version != chunk.policy_version:
                scorer.set_adapter_tensors(tensors)
                self.scored_version = chunk.policy_version
            try:
                for batch in micro_batches([len(p) + len(c) for p, c in pairs]):
                    lp, mask = scorer.token_logprobs([pairs[i] for i in batch])
                    scores += [lp[i, : int(mask[i].sum())].tolist() for i in range(len(batch))]
            finally:
                if training is not None:
                    self.policy.set_adapter_tensors(training)
        return scores

    # -- training ---------------------------------------------------------------------------

    def _take_batch(self) -> list[Accepted] | None:
        """Enough fresh groups for one step, dropping (and counting) what went stale meanwhile."""
        with self.ready:
            while not self.stop_event.is_set():
                for item in list(self.buffer):
                    try:
                        check_staleness(item.chunk.policy_version, self.step, self.m.sync.mode,
                                        self.m.sync.staleness)
                    except ChunkRejected as e:
                        self.buffer.remove(item)
                        self.acct["dropped"][e.reason.value] += 1
                groups = sum(len(a.chunk.groups) for a in self.buffer)
                if groups >= self.m.grpo.prompts_per_step:
                    batch, n = [], 0
                    while n < self.m.grpo.prompts_per_step:
                        item = self.buffer.popleft()
                        batch.append(item)
                        n += len(item.chunk.groups)
                    self.training = True
                    return batch
                self._advertise()
                if self.acct_pending:  # between steps the totals reconcile: safe to write them
                    self._write_accounting()
                self.ready.wait(0.5)
        return None

    def _loop(self) -> None:
        while not self.stop_event.is_set() and self.step < self.m.grpo.steps:
            waited = time.perf_counter()
            batch = self._take_batch()
            if batch is None:
                return
            wait_s = time.perf_counter() - waited
            self._train(batch, wait_s)
        if self.step >= self.m.grpo.steps and self._version() == self.step:  # not stopped waiting to publish
            self.metrics.write(DoneEvent(steps=self.step, version=self.store.latest().version))
            log.info("finished: %d steps, adapter v%d", self.step, self.store.latest().version)

    def _train(self, batch: list[Accepted], wait_s: float) -> None:
        started = time.perf_counter()
        samples, rewards, old = [], [], []
        lags = Counter()
        for item in batch:
            lags[str(self.step - item.chunk.policy_version)] += 1
            for group, group_rewards in zip(item.chunk.groups, item.rewards):
                samples += [(group.prompt_ids, c) for c in group.completions]
                old += [list(lp) for lp in group.logprobs]
                rewards.append(group_rewards)
        with self.model_lock:
            stats = self.policy.train_step(samples, rewards, old)
            self.acct["consumed"] += len(batch)
            self.consumed += [item.attestation for item in batch]
        publish = self.step % self.m.sync.publish_every == 0 or self.step >= self.m.grpo.steps
        if publish and not self._publish_when_room():
            return  # stopped while the disk was full: as if killed before publishing
        with self.model_lock:
            for v in [v for v in self.versions if v < oldest_usable(self.step, self.m.sync.mode, self.m.sync.staleness)]:
                del self.versions[v]
        self.training = False
        self._advertise()
        flat = [r for g in rewards for r in g]
        step_s = time.perf_counter() - started + wait_s
        self.metrics.write(StepEvent(step=self.step, version=self.store.latest().version,
                                     reward_mean=sum(flat) / len(flat), lags=dict(lags), samples=len(flat),
                                     step_s=step_s, wait_s=wait_s, loss=stats.get("loss")))
        self._write_accounting()
        log.info("step %d reward %.3f (lags %s, waited %.2fs)", self.step, sum(flat) / len(flat), dict(lags), wait_s)

    def _write_accounting(self) -> None:
        a = self.acct
        self.acct_pending = False
        self.metrics.write(AccountingEvent(accepted=a["accepted"], consumed=a["consumed"], buffered=len(self.buffer),
                                           dropped=dict(a["dropped"]), rejected=dict(a["rejected"])))

    def _tensors(self, version: AdapterVersion) -> dict:
        from swarm.adapters.files import load_version

        held = self.versions.get(version.version)
        return held if held is not None else load_version(self.store.path(version.version), version.adapter_sha256)

    def _gguf(self, config_json: bytes, weights: bytes) -> bytes:
        """The adapter as a GGUF LoRA for llama.cpp nodes; empty if this base has no GGUF form."""
        from nodes.engines.base import EngineError
        from nodes.engines.gguf_export import lora_gguf_bytes

        if self.gguf_unsupported:
            return b""
        try:
            return lora_gguf_bytes(config_json, weights, self.base_dir)
        except (EngineError, KeyError, ValueError, OSError) as e:
            if is_full(e):
                raise  # no room for the converter's files: publishing waits for space, GGUF included
            self.gguf_unsupported = True
            log.warning("not publishing GGUF adapters (llama.cpp nodes will convert): %s", e)
            return b""

    def _publish_when_room(self) -> bool:
        """Publish version `step`, waiting out a full disk (the lock is free while we wait: chunks
        are still checked); False if stopped meanwhile."""
        while not self.stop_event.is_set():
            try:
                with self.model_lock:
                    self._publish()
            except OSError as e:
                self.ctx.disk.full("publish", e.filename or self.ctx.workdir, e)  # re-raises anything else
                self.ctx.disk.wait(self.stop_event)
                continue
            self.ctx.disk.ok("publish")
            return True
        return False

    def _publish(self) -> None:
        """Checkpoint, then write version `step` (PEFT dir + signed record); the caller announces it."""
        from swarm.adapters.delta import pack_delta
        from swarm.adapters.files import adapter_bytes

        parent, head = self.store.latest(), self.ctx.log.head()
        tensors = self.versions[self.step] = self.policy.adapter_tensors()  # scorable before announced
        weights = adapter_bytes(tensors)
        config = self.policy.peft_config_dict()  # the version number is in the signed record
        config_json = json.dumps(config, sort_keys=True, indent=2).encode()
        gguf = self._gguf(config_json, weights)
        files = {WEIGHTS_FILE: weights, CONFIG_FILE: config_json, **({GGUF_FILE: gguf} if gguf else {})}
        record = AdapterVersion(
            run_id=self.m.run.id, run_digest=self.ctx.signed.digest, version=self.step, step=self.step,
            parent_version=head.version if head else -1,
            parent_entry=entry_hash(self.ctx.log.entries[-1]) if head else "",
            parent_sha256=head.adapter_sha256 if head else "",
            files=tuple(sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files.items())),
            base_sha256=self.m.model.sha256, trainer_key_id=self.ctx.identity.key_id,
            grpo_digest=settings_digest(self.m.grpo), chunks=tuple(self.consumed), created_at=time.time(),
            manifest_serial=self.ctx.log.trust.serial,
        )
        envelope = sign_version(record, self.ctx.identity)
        with self.ready:  # a consistent snapshot: intake threads change these concurrently
            meta = {"seen": sorted(self.seen), "pending": [dataclasses.asdict(a) for a in record.chunks],
                    "acct": {"accepted": self.acct["accepted"] - len(self.buffer), "consumed": self.acct["consumed"],
                             "dropped": dict(self.acct["dropped"]), "rejected": dict(self.acct["rejected"])}}
        # Checkpoint first: a version becomes visible only once a restart would resume from it
        # (a kill in between re-publishes it from the checkpoint's `pending` chunks).
        save_checkpoint(self.ckpt_dir, self.policy.state_dict(), meta)
        delta = (pack_delta(self._tensors(parent), tensors, parent.adapter_sha256, record.adapter_sha256)
                 if parent is not None and head is not None and parent.version == head.version else b"")
        self.store.put(record, envelope, config_json, weights, gguf=gguf, delta=delta)
        try:
            self.ctx.log.append(envelope)  # the entry is public once logged: files first, so it is servable
        except (VersionRejected, OSError):  # e.g. our key revoked a moment ago, or a full disk: the files
            self.store.forget_unlogged(self.ctx.log)  # vouch for nothing (a full disk: published on retry)
            raise
        try:
            self.ctx.log.set_checkpoint(checkpoints.sign(self.ctx.log, self.ctx.identity), self.ctx.log.size)
        except OSError as e:  # logged, so published: the note is served from memory (and signed again on restart)
            self.ctx.disk.skip("provenance/checkpoint.note", e)
        self.consumed = []
