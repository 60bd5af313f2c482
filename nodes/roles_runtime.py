"""Wires a node's role to its worker: P2P handlers, adapter store, metrics, role switches.

The node itself only knows roles; this module starts the rollout or trainer worker when the
role changes and serves the two P2P protocols every node speaks: `chunks` (trainers accept
trajectory chunks) and `adapter` (any node serves the adapter versions it holds).
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from nodes.adapter_store import AdapterStore
from nodes.metrics import MetricsLog
from nodes.trajectory import ChunkLimits
from swarm.transport import Transport

log = logging.getLogger("echo_swarm.node")
MAX_CHUNK_REQUEST = ChunkLimits(vocab_size=1).max_bytes + 128 * 1024
NOT_TRAINER = json.dumps({"ok": False, "reason": "not_trainer", "need": 0}).encode()


class RoleRuntime:
    def __init__(self, node, engine_kind: str, threads: int | None):
        self.node = node
        self.engine_kind = engine_kind
        self.threads = threads
        workdir = Path(node.options.workdir)
        self.metrics = MetricsLog(workdir / "metrics.jsonl")
        self.store = AdapterStore(workdir / "adapters", node.signed.digest)
        self.worker = None
        self._switch = threading.Lock()
        self.transport = Transport(node.membership.dht)
        ns = node.signed.namespace
        self.transport.serve(f"{ns}/chunks", self._on_chunk, max_request=MAX_CHUNK_REQUEST,
                             on_refused=self._on_chunk_refused)
        self.transport.serve(f"{ns}/adapter", self._on_adapter_request, max_request=1024)
        self.transport.serve(f"{ns}/status", self._on_status, max_request=1024)
        node.on_role_change = self.on_role_change

    def _trainer(self):
        """The trainer worker, or None while this node is not (yet) training."""
        worker = self.worker
        return worker if worker is not None and hasattr(worker, "handle_chunk") else None

    def _on_chunk(self, remote: str, blob: bytes) -> bytes:
        trainer = self._trainer()
        return trainer.handle_chunk(remote, blob) if trainer else NOT_TRAINER

    def _on_chunk_refused(self, remote: str, reason: str, detail: str) -> None:
        """A chunk request the transport dropped unread (oversize): the trainer counts it too."""
        trainer = self._trainer()
        if trainer:
            from nodes.trainer.intake import Rejected

            trainer.count_rejection(remote, Rejected(reason, detail))

    def _on_status(self, remote: str, request: bytes) -> bytes:
        trainer = self._trainer()
        return trainer.status() if trainer else NOT_TRAINER

    def _on_adapter_request(self, remote: str, request: bytes) -> bytes:
        """{"version": v, "have": newest version the asker holds, "gguf": wants the GGUF adapter}."""
        try:
            ask = json.loads(request)
            version, have, gguf = ask["version"], ask.get("have", -1), ask.get("gguf", False)
            valid = isinstance(version, int) and isinstance(have, int) and isinstance(gguf, bool)
        except (ValueError, KeyError, TypeError, AttributeError):
            valid = False
        return (self.store.bundle(version, have, gguf) if valid else None) or b""

    def on_role_change(self, old: str, new: str) -> None:
        """Switch workers off the announce thread: loading a model must not delay our record."""
        threading.Thread(target=self._switch_to, args=(new,), name="role-switch", daemon=True).start()

    def _switch_to(self, new: str) -> None:
        with self._switch:
            if self.worker is not None:
                self.worker.stop()
                self.worker = None
            self.metrics.write("role", role=new)
            if new == "trainer":
                from nodes.trainer.worker import TrainerWorker

                self.worker = TrainerWorker(self.node, self.transport, self.store, self.metrics, self.threads)
            else:
                from nodes.rollout import RolloutWorker

                self.worker = RolloutWorker(self.node, self.transport, self.store, self.metrics,
                                            self.engine_kind, self.threads)
            self.worker.start()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.transport.close()
