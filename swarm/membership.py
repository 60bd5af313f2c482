"""Joining a run's DHT, publishing our NodeInfo, and reading the live swarm.

Wraps hivemind.DHT with the settings DESIGN.md §7 found necessary: explicit listen/announce
addresses, no UPnP unless asked, the node key as libp2p identity (so peer id == signing key),
our record validator, and a timeout on every call (a hivemind call can otherwise hang).
"""
from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crypto.identity import Identity
from swarm.manifest import SignedManifest
from swarm.records import NodeInfo, sign_record, verify_record
from swarm.rejections import Reason, RecordRejected
from swarm.validator import RunRecordValidator

log = logging.getLogger(__name__)
CALL_TIMEOUT_S = 10.0


class JoinError(RuntimeError):
    """The node could not join the swarm (bad address, unreachable peers, port in use)."""


@dataclass
class SwarmView:
    """The verified, unexpired records we can see, plus what we rejected while reading."""

    records: list[NodeInfo]
    rejected: dict[str, int] = field(default_factory=dict)


def nodes_key(signed: SignedManifest) -> str:
    return f"{signed.namespace}/nodes"


JOIN_RETRY_S = 3.0
NOT_ANSWERING = ("bootstrap peers", "none of the initial_peers responded")
"""hivemind's words for "no initial peer answered" (from p2pd's connect, and from the DHT's ping
of them, when the peer is reachable but not ready yet): worth retrying within the join patience."""
"""Pause between attempts to reach initial peers that do not answer."""


class Membership:
    def __init__(
        self,
        signed: SignedManifest,
        identity: Identity | None,
        *,
        listen: list[str],
        announce: list[str] | None = None,
        initial_peers: list[str] | None = None,
        identity_dir: Path | None = None,
        client_mode: bool = False,
        nat_port_map: bool = False,
        join_timeout_s: float = 20.0,
        join_patience_s: float = 0.0,
        member_allowed: Callable[[str], bool] | None = None,
    ):
        """`member_allowed(key_id)`: whose records count (default: the manifest's rollout keys;
        a node passes its manifest as the owner's updates leave it). `join_patience_s`: how long
        to keep trying initial peers that do not answer (not up yet, or behind a partition)."""
        self.signed = signed
        self.identity = identity
        self.member_allowed = member_allowed or signed.manifest.member_allowed
        self.validator = RunRecordValidator(signed.digest, nodes_key(signed))
        self._read_rejections: dict[str, int] = {}
        self._last_records: list[NodeInfo] = []
        self._kwargs = {
            "host_maddrs": listen,
            "announce_maddrs": announce,
            "initial_peers": initial_peers or None,
            "nat_port_map": nat_port_map,
            "client_mode": client_mode,
            "record_validators": [self.validator],
            "startup_timeout": join_timeout_s,
            "bootstrap_timeout": join_timeout_s,
            "check_if_identity_free": False,
        }
        if identity is not None and identity_dir is not None:
            path = Path(identity_dir) / "libp2p.key"
            identity.write_libp2p_identity(path)
            self._kwargs["identity_path"] = str(path)
        self._join_timeout_s = join_timeout_s
        self._join_patience_s = join_patience_s
        self.dht = None

    def start(self) -> None:
        import hivemind

        give_up = time.monotonic() + self._join_patience_s
        while True:
            try:
                gc.freeze()  # the DHT runs in a forked child: keep the GC from touching (copying) our pages there
                self.dht = hivemind.DHT(start=True, await_ready=False, **self._kwargs)
                self.dht.wait_until_ready(timeout=self._join_timeout_s + 10)
                return
            except Exception as e:  # noqa: BLE001 - hivemind raises a zoo of types here; all mean "could not join"
                self.shutdown()
                if not any(m in str(e) for m in NOT_ANSWERING) or time.monotonic() > give_up:
                    raise JoinError(_explain_join_failure(e, self._kwargs)) from None
                log.warning("the initial peers do not answer yet; trying again for up to %.0f s",
                            give_up - time.monotonic())
                time.sleep(JOIN_RETRY_S)

    @property
    def peer_id(self) -> str:
        return str(self.dht.peer_id)

    def visible_maddrs(self) -> list[str]:
        return [str(m) for m in self.dht.get_visible_maddrs()]

    def publish(self, info: NodeInfo) -> bool:
        """Store our signed record under our public key; the record's own expiry is the DHT expiry."""
        envelope = sign_record(info, self.identity)
        future = self.dht.store(
            nodes_key(self.signed), envelope, info.expires_at, subkey=info.public_key, return_future=True
        )
        try:
            return bool(future.result(timeout=CALL_TIMEOUT_S))
        except Exception as e:  # noqa: BLE001 - a failed DHT call must not stop the announce loop
            log.warning("publishing our record failed: %r", e)
            return False

    def view(self) -> SwarmView:
        """Live records, each verified again here (defence in depth) and deduplicated by peer."""
        future = self.dht.get(nodes_key(self.signed), latest=True, return_future=True)
        try:
            found = future.result(timeout=CALL_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - a failed DHT call must not stop the announce loop
            # A read that times out under load says nothing about who left: keep what we last
            # saw until its records expire, instead of losing sight of the trainer for a period.
            log.warning("reading the swarm failed: %r", e)
            now = time.time()
            kept = [r for r in self._last_records if r.expires_at >= now and self.member_allowed(r.key_id)]
            return SwarmView(kept, self.rejections())
        now = time.time()
        records: dict[str, NodeInfo] = {}
        if found is not None and isinstance(found.value, dict):
            for owner, item in found.value.items():
                try:
                    info = verify_record(
                        item.value, owner_public_key_hex=owner, run_digest=self.signed.digest,
                        expiration_time=item.expiration_time,
                    )
                except RecordRejected as e:
                    self._count(e.reason)
                    continue
                if info.expires_at < now:
                    continue
                if not self.member_allowed(info.key_id):
                    self._count(Reason.NOT_MEMBER)
                    continue
                records[info.peer_id] = info
        self._last_records = sorted(records.values(), key=lambda r: r.peer_id)
        return SwarmView(self._last_records, self.rejections())

    def _count(self, reason: Reason) -> None:
        self._read_rejections[reason.value] = self._read_rejections.get(reason.value, 0) + 1

    def rejections(self) -> dict[str, int]:
        merged = dict(self.validator.rejections())
        for reason, n in self._read_rejections.items():
            merged[reason] = merged.get(reason, 0) + n
        return merged

    def shutdown(self) -> None:
        if self.dht is not None:
            try:
                self.dht.shutdown()
            finally:
                self.dht = None


def _explain_join_failure(error: Exception, kwargs: dict) -> str:
    text = str(error) or type(error).__name__
    peers = kwargs.get("initial_peers")
    if peers:
        return (
            f"could not join the swarm through {', '.join(peers)} ({text}). Check that a node is running "
            "there and that the multiaddr (including /p2p/PEER_ID) is the one it printed."
        )
    return f"could not start the DHT on {', '.join(kwargs['host_maddrs'])} ({text}). Is the address free?"
