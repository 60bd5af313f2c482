"""Hostile members of a live swarm (issue: the protocol safe among strangers), one test per attack.

A real trainer node and a real rollout node (`swarm node` processes) run a swarm whose manifest
names the trainer's key; attackers join in-process as ordinary members (tests/swarm_client.py)
and misbehave over the real P2P protocols. Each test checks that the attack fails and that the
honest rollout keeps being served meanwhile: the trainer's accepted-chunk count keeps rising.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest
from conftest import node_events, start_authorised_trainer, wait_for
from swarm_client import ClaimsToTrain, SwarmClient, counting

from nodes.node import Node
from scenarios.processes import NodeProcess

pytestmark = pytest.mark.slow
PERIOD = 1.0


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, launched):
    tmp = tmp_path_factory.mktemp("hostile")
    run, trainer = start_authorised_trainer(
        launched, tmp, "hostile",
        grpo={"prompts_per_step": 8, "prompts_per_chunk": 2, "group_size": 2, "steps": 100_000},
        sync={"mode": "async", "staleness": 8},  # keeps 12 versions
        swarm={"announce_period_s": PERIOD},
    )
    maddr = trainer.wait_joined()
    rollout = NodeProcess("rollout", tmp / "rollout", ["--run", str(run), "--key", str(tmp / "rollout.key"),
                                                       "--role", "rollout", "--engine", "transformers",
                                                       "--threads", "1", "--initial-peers", maddr]).start()
    launched.append(rollout)
    clients: list[SwarmClient] = []

    def join(name: str, listed: bool = True, **kwargs) -> SwarmClient:
        client = SwarmClient(run, tmp / name, [maddr], **kwargs).start()
        clients.append(client)
        if not listed:  # it publishes no record: nobody will see it
            return client
        wait_for(lambda: client.node.peer_id in peer_ids(trainer), 30, f"the trainer to see {name}", [trainer])
        wait_for(lambda: client.trainer() is not None, 30, f"{name} to see the trainer", [trainer])
        return client

    try:
        wait_for(lambda: accepted(trainer) >= 2, 120, "the honest rollout to deliver", [trainer, rollout])
        yield trainer, rollout, join
    finally:
        for client in clients:
            client.close()
        rollout.stop()
        trainer.stop()


def accepted(trainer: NodeProcess) -> int:
    lines = node_events(trainer, "accounting")
    return lines[-1]["accepted"] if lines else 0


def peer_ids(node: NodeProcess) -> set[str]:
    return {p["peer_id"] for p in (node.status() or {}).get("peers", [])}


def door(node: NodeProcess) -> dict:
    return (node.status() or {}).get("door", {})


def honest_progress(trainer, rollout, chunks: int, what: str) -> None:
    """The honest rollout gets `chunks` more chunks accepted while an attack goes on."""
    base = accepted(trainer)
    wait_for(lambda: accepted(trainer) >= base + chunks, 180, f"{chunks} honest chunks {what}", [trainer, rollout])


def test_a_self_declared_trainer_receives_no_chunk_and_is_asked_for_nothing(swarm):
    trainer, rollout, join = swarm
    liar = join("liar", node_cls=ClaimsToTrain, engine=False)
    calls: Counter = Counter()
    for name in ("chunks", "status", "adapter"):
        liar.transport.serve(f"{liar.signed.namespace}/{name}", counting(calls, name), max_request=1 << 20)
    wait_for(lambda: any(p["peer_id"] == liar.node.peer_id and p["role"] == "trainer"
                         for p in (rollout.status() or {}).get("peers", [])), 30,
             "the rollout to read the liar's record", [rollout])
    honest_progress(trainer, rollout, 6, "with a self-declared trainer in the swarm")
    assert calls == Counter()  # before: it got and decrypted about half the chunks, and every adapter request
    assert rollout.status()["role"] == "rollout" and trainer.status()["role"] == "trainer"


def test_a_holder_that_never_answers_costs_one_short_timeout(swarm):
    from swarm.adapters.fetch import fetch_version
    from swarm.adapters.peers import PeerFailures, rank_holders
    from swarm.provenance.witness import witness_log
    from swarm.transport import NoProgress

    trainer, rollout, join = swarm
    hang = threading.Event()
    holder = join("hanging-holder", engine=False)
    holder.node.advertise(adapter_version=10**6)  # claims to hold every version
    holder.transport.serve(f"{holder.signed.namespace}/adapter", lambda remote, data: hang.wait(120) and b"",
                           max_request=1024)
    # An honest holder of a fixed version (the trainer itself moves on too fast to hold one still).
    keeper = member_holding(join, "keeper", trainer.status()["peer_id"])
    keeper.serve_versions()
    version, adapter = keeper.store.latest().version, keeper.protocol("adapter")
    asker = join("asker", engine=False)
    asker.log.learn_keys({r.key_id: bytes.fromhex(r.public_key) for r in asker.node.trainers()})
    assert witness_log(asker, [keeper.node.peer_id], PeerFailures())
    failures = PeerFailures()
    try:
        assert fetch_version(asker.transport, adapter, asker.store, version, [holder.node.peer_id, keeper.node.peer_id],
                             failures=failures, log=asker.log, progress_timeout=2)
        assert asker.store.latest().version == version  # from the honest holder, once the first one stalled
        assert failures.banned(holder.node.peer_id) and not failures.banned(keeper.node.peer_id)
        # The next fetch does not ask it again while it is in backoff.
        assert holder.node.peer_id not in rank_holders(version, asker.node.holders(version), failures=failures)
        with pytest.raises(NoProgress):  # and what it cost: the no-progress bound, not the 30 s request timeout
            asker.transport.request(holder.node.peer_id, adapter, b"{}", max_response=1024, timeout=60,
                                    progress_timeout=2)
        honest_progress(trainer, rollout, 2, "while the holder hangs")
    finally:
        hang.set()


def test_a_relay_that_changes_the_config_is_refused_and_the_next_holder_asked(swarm):
    """A relaying peer served a genuine version with lora_alpha x64 in adapter_config.json: before,
    the rollout stored and used it (every chunk it then made was rejected as dishonest). The entry
    names the config's digest: the relay's bundle is refused, the relay put in backoff, and the
    next holder's copy, the signed config byte for byte, is taken."""
    from swarm.adapters.bundle import pack_parts, split_parts
    from swarm.adapters.fetch import fetch_version
    from swarm.adapters.peers import PeerFailures
    from swarm.messages import AdapterRequest, decode
    from swarm.provenance.witness import witness_log

    trainer, _, join = swarm
    keeper = member_holding(join, "keeper2", trainer.status()["peer_id"])
    keeper.serve_versions()
    relay = member_holding(join, "relay", keeper.node.peer_id)
    version = relay.store.latest().version

    def tampered(remote: str, data: bytes) -> bytes:
        parts = split_parts(relay.store.bundle(decode(AdapterRequest, data).version))
        return pack_parts(parts[0], parts[1], parts[2].replace(b'"lora_alpha": 16', b'"lora_alpha": 1024'),
                          *parts[3:])

    relay.serve_versions(adapter=tampered)
    asker = join("asker2", engine=False)
    asker.log.learn_keys({r.key_id: bytes.fromhex(r.public_key) for r in asker.node.trainers()})
    assert witness_log(asker, [relay.node.peer_id], PeerFailures())  # a signed log may be relayed by anyone
    failures = PeerFailures()
    assert fetch_version(asker.transport, asker.protocol("adapter"), asker.store, version,
                         [relay.node.peer_id, keeper.node.peer_id], log=asker.log, failures=failures)
    assert failures.banned(relay.node.peer_id) and not failures.banned(keeper.node.peer_id)
    config = (asker.store.path(version) / "adapter_config.json").read_bytes()
    assert config == (keeper.store.path(version) / "adapter_config.json").read_bytes() and b"1024" not in config


def member_holding(join, name: str, source: str) -> SwarmClient:
    """A member that synced the provenance log from `source` and fetched its newest version."""
    from swarm.adapters.fetch import fetch_version
    from swarm.adapters.peers import PeerFailures
    from swarm.provenance.witness import witness_log

    client = join(name, engine=False)
    client.log.learn_keys({r.key_id: bytes.fromhex(r.public_key) for r in client.node.trainers()})
    assert witness_log(client, [source], PeerFailures())
    assert fetch_version(client.transport, client.protocol("adapter"), client.store, client.log.head().version,
                         [source], log=client.log, failures=PeerFailures())
    return client


def test_held_open_frames_cost_bounded_memory(swarm):
    """100 streams that announce a full chunk frame and stop one byte short: only the per-peer
    budget's worth is ever held, the rest is refused unread (busy), honest chunks keep flowing."""
    from hivemind.p2p import PeerID

    from swarm.chunk import ChunkLimits

    trainer, rollout, join = swarm
    attacker = join("holder-open", engine=False)
    frame = ChunkLimits.for_run(attacker.m.grpo, vocab_size=1).sealed_bytes
    name = f"{attacker.signed.namespace}/chunks"
    target = PeerID.from_base58(next(iter(attacker.node.trainers())).peer_id)

    async def hold_open(p2p, n):
        streams = []
        for _ in range(n):
            _, _reader, writer = await p2p.call_binary_stream_handler(target, name)
            writer.write(frame.to_bytes(8, "big") + b"\0" * (frame - 1))
            streams.append(writer)
        await asyncio.gather(*(w.drain() for w in streams), return_exceptions=True)
        return streams

    async def close(p2p, streams):
        for writer in streams:
            writer.close()

    busy_before = door(trainer).get("refused", {}).get("busy", 0)
    streams = attacker.transport._run(hold_open(attacker.transport.p2p, 100), timeout=120)
    try:
        wait_for(lambda: door(trainer).get("refused", {}).get("busy", 0) >= busy_before + 90, 30,
                 "the held-open frames to be refused busy", [trainer])
        stats = door(trainer)
        assert stats["in_flight"] <= stats["peer_budget"] and stats["peak_in_flight"] <= stats["global_budget"]
        honest_progress(trainer, rollout, 2, "while the frames are held open")
    finally:
        attacker.transport._run(close(attacker.transport.p2p, streams), timeout=30)


def test_floods_from_many_keys_do_not_starve_the_honest_rollout(swarm):
    """Made-up signed chunks from several fresh member keys plus a status flood: rate limited,
    rejected (dishonest) and served after peers with a good standing; the trainer keeps training
    on the honest rollout's chunks throughout."""
    from swarm.messages import StatusRequest
    from swarm.transport import TransportError

    trainer, rollout, join = swarm
    sybils = [join(f"sybil{i}", engine=False) for i in range(6)]
    stop = threading.Event()
    sent: Counter = Counter()

    def flood_chunks(client: SwarmClient, seed: int) -> None:
        while not stop.is_set():
            target = client.trainer()
            if target is None:  # our view of the swarm lapsed for a moment (a slow DHT read under load)
                stop.wait(0.1)
                continue
            chunk = client.made_up_chunk(target.trainer.version, seed + sent["chunks"])
            try:
                client.send(client.seal(client.sign(chunk), to=target), timeout=20, to=target)
            except TransportError:
                pass  # refused unread: exactly what the door should do
            sent["chunks"] += 1

    def flood_status(client: SwarmClient) -> None:
        """Bursts of 200 concurrent status requests (each 8-byte framed, as the transport sends)."""
        from hivemind.p2p import PeerID

        peer = PeerID.from_base58(target_peer)
        name, request = f"{client.signed.namespace}/status", StatusRequest().encode()

        async def one(p2p):
            _, reader, writer = await p2p.call_binary_stream_handler(peer, name)
            writer.write(len(request).to_bytes(8, "big") + request)
            await writer.drain()
            await asyncio.wait_for(reader.read(1), 10)
            writer.close()

        async def burst(p2p, n):
            return await asyncio.gather(*(one(p2p) for _ in range(n)), return_exceptions=True)

        while not stop.is_set():
            client.transport._run(burst(client.transport.p2p, 200), timeout=60)
            sent["status"] += 200

    target_peer = wait_for(sybils[0].trainer, 30, "sybil0 to see the trainer", [trainer]).peer_id
    threads = [threading.Thread(target=flood_chunks, args=(c, 1000 * i), daemon=True) for i, c in enumerate(sybils)]
    threads.append(threading.Thread(target=flood_status, args=(sybils[0],), daemon=True))
    rejected_before = dict(node_events(trainer, "accounting")[-1]["rejected"])
    for t in threads:
        t.start()
    try:
        time.sleep(5)  # let the flood build up
        honest_progress(trainer, rollout, 4, "during the flood")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    rejected = node_events(trainer, "accounting")[-1]["rejected"]
    assert rejected.get("dishonest", 0) > rejected_before.get("dishonest", 0)
    assert door(trainer)["refused"].get("rate_limited", 0) > 0, (sent, door(trainer))
    assert trainer.alive() and rollout.alive()


class Unlisted(Node):
    """On the DHT and able to open streams, but it never publishes a record: nobody's member."""

    def tick(self) -> None:
        pass


def test_cosignatures_from_a_stranger_or_under_another_key_are_refused(swarm):
    """The trainer keeps only cosignatures of live members, each under the member's own key: a
    node without a record is an unknown sender (not 'bad_signature': a restarted trainer meets
    honest witnesses it has not seen yet), and a member handing in a stranger's line is refused."""
    from crypto.identity import Identity
    from swarm.messages import Verdict, decode
    from swarm.provenance.checkpoints import CosignRequest, cosign

    trainer, rollout, join = swarm
    trainer_peer = trainer.status()["peer_id"]
    note_path = trainer.workdir / "provenance" / "checkpoint.note"

    def ask(client: SwarmClient, signer: Identity) -> str | None:
        """The trainer's verdict on `signer`'s cosignature of its newest checkpoint, sent by `client`
        (asked again if a new checkpoint came out meanwhile: that one is merely stale)."""
        for _ in range(10):
            note = note_path.read_bytes()
            request = CosignRequest(note=note.decode(), cosignature=cosign(note, signer, int(time.time())).decode())
            reply = client.transport.request(trainer_peer, client.protocol("cosign"), request.encode(),
                                             max_response=Verdict.MAX_BYTES, timeout=30)
            reason = decode(Verdict, reply).reason
            if reason != "stale":
                return reason
        return reason

    stranger = join("stranger", listed=False, node_cls=Unlisted, engine=False)
    assert ask(stranger, stranger.identity) == "unknown_sender"
    member = join("witness-liar", engine=False)
    assert ask(member, Identity.generate()) == "bad_signature"  # a line under a key that is not the sender's
    honest_progress(trainer, rollout, 2, "after refused cosignatures")
