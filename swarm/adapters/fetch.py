"""Fetching one adapter version from the peers that hold it, verified before it is kept."""
from __future__ import annotations

import logging

from swarm.adapters.bundle import MAX_BUNDLE_BYTES
from swarm.adapters.peers import PeerFailures
from swarm.adapters.store import AdapterStore
from swarm.messages import AdapterRequest
from swarm.provenance.log import ProvenanceLog
from swarm.rejections import Rejection
from swarm.transport import Transport, TransportError

logger = logging.getLogger(__name__)
FETCH_TIMEOUT_S = 30.0
PROGRESS_TIMEOUT_S = 5.0
"""A holder that sends no byte of its reply within this long is dropped for this fetch."""


def fetch_version(transport: Transport, protocol: str, store: AdapterStore, version: int, peers: list[str], *,
                  log: ProvenanceLog, failures: PeerFailures, gguf: bool = False,
                  progress_timeout: float = PROGRESS_TIMEOUT_S) -> bool:
    """Ask `peers` in order (see `rank_holders`) for `version`, whose entry `log` holds, until one sends a bundle that
    verifies; a peer that fails (no reply, a bad bundle) is put in backoff, one that answers it
    no longer holds the version (an empty reply) is not. True once the version is in `store`."""
    held = store.latest()
    ask = AdapterRequest(version=version, have=held.version if held else -1, gguf=gguf).encode()
    for peer in peers:
        try:
            data = transport.request(peer, protocol, ask, max_response=MAX_BUNDLE_BYTES, timeout=FETCH_TIMEOUT_S,
                                     progress_timeout=progress_timeout)
            if not data:
                logger.info("adapter v%d: %s no longer holds it", version, peer[-8:])
                continue
            store.accept(data, want_version=version, log=log)
        except (TransportError, Rejection) as e:
            backoff = failures.failed(peer)
            logger.warning("adapter v%d from %s refused: %s (not asked again for %.0fs)", version, peer[-8:], e, backoff)
            continue
        failures.succeeded(peer)
        return True
    return False
