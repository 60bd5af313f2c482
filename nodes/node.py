"""The node lifecycle: join, advertise, work out the role, follow role changes, leave cleanly.

Every announce period the node re-publishes its signed NodeInfo (which expires unless
refreshed), reads the live swarm, and recomputes roles with the same pure function every other
node runs. Role workers (rollout, trainer) plug in through `on_role_change` and see the swarm only
through the typed questions below (`trainers`, `members`, `holders`) and `advertise`; this
module knows nothing of RL. The node's view is also written to `WORKDIR/status.json`. While its
work waits for space on a full disk (`nodes.disk`), its state says so: `paused: disk full (spool)`.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crypto.identity import Identity
from nodes.disk import Disk
from nodes.logs import lines_lost
from swarm.manifest import SignedManifest
from swarm.membership import Membership, SwarmView
from swarm.records import MAX_FAILURE_CHARS, MAX_STATE_CHARS, Hardware, NodeInfo, TrainerState
from swarm.roles import ROLLOUT, TRAINER, can_train, trainers_of
from swarm.trust import TrustRoot

log = logging.getLogger("echo_swarm.node")
SOFTWARE = "echo-swarm 0.1.0"


@dataclass
class NodeOptions:
    listen: list[str]
    workdir: Path
    announce: list[str] | None = None
    initial_peers: list[str] = field(default_factory=list)
    role_pref: str = "auto"
    nat_port_map: bool = False
    updates_file: Path | None = None
    """Where the owner's manifest updates appear (`swarm trust` writes MANIFEST.updates); re-read each period."""
    join_patience_s: float = 60.0
    """How long to keep trying initial peers that do not answer (not up yet, behind a partition)."""
    shape_links: Path | None = None
    """A links file: emulate the scenario's links inside the transport (`swarm simulate` without root)."""


class Node:
    def __init__(
        self,
        signed: SignedManifest,
        identity: Identity,
        options: NodeOptions,
        hardware: Hardware,
        decode_tok_s: float,
        trust: TrustRoot | None = None,
    ):
        self.signed = signed
        self.trust = trust or TrustRoot(signed)
        """The manifest with the owner's updates: who may train and roll out now."""
        self.identity = identity
        self.options = options
        self.hardware = hardware
        self.decode_tok_s = decode_tok_s
        self.peer_id = identity.peer_id  # the key is the libp2p identity: the DHT will report the same
        self.role = "joining"
        self.state = "starting"
        self.disk = Disk(options.workdir)
        """The workdir's space: work that cannot write waits there, and our state says so."""
        self.adapter_version = -1
        self.trainer_state = TrainerState()
        self.failed: dict[str, str] = {}
        """Roles this node could not start, and why (in our record: nobody gives them to us again)."""
        self.fatal: str | None = None
        """Set when no role is left that this node can serve: the node leaves, and says why."""
        self._stop: threading.Event | None = None
        self._trainers: list[NodeInfo] = []  # as the role function named them at the last tick
        self.on_role_change: Callable[[str, str], None] | None = None
        self.door_stats: Callable[[], dict] | None = None
        """The P2P door's counters (in-flight bytes, refusals by reason), shown in status.json."""
        self.on_tick: Callable[[], None] | None = None
        """Run first in every announce period (the services read new manifest updates here)."""
        self.membership = Membership(
            signed,
            identity,
            listen=options.listen,
            announce=options.announce,
            initial_peers=options.initial_peers,
            identity_dir=options.workdir,
            nat_port_map=options.nat_port_map,
            join_patience_s=options.join_patience_s,
            member_allowed=lambda key_id: self.trust.manifest.member_allowed(key_id),
        )
        self.view = SwarmView([])

    @property
    def period(self) -> float:
        return self.signed.manifest.swarm.announce_period_s

    def start(self) -> None:
        self.membership.start()
        assert self.membership.peer_id == self.peer_id, "the DHT runs under another identity than our key"
        self.maddrs = self.membership.visible_maddrs()
        self.state = "ready"

    def record(self) -> NodeInfo:
        now = time.time()
        return NodeInfo(
            run_digest=self.signed.digest,
            peer_id=self.peer_id,
            key_id=self.identity.key_id,
            public_key=self.identity.public_key.hex(),
            hpke_keys={"x25519": self.identity.hpke_public("x25519").hex()},
            addrs=tuple(self.maddrs),
            hardware=self.hardware,
            decode_tok_s=self.decode_tok_s,
            role=self.role,
            role_pref=self.options.role_pref,
            state=self.shown_state(),
            adapter_version=self.adapter_version,
            software=SOFTWARE,
            issued_at=now,
            expires_at=now + self.signed.manifest.record_ttl,
            trainer=self.trainer_state,
            failed=dict(self.failed),
        )

    def shown_state(self) -> str:
        """Our state as the swarm and status.json see it: a ready node whose work waits on a full
        disk says which work."""
        paused = self.disk.paused
        return f"paused: {paused}"[:MAX_STATE_CHARS] if paused and self.state == "ready" else self.state

    def tick(self) -> None:
        """One announce period: publish, read, reassign."""
        if self.on_tick is not None:
            self.on_tick()
        own = self.record()
        self.membership.publish(own)
        view = self.membership.view()
        others = [r for r in view.records if r.peer_id != self.peer_id]
        records = sorted(others + [own], key=lambda r: r.peer_id)
        self._trainers = trainers_of(records, self.trust.manifest)  # once a period, for every caller
        self.view = SwarmView(records, view.rejected)
        new_role = TRAINER if any(r.peer_id == self.peer_id for r in self._trainers) else ROLLOUT
        if new_role != self.role:
            old, self.role = self.role, new_role
            trainers = [r.peer_id[-8:] for r in self.trainers()]
            log.info("role %s -> %s (%d live nodes, other trainers: %s)", old, new_role, len(self.view.records),
                     ", ".join(trainers) or "none")
            if self.on_role_change is not None:
                self.on_role_change(old, new_role)
            self.membership.publish(self.record())  # tell the swarm at once, not a period later
        self.write_status()

    # -- what workers may ask of the swarm -------------------------------------------------------

    def trainers(self) -> list[NodeInfo]:
        """Other live nodes the role function names trainer (never what a record says of itself)."""
        return [r for r in self._trainers if r.peer_id != self.peer_id]

    def members(self) -> dict[str, bytes]:
        """key id -> Ed25519 public key of every live member allowed by the manifest."""
        m = self.trust.manifest
        return {r.key_id: bytes.fromhex(r.public_key) for r in self.view.records if m.member_allowed(r.key_id)}

    def holders(self, version: int) -> list[NodeInfo]:
        """Other live nodes whose record says they hold `version` or newer."""
        return [r for r in self.view.records if r.peer_id != self.peer_id and r.adapter_version >= version]

    def advertise(self, *, adapter_version: int | None = None, trainer: TrainerState | None = None) -> None:
        """Change what our next record says (published within an announce period)."""
        if adapter_version is not None:
            self.adapter_version = adapter_version
        if trainer is not None:
            self.trainer_state = trainer

    def role_failed(self, role: str, reason: str) -> None:
        """A role worker could not start: say so in our record at once, so the role function
        moves the role to another node (a trainer gives up its slot) and `swarm peers` shows
        why; with no role left that we can serve, stop the node (the caller exits non-zero)."""
        self.failed[role] = reason[:MAX_FAILURE_CHARS]
        self.state = "failed"
        log.error("cannot serve as %s: %s", role, reason)
        self.membership.publish(self.record())
        if ROLLOUT in self.failed and not can_train(self.record(), self.trust.manifest):
            self.fatal = "; ".join(f"cannot serve as {r}: {why}" for r, why in self.failed.items())
            if self._stop is not None:
                self._stop.set()

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        while not stop.is_set():
            started = time.monotonic()
            self.tick()
            stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def write_status(self) -> None:
        status = {
            "peer_id": self.peer_id,
            "key_id": self.identity.key_id,
            "role": self.role,
            "state": self.shown_state(),
            "maddrs": self.maddrs,
            "adapter_version": self.adapter_version,
            "peers": [peer_summary(r) for r in self.view.records],
            "rejected": self.view.rejected,
            "door": self.door_stats() if self.door_stats is not None else {},
            "disk": self.disk.summary(log_lines_lost=lines_lost()),
            "updated_at": time.time(),
        }
        path = self.options.workdir / "status.json"
        tmp = path.with_name(f"status.json.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(status, indent=1))
            os.replace(tmp, path)
        except OSError as e:  # a full disk: the next period writes it again (our record says we paused)
            tmp.unlink(missing_ok=True)
            self.disk.skip(path.name, e)

    def shutdown(self) -> None:
        self.state = "leaving"
        self.membership.shutdown()


def peer_summary(r: NodeInfo) -> dict:
    """The fields `swarm peers` shows, as plain JSON."""
    hw = r.hardware
    gpu = ", ".join(f"{name} {mem:g}GB" for name, mem in hw.gpus) or ("Apple MPS" if hw.mps else "")
    return {
        "peer_id": r.peer_id,
        "key_id": r.key_id,
        "role": r.role,
        "role_pref": r.role_pref,
        "state": r.state,
        "failed": dict(r.failed),
        "hardware": {"cpu": hw.cpu, "cores": hw.cores, "ram_gb": hw.ram_gb, "gpu": gpu, "engines": list(hw.engines)},
        "decode_tok_s": r.decode_tok_s,
        "adapter_version": r.adapter_version,
        "software": r.software,
        "age_s": round(max(0.0, time.time() - r.issued_at), 1),
        "addrs": list(r.addrs),
    }
