"""Peer-to-peer request/response behind one small interface.

    base.py       Transport (the ABC callers use: serve, request, close, stats), TransportError,
                  FrameTooLarge, NoProgress, and the contract every implementation keeps
    p2p.py        P2PTransport: hivemind libp2p streams, hardened at the door (byte budgets, one
                  read deadline per request, rate limits, fair scheduling, fast no-progress
                  failure on the caller's side); hivemind is imported lazily
    memory.py     MemoryTransport + MemoryHub: the same contract and admission in one process,
                  for unit tests of protocol logic without a network
    admission.py  the pure admission logic both use: TokenBucket, RateLimiter, ByteBudget,
                  FairQueue, Door, and PeerStanding (a service's verdicts -> `priority`)

Make one with `make_transport("p2p", dht=dht)` or `make_transport("memory", hub=hub, peer_id="a")`.
Importing this package imports neither hivemind nor torch.
"""
from __future__ import annotations

from swarm.transport.admission import PeerStanding
from swarm.transport.base import FrameTooLarge, NoProgress, Transport, TransportError
from swarm.transport.memory import MemoryHub, MemoryTransport
from swarm.transport.p2p import P2PTransport

__all__ = ["FrameTooLarge", "MemoryHub", "MemoryTransport", "NoProgress", "P2PTransport", "PeerStanding",
           "Transport", "TransportError", "make_transport"]


def make_transport(kind: str = "p2p", **kwargs) -> Transport:
    """"p2p": P2PTransport(dht=<hivemind.DHT>, ...); "memory": MemoryTransport(hub=, peer_id=, ...).
    Other keyword arguments go to the constructor (budgets, rates, timeouts)."""
    if kind == "p2p":
        return P2PTransport(kwargs.pop("dht"), **kwargs)
    if kind == "memory":
        return MemoryTransport(kwargs.pop("hub"), kwargs.pop("peer_id"), **kwargs)
    raise ValueError(f"unknown transport kind {kind!r} (p2p, memory)")
