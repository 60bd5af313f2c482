"""Four real `swarm node` processes on 127.0.0.1: join, advertise, pick roles, survive a forger
and a crashed trainer, and leave nothing running behind."""
from __future__ import annotations

import json
import time

import psutil
import pytest
from conftest import make_manifest, run_cli, wait_for

from scenarios.processes import NodeProcess

pytestmark = pytest.mark.slow

PERIOD = 1.0  # announce period for the test swarm; records live max(2 x period, skew=5s) = 5s
TTL = 5.0




def view_of(node: NodeProcess) -> dict[str, dict]:
    status = node.status() or {}
    return {p["peer_id"]: p for p in status.get("peers", [])}


@pytest.fixture(scope="module")
def swarm4(tmp_path_factory, launched):
    from crypto.identity import Identity

    tmp = tmp_path_factory.mktemp("swarm4")
    owner = Identity.generate()
    owner.save(tmp / "owner.key")
    authorised = []  # every node may train (so one can take over from a crashed trainer); by default only the owner
    for i in range(4):
        key = Identity.generate()
        key.save(tmp / f"n{i}.key")
        authorised += ["--trainer-key", key.key_id]
    run = make_manifest(tmp, tmp / "owner.key", "--announce-period", str(PERIOD), *authorised)
    nodes = []
    boot = NodeProcess("n0", tmp / "n0", ["--run", str(run), "--key", str(tmp / "n0.key")]).start()
    launched.append(boot)
    nodes.append(boot)
    maddr = boot.wait_joined()
    for i in range(1, 4):
        node = NodeProcess(f"n{i}", tmp / f"n{i}", ["--run", str(run), "--key", str(tmp / f"n{i}.key"),
                                                   "--initial-peers", maddr]).start()
        launched.append(node)
        nodes.append(node)
    for node in nodes:
        node.wait_joined()
    wait_for(lambda: all(len(view_of(n)) == 4 for n in nodes), 60, "every node to see 4 peers")
    yield run, nodes
    for node in nodes:
        node.stop()


def test_peers_lists_all_nodes_with_hardware_and_one_trainer(swarm4):
    run, nodes = swarm4
    result = run_cli("peers", "--run", str(run), "--initial-peers", nodes[0].maddr, "--json")
    assert result.returncode == 0, result.stderr
    peers = json.loads(result.stdout)["peers"]
    assert len(peers) == 4
    assert {p["peer_id"] for p in peers} == {n.status()["peer_id"] for n in nodes}
    for p in peers:
        assert p["hardware"]["cores"] >= 1 and p["hardware"]["ram_gb"] > 0 and p["decode_tok_s"] > 0
        assert "transformers" in p["hardware"]["engines"]
    assert [p["role"] for p in peers].count("trainer") == 1  # the manifest's one trainer slot

    table = run_cli("peers", "--run", str(run), "--initial-peers", nodes[0].maddr)
    assert table.returncode == 0 and "4 live node(s)" in table.stdout and "trainer" in table.stdout


@pytest.mark.parametrize("forgery, reason", [
    ("victims_key_signed_by_another", "bad_signature"),  # the victim's identity, signed by another key
    ("own_key_naming_victims_peer_id", "wrong_peer_id"),  # a fresh key's own record naming the victim's peer id
])
def test_no_forged_record_can_stand_in_for_another_peer(swarm4, forgery, reason):
    """Before, the second forgery replaced the victim in every view (its chunks were all refused,
    a rollout lost its trainer); now every honest replica refuses both."""
    import hivemind

    from crypto.identity import Identity
    from swarm.manifest import load_manifest
    from swarm.membership import nodes_key
    from swarm.records import NodeInfo, sign_record

    run, nodes = swarm4
    signed = load_manifest(run)
    victim = nodes[1].status()
    honest = view_of(nodes[0])[victim["peer_id"]]
    forger = Identity.generate()
    if forgery == "victims_key_signed_by_another":
        key_id, public_key = victim["key_id"], honest_public_key(nodes[1])
    else:
        key_id, public_key = forger.key_id, forger.public_key.hex()
    now = time.time()
    lie = NodeInfo(
        run_digest=signed.digest, peer_id=victim["peer_id"], key_id=key_id, public_key=public_key,
        hpke_keys={"x25519": forger.hpke_public().hex()}, addrs=(), hardware=_hardware(), decode_tok_s=1e9,
        role="trainer", role_pref="trainer", state="ready", adapter_version=99, software="forger",
        issued_at=now, expires_at=now + 60,
    )
    dht = hivemind.DHT(start=True, initial_peers=[nodes[0].maddr], host_maddrs=["/ip4/127.0.0.1/tcp/0"],
                       nat_port_map=False)
    try:
        before = {n.name: n.status()["rejected"].get(reason, 0) for n in nodes}
        stored = dht.store(nodes_key(signed), sign_record(lie, forger), lie.expires_at, subkey=lie.public_key)
        assert stored is False  # every honest replica refused it
        wait_for(lambda: any(n.status()["rejected"].get(reason, 0) > before[n.name] for n in nodes), 10 * PERIOD,
                 f"a node to count {reason}")
    finally:
        dht.shutdown()
    time.sleep(2 * PERIOD)
    for node in nodes:
        seen = view_of(node)[victim["peer_id"]]
        assert seen["key_id"] == victim["key_id"] and seen["software"] == honest["software"]
        assert seen["decode_tok_s"] == honest["decode_tok_s"]


def test_trainer_crash_hands_the_slot_to_another_node_and_leaves_no_process(swarm4):
    _, nodes = swarm4
    roles = {n.name: n.status()["role"] for n in nodes}
    trainer = next(n for n in nodes if roles[n.name] == "trainer")
    descendants = psutil.Process(trainer.pid).children(recursive=True)
    assert any(p.name() == "p2pd" for p in descendants)
    killed_at = time.monotonic()
    trainer.kill_hard()
    survivors = [n for n in nodes if n is not trainer]

    def new_trainer():
        views = [n.status() for n in survivors]
        trainers = {v["peer_id"] for v in views if v["role"] == "trainer"}
        gone = all(trainer.status()["peer_id"] not in view_of(n) for n in survivors)
        return trainers if len(trainers) == 1 and gone else None

    # The crashed record expires after one TTL; the next announce period notices.
    elected = wait_for(new_trainer, TTL + 3 * PERIOD + 5, "a survivor to take the trainer slot")
    assert len(elected) == 1
    print(f"takeover after {time.monotonic() - killed_at:.1f}s (TTL {TTL}s)")
    # The watchdog reaps the DHT child and p2pd of the killed node within seconds.
    wait_for(lambda: not [p for p in descendants if _alive(p)], 15, "the killed node's children to exit")


def honest_public_key(node: NodeProcess) -> str:
    from crypto.identity import Identity

    return Identity.load(node.args[node.args.index("--key") + 1]).public_key.hex()


def _hardware():
    from swarm.records import Hardware

    return Hardware(cpu="forged", cores=64, ram_gb=512.0, gpus=(("H100", 80.0),), torch=True)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_timed_out_swarm_read_keeps_the_records_still_valid(tmp_path):
    """Under load a DHT read can time out; that says nothing about who left. Before, the view
    came back empty for a period (a client in a CI run lost sight of the trainer); now the records
    we last saw stand until their own expiry."""
    from concurrent.futures import Future

    from conftest import write_signed_run
    from test_records import record_of

    from crypto.identity import Identity
    from swarm.manifest import load_manifest
    from swarm.membership import Membership

    signed = load_manifest(write_signed_run(tmp_path, "view"))
    me = Identity.generate()
    membership = Membership(signed, me, listen=["/ip4/127.0.0.1/tcp/0"], identity_dir=tmp_path)
    membership.start()
    try:
        now = time.time()
        info = record_of(me, signed.digest, issued_at=now, expires_at=now + 3)
        assert membership.publish(info)
        assert [r.peer_id for r in membership.view().records] == [membership.peer_id]

        def timed_out_read(*args, **kwargs):
            future = Future()
            future.set_exception(TimeoutError("slow DHT under load"))
            return future

        real_get, membership.dht.get = membership.dht.get, timed_out_read
        assert [r.peer_id for r in membership.view().records] == [membership.peer_id]
        time.sleep(max(0.0, info.expires_at - time.time()) + 0.1)
        assert membership.view().records == []  # ...but never past the record's own expiry
        membership.dht.get = real_get
    finally:
        membership.shutdown()


@pytest.mark.parametrize("a_before", ["nothing", "p2p only"])
def test_a_node_started_before_its_bootstrap_peer_joins_when_it_comes_up(tmp_path, launched, a_before):
    """B is started pointing at A, which is not up yet (in a simulated swarm: behind a partition
    when B started), or whose P2P daemon listens but whose DHT does not answer yet (a slow start
    over a slow link). Before, B exited at once ("failed to connect to bootstrap peers"; "none of
    the initial_peers responded to a ping"); now it keeps trying (--join-patience) and joins once
    A is up."""
    import asyncio
    import socket

    from conftest import write_signed_run

    from crypto.identity import Identity

    run = write_signed_run(tmp_path, "late", swarm={"announce_period_s": PERIOD})
    a_key = Identity.generate()
    a_key.save(tmp_path / "a.key")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a_addr = f"/ip4/127.0.0.1/tcp/{port}"
    b = NodeProcess("b", tmp_path / "b", ["--run", str(run), "--key", str(tmp_path / "b.key"), "--role", "rollout",
                                          "--engine", "transformers", "--threads", "1", "--join-patience", "90",
                                          "--initial-peers", f"{a_addr}/p2p/{a_key.peer_id}"]).start()
    launched.append(b)
    if a_before == "p2p only":  # A's daemon, with A's key at A's address, and no DHT behind it
        from hivemind.p2p import P2P

        a_key.write_libp2p_identity(tmp_path / "a.libp2p.key")
        loop = asyncio.new_event_loop()
        p2p = loop.run_until_complete(P2P.create(identity_path=str(tmp_path / "a.libp2p.key"), host_maddrs=[a_addr]))
        try:
            wait_for(lambda: "do not answer yet" in b.log_tail(20), 90, "b to say it is waiting for its peers", [b])
        finally:
            loop.run_until_complete(p2p.shutdown())
            loop.close()
        assert "responded to a ping" not in b.log_tail(50) and b.alive()
    else:
        wait_for(lambda: "do not answer yet" in b.log_tail(20), 60, "b to say it is waiting for its peers", [b])
    a = NodeProcess("a", tmp_path / "a", ["--run", str(run), "--key", str(tmp_path / "a.key"), "--role", "rollout",
                                          "--engine", "transformers", "--threads", "1", "--listen", a_addr]).start()
    launched.append(a)
    wait_for(lambda: len(view_of(a)) == 2 and len(view_of(b)) == 2, 120, "a and b to see each other", [a, b])
    b.stop()
    a.stop()
