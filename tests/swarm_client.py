"""A test client that joins a live swarm in-process and talks to its trainer over the real P2P
protocol: it is an ordinary `Node` (so it publishes a signed NodeInfo record as a rollout member
and the trainer counts it among live members), plus a Transport, the real transformers engine
and helpers to build, sign and seal chunks — honest ones, and the crafted ones attack tests send.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from crypto.envelope import sign_envelope
from crypto.identity import Identity
from crypto.sealing import SealContext, seal
from nodes.node import Node
from swarm.adapters.bundle import MAX_BUNDLE_BYTES
from swarm.adapters.peers import PeerFailures
from swarm.adapters.store import AdapterStore
from swarm.chunk import CHUNK_TYPE, TrajectoryChunk, TrajectoryGroup, encode_chunk, new_chunk_id
from swarm.messages import AdapterRequest, Verdict, decode
from swarm.provenance.log import ProvenanceLog
from swarm.provenance.witness import witness_log
from swarm.records import NodeInfo


class SwarmClient:
    def __init__(self, run: Path, workdir: Path, initial_peers: list[str], node_cls: type | None = None,
                 engine: bool = True):
        """`node_cls`: a Node subclass (attack tests make one that lies in its record); `engine`:
        load the transformers engine (needed for honest chunks only)."""
        from nodes.node import Node, NodeOptions
        from swarm.manifest import load_manifest
        from swarm.records import Hardware

        self.signed = load_manifest(run)
        self.m = self.signed.manifest
        self.identity = Identity.generate()
        workdir.mkdir(parents=True, exist_ok=True)
        options = NodeOptions(listen=["/ip4/127.0.0.1/tcp/0"], workdir=workdir, initial_peers=initial_peers,
                              role_pref="rollout")
        # No torch in the advert: the client can never be picked to train.
        self.node = (node_cls or Node)(self.signed, self.identity, options, Hardware(cpu="test client", cores=1), 1.0)
        self.store = AdapterStore(workdir / "adapters", self.signed.digest)
        self.log = ProvenanceLog(workdir / "provenance", self.node.trust)
        self.engine = None
        self._with_engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.node.run, args=(self._stop,), daemon=True)
        self.transport = None

    def start(self) -> SwarmClient:
        from nodes.engines import make_engine
        from nodes.models import resolve_base
        from swarm.transport import make_transport

        self.node.start()
        self._thread.start()  # re-publishes our record every announce period, like any node
        self.transport = make_transport("p2p", dht=self.node.membership.dht)
        if self._with_engine:
            self.engine = make_engine("transformers", resolve_base(self.m.model.base, self.m.model.sha256), threads=1)
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.transport is not None:
            self.transport.close()
        self.node.shutdown()

    # -- the swarm, as the client sees it ---------------------------------------------------

    def trainer(self) -> NodeInfo | None:
        """The node the role function names trainer, as every honest rollout computes it."""
        return next(iter(self.node.trainers()), None)

    def use_version(self, version: int) -> None:
        """Generate with adapter `version`, fetched from the trainer and verified like a rollout does."""
        if self.engine.adapter_version == version:
            return
        if self.store.latest() is None or self.store.latest().version < version:
            trainer = self.trainer()
            self.log.learn_keys({trainer.key_id: bytes.fromhex(trainer.public_key)})
            assert witness_log(self, [trainer.peer_id], PeerFailures()), "the trainer's log did not verify"
            bundle = self.transport.request(trainer.peer_id, self.protocol("adapter"),
                                            AdapterRequest(version=version).encode(),
                                            max_response=MAX_BUNDLE_BYTES, timeout=30)
            self.store.accept(bundle, want_version=version, log=self.log)
        self.engine.set_adapter(version, self.store.path(version))

    def protocol(self, name: str) -> str:
        return f"{self.signed.namespace}/{name}"

    def serve_versions(self, adapter=None) -> None:
        """Serve our log and our versions as any node does (`adapter`: another bundle handler)."""
        from swarm.messages import decode
        from swarm.provenance.sync import LogRequest, log_reply

        self.transport.serve(self.protocol("log"), lambda remote, data: log_reply(self.log, data),
                             max_request=LogRequest.MAX_BYTES)
        self.transport.serve(self.protocol("adapter"), adapter or (
            lambda remote, data: self.store.bundle(decode(AdapterRequest, data).version) or b""), max_request=1024)

    # -- chunks -----------------------------------------------------------------------------

    def honest_chunk(self, version: int, prompts: int, seed: int = 0) -> TrajectoryChunk:
        """`prompts` groups sampled with the real engine under adapter `version`, as a rollout node would."""
        from nodes.engines import SamplingParams
        from nodes.tasks import make_task

        self.use_version(version)
        g = self.m.grpo
        stream = make_task(self.m.task.name, self.m.task.options).prompts(seed)
        texts = [next(stream).text for _ in range(prompts)]
        groups = self.engine.generate(texts, g.group_size, SamplingParams(g.temperature, g.max_new_tokens), seed)
        return TrajectoryChunk(
            run_id=self.m.run.id, chunk_id=new_chunk_id(), producer_key_id=self.identity.key_id,
            policy_version=version, task=self.m.task.name,
            sampling={"temperature": g.temperature, "max_new_tokens": g.max_new_tokens}, created_at=time.time(),
            groups=tuple(TrajectoryGroup.from_samples(s) for s in groups),
        )

    def made_up_chunk(self, version: int, seed: int) -> TrajectoryChunk:
        """A chunk of the run's exact shape with random tokens and invented log-probs: well formed,
        validly signed, and dishonest (what a cheap attacker floods a trainer with)."""
        import random

        g, rng = self.m.grpo, random.Random(seed)
        groups = tuple(TrajectoryGroup((1,) + tuple(rng.randrange(4, 14) for _ in range(4)),
                                       tuple(tuple(rng.randrange(4, 14) for _ in range(3)) for _ in range(g.group_size)),
                                       tuple((-1.0, -1.0, -1.0) for _ in range(g.group_size)))
                       for _ in range(g.prompts_per_chunk))
        return TrajectoryChunk(
            run_id=self.m.run.id, chunk_id=new_chunk_id(), producer_key_id=self.identity.key_id,
            policy_version=version, task=self.m.task.name,
            sampling={"temperature": g.temperature, "max_new_tokens": g.max_new_tokens}, created_at=time.time(),
            groups=groups,
        )

    def sign(self, chunk: TrajectoryChunk, signer: Identity | None = None) -> bytes:
        return sign_envelope(CHUNK_TYPE, encode_chunk(chunk), [signer or self.identity])

    def seal(self, envelope: bytes, *, sender: Identity | None = None, run_id: str | None = None,
             to: NodeInfo | None = None) -> bytes:
        """Sealed to the trainer's (or `to`'s) HPKE key, naming `sender` (default: us) in the sealed context."""
        trainer = to or self.trainer()
        context = SealContext(run_id or self.m.run.id, (sender or self.identity).key_id, new_chunk_id())
        return seal(envelope, {trainer.key_id: bytes.fromhex(trainer.hpke_keys["x25519"])}, context)

    def send(self, blob: bytes, timeout: float = 30, to: NodeInfo | None = None) -> dict:
        """One request on the trainer's (or `to`'s) `chunks` protocol; its verdict, as a dict."""
        reply = self.transport.request((to or self.trainer()).peer_id, f"{self.signed.namespace}/chunks", blob,
                                       max_response=Verdict.MAX_BYTES, timeout=timeout)
        return dataclasses.asdict(decode(Verdict, reply))


# -- what attack tests lie with ------------------------------------------------------------------


class ClaimsToTrain(Node):
    """A member whose record says it is the trainer, prefers to train, and has the best hardware
    there is: self-signed, so it verifies, and false."""

    def record(self):
        from swarm.records import Hardware

        return dataclasses.replace(super().record(), role="trainer", role_pref="trainer", decode_tok_s=1e6,
                                   hardware=Hardware(cpu="claimed", cores=128, ram_gb=2048.0, gpus=(("H100", 80.0),),
                                                     torch=True, engines=("transformers",)))


def counting(calls, name: str):
    """A handler that counts the requests it gets (the attacker's, to prove nobody asked it)."""
    def handler(remote: str, data: bytes) -> bytes:
        calls[name] += 1
        return b""
    return handler
