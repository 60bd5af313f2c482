"""What a role worker is given: the typed handles it may use, and nothing else of its node.

Workers (rollout, trainer) never reach into the `Node`: they read the run from `manifest` /
`signed`, ask the swarm through `swarm` (the node's `trainers()`, `members()`, `holders()`,
`advertise()`), talk to peers through `transport`, keep versions in `store` and their entries in
`log`, report through `metrics`, and wait out a full disk through `disk`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crypto.identity import Identity
    from nodes.disk import Disk
    from nodes.metrics import MetricsLog
    from nodes.node import Node
    from swarm.adapters.store import AdapterStore
    from swarm.manifest import RunManifest, SignedManifest
    from swarm.provenance.log import ProvenanceLog
    from swarm.transport import Transport


@dataclass(frozen=True)
class WorkerContext:
    signed: SignedManifest
    identity: Identity
    workdir: Path
    swarm: Node
    """Only its swarm questions: trainers(), members(), holders(v), advertise(...), peer_id."""
    transport: Transport
    store: AdapterStore
    log: ProvenanceLog
    """The run's provenance log: every version this node holds has its verified entry here."""
    metrics: MetricsLog
    threads: int | None = None
    scoring_copy: bool = False
    """A trainer keeps a second copy of the base to check chunks while it trains (faster intake,
    twice the memory); by default one copy serves both, in turn."""
    base_gguf: Path | None = None
    """A rollout samples from this GGUF copy of the base (checked against the manifest's probe)."""
    max_tok_s: float = 0.0
    """A rollout generates no faster than this many tokens/s (a slower device; 0: no cap)."""

    @property
    def disk(self) -> Disk:
        """The node's workdir space: a write it refuses for lack of space waits (see nodes.disk)."""
        return self.swarm.disk

    @property
    def manifest(self) -> RunManifest:
        return self.signed.manifest

    def protocol(self, name: str) -> str:
        """The full P2P protocol name of `name` (status, chunks, adapter) in this run."""
        return f"{self.signed.namespace}/{name}"
