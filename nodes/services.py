"""The node's P2P services and the switch between its role workers.

Every node serves `adapter` (the versions it holds, to anyone) and `log` (its copy of the
provenance log); `cosign` takes witnesses' countersignatures of our checkpoint; the `status` and
`chunks` protocols are answered by the trainer worker while this node trains, and with a
`not_trainer` verdict otherwise. When the role function moves this node to another role, the old
worker stops and the new one starts (off the announce thread: loading a model must not delay our
record).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from nodes.context import WorkerContext
from nodes.disk import is_full
from nodes.metrics import MetricsLog, RoleEvent
from swarm.adapters.store import AdapterStore
from swarm.chunk import ChunkLimits
from swarm.messages import AdapterRequest, StatusRequest, Verdict, decode
from swarm.provenance.checkpoints import CosignRequest, accept_cosignature
from swarm.provenance.log import ProvenanceLog
from swarm.provenance.sync import LogRequest, log_reply
from swarm.rejections import Reason, Rejection
from swarm.sync import versions_kept
from swarm.transport import PeerStanding, make_transport

log = logging.getLogger("echo_swarm.node")
NOT_MISCONDUCT = {Reason.BUSY, Reason.STALE, Reason.REPLAY, Reason.FUTURE_VERSION, Reason.NOT_TRAINER}
"""Refusals an honest rollout meets (our congestion, a chunk that aged in its spool, a resend
whose reply was lost): they do not lower the peer's standing at our door."""
NOT_TRAINER = Verdict(ok=False, reason=Reason.NOT_TRAINER.value, need=0, version=-1).encode()


def _transport(node):
    transport = make_transport("p2p", dht=node.membership.dht)
    if node.options.shape_links is None:
        return transport
    from swarm.transport.shaped import ShapedTransport

    return ShapedTransport(transport, node.options.shape_links, seed=int(node.identity.key_id[:8], 16))


class NodeServices:
    def __init__(self, node, engine_kind: str, threads: int | None, scoring_copy: bool = False,
                 base_gguf: Path | None = None, max_tok_s: float = 0.0):
        self.node = node
        self.engine_kind = engine_kind
        workdir, sync = Path(node.options.workdir), node.signed.manifest.sync
        self.context = WorkerContext(
            signed=node.signed, identity=node.identity, workdir=workdir, swarm=node,
            transport=_transport(node),
            store=AdapterStore(workdir / "adapters", node.signed.digest, keep=versions_kept(sync.mode, sync.staleness)),
            log=ProvenanceLog(workdir / "provenance", node.trust),
            metrics=MetricsLog(workdir / "metrics.jsonl", disk=node.disk), threads=threads, scoring_copy=scoring_copy,
            base_gguf=base_gguf, max_tok_s=max_tok_s,
        )
        self.worker = None
        self.trainer = None  # the worker, while it is a TrainerWorker
        self.standing = PeerStanding()  # who sent us good or bad chunks: served in that order
        self._switch = threading.Lock()
        self._closing = threading.Event()
        transport, grpo = self.context.transport, node.signed.manifest.grpo
        transport.serve(self.context.protocol("chunks"), self._on_chunk,
                        max_request=ChunkLimits.for_run(grpo, vocab_size=1).sealed_bytes,
                        on_refused=self._on_refused, priority=self.standing.priority)
        transport.serve(self.context.protocol("status"), self._on_status, max_request=StatusRequest.MAX_BYTES,
                        priority=self.standing.priority)
        transport.serve(self.context.protocol("adapter"), self._on_adapter_request,
                        max_request=AdapterRequest.MAX_BYTES)
        transport.serve(self.context.protocol("log"), lambda remote, request: log_reply(self.context.log, request),
                        max_request=LogRequest.MAX_BYTES)
        transport.serve(self.context.protocol("cosign"), self._on_cosignature, max_request=CosignRequest.MAX_BYTES,
                        priority=self.standing.priority)
        node.on_role_change = self.on_role_change
        node.door_stats = transport.stats
        self._updates_seen: tuple | None = None
        self.read_updates()
        node.on_tick = self.read_updates

    def read_updates(self) -> None:
        """Apply the owner's manifest updates from the file beside the manifest, when it changed."""
        path = self.node.options.updates_file
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            stat = None
        seen = (stat.st_mtime_ns, stat.st_size) if stat is not None else None
        if seen is None or seen == self._updates_seen:
            return
        self._updates_seen = seen
        log_ = self.context.log
        before = log_.trust.serial
        try:
            dropped = log_.learn_updates(line for line in path.read_bytes().splitlines() if line.strip())
        except (OSError, Rejection) as e:
            log.warning("manifest updates in %s refused: %s (fix the file, or ask the owner to re-run `swarm trust`)",
                        path, e)
            return
        if log_.trust.serial != before:
            log.info("applied manifest updates #%d..#%d from %s", before + 1, log_.trust.serial, path)
        if dropped:
            self.context.store.forget_unlogged(log_)

    def _on_chunk(self, remote: str, blob: bytes) -> bytes:
        trainer = self.trainer
        if trainer is None:
            return NOT_TRAINER
        verdict = trainer.handle_chunk(remote, blob)
        if verdict.ok:
            self.standing.accepted(remote)
        elif verdict.reason not in NOT_MISCONDUCT:
            self.standing.rejected(remote)
        return verdict.encode()

    def _on_refused(self, remote: str, reason: Reason, detail: str) -> None:
        """A chunk request the transport refused before reading it (oversize, busy, rate): counted."""
        if reason not in NOT_MISCONDUCT:
            self.standing.rejected(remote)
        trainer = self.trainer
        if trainer is not None:
            trainer.count_rejection(remote, Rejection(reason, detail))

    def _on_status(self, remote: str, request: bytes) -> bytes:
        trainer = self.trainer
        try:
            decode(StatusRequest, request)
        except Rejection as e:
            log.info("bad status request from %s: %s", remote[-8:], e)
            return NOT_TRAINER if trainer is None else trainer.status(ok=False, reason=e.reason).encode()
        return NOT_TRAINER if trainer is None else trainer.status().encode()

    def _on_adapter_request(self, remote: str, request: bytes) -> bytes:
        try:
            ask = decode(AdapterRequest, request)
        except Rejection as e:
            log.info("bad adapter request from %s: %s", remote[-8:], e)
            return b""
        return self.context.store.bundle(ask.version, ask.have, ask.gguf) or b""

    def _on_cosignature(self, remote: str, request: bytes) -> bytes:
        """A witness countersigned our checkpoint: keep the cosignature with it (audits count them)."""
        members = self.node.members()
        if not any(r.peer_id == remote for r in self.node.view.records):  # e.g. we just restarted
            log.debug("cosignature from %s: not a live member (yet): its record is not in our view", remote[-8:])
            return Verdict(ok=False, need=0, version=-1, reason=Reason.UNKNOWN_SENDER.value).encode()
        try:
            accept_cosignature(self.context.log, request, members)
        except OSError as e:  # a full disk: kept in memory (served with the log), written with the next checkpoint
            self.node.disk.skip("provenance/checkpoint.note", e)
        except Rejection as e:
            log.info("cosignature from %s refused: %s", remote[-8:], e)
            return Verdict(ok=False, need=0, version=-1, reason=e.reason.value).encode()
        return Verdict(ok=True, need=0, version=-1).encode()

    def on_role_change(self, old: str, new: str) -> None:
        threading.Thread(target=self._switch_to, args=(new,), name="role-switch", daemon=True).start()

    def _switch_to(self, new: str) -> None:
        with self._switch:
            if self.worker is not None:
                self.worker.stop()
                self.worker = self.trainer = None
                self.node.disk.forget_waits()  # what waited for space was that worker's
            self.context.metrics.write(RoleEvent(role=new))
            try:
                worker = self._start_worker_when_space(new)
            except Exception as e:  # any load failure: reported, never a silent zombie
                log.debug("starting the %s role failed", new, exc_info=True)
                self.node.role_failed(new, start_failure(e))
                return
            if worker is None:  # the role moved on (or we close) while the disk was full
                return
            self.worker = worker
            self.trainer = worker if new == "trainer" else None
            self.node.state = "ready"

    def _start_worker_when_space(self, role: str):
        """The role's worker, started once the disk has room for what it writes first (a trainer
        taking over writes its checkpoint and the next version): paused meanwhile, like a running
        worker; None when the role is no longer ours by then."""
        disk, what = self.node.disk, f"starting the {role} role"
        try:
            while True:
                try:
                    return self._start_worker(role)
                except OSError as e:
                    if not is_full(e):
                        raise
                    disk.full(what, e.filename or self.context.workdir, e)
                    disk.wait(self._closing)
                    if self._closing.is_set() or self.node.role != role:
                        return None
        finally:
            disk.ok(what)

    def _start_worker(self, role: str):
        if role == "trainer":
            from nodes.trainer.worker import TrainerWorker

            worker = TrainerWorker(self.context)
        else:
            from nodes.rollout import RolloutWorker

            worker = RolloutWorker(self.context, self.engine_kind)
        worker.start()
        return worker

    def close(self) -> None:
        self._closing.set()
        if self.worker is not None:
            self.worker.stop()
        self.context.transport.close()


def start_failure(error: Exception) -> str:
    """One line for why a role could not start, with what to do when we know it."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 280 else text[:277] + "..."
