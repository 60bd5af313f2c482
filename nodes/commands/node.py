from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from nodes.cli import DEFAULT_LISTEN, CliError


def setup_logging() -> None:
    os.environ.setdefault("HIVEMIND_LOGLEVEL", "ERROR")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def load_or_create_identity(path: Path):
    from crypto.identity import Identity

    if path.exists():
        return Identity.load(path)
    identity = Identity.generate()
    identity.save(path)
    logging.getLogger("echo_swarm.node").info("created a new identity %s at %s", identity.key_id[:16], path)
    return identity


def run(args) -> int:
    setup_logging()
    from swarm.manifest import load_manifest
    from swarm.trust import TrustRoot, updates_path

    signed = load_manifest(args.run)
    identity = load_or_create_identity(Path(args.key))
    workdir = Path(args.workdir or Path("runs") / signed.manifest.run.id / identity.key_id[:12])
    workdir.mkdir(parents=True, exist_ok=True)
    # The trust root beside the log, so `swarm audit WORKDIR` needs nothing else.
    (workdir / "provenance").mkdir(exist_ok=True)
    shutil.copyfile(args.run, workdir / "provenance" / "manifest.toml")
    trust = _trust_root(TrustRoot(signed), workdir / "provenance" / "updates.jsonl", updates_path(args.run))
    manifest = trust.manifest  # as the owner's updates leave it
    if args.role == "trainer" and not manifest.trainer_allowed(identity.key_id):
        raise CliError(f"key {identity.key_id} is not in the manifest's trainer_keys; run with --role rollout "
                       "or ask the run owner to add it (`swarm trust --add-trainer-key`)")
    if not manifest.member_allowed(identity.key_id):
        raise CliError(f"key {identity.key_id} is not allowed in this closed swarm (rollout_keys); "
                       "ask the run owner to add it (`swarm trust --add-rollout-key`)")

    from nodes.watchdog import start_orphan_watchdog

    start_orphan_watchdog()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if os.environ.get(EXIT_WITH_LAUNCHER) == "1":
        _stop_when_orphaned(stop)

    from nodes.node import Node, NodeOptions
    from nodes.speed import decode_speed
    from swarm.hardware import probe_hardware

    options = NodeOptions(
        listen=args.listen or [DEFAULT_LISTEN],
        announce=args.announce,
        initial_peers=args.initial_peers,
        role_pref=args.role,
        workdir=workdir,
        nat_port_map=args.upnp,
        updates_file=updates_path(args.run),
    )
    hardware = probe_hardware()
    engine = args.engine if args.engine != "auto" else ("llamacpp" if "llamacpp" in hardware.engines else "transformers")
    node = Node(signed, identity, options, hardware, decode_speed(), trust=trust)
    runtime = None
    try:
        node.start()
        from nodes.services import NodeServices

        runtime = NodeServices(node, engine, args.threads)
        print(f"node {node.peer_id} key {identity.key_id[:16]} run {manifest.run.id} ({signed.digest[:12]})",
              flush=True)
        for maddr in node.maddrs:
            print(f"join with: --initial-peers {maddr}", flush=True)
        node.run(stop)
    finally:
        if runtime is not None:
            runtime.close()
        node.shutdown()
        logging.getLogger("echo_swarm.node").info("left the swarm")
    # Everything worth keeping is on disk. Leave now rather than wait on native threads
    # (engines, the P2P loop) at interpreter exit; the watchdog sweeps up any child left.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _trust_root(trust, *files: Path):
    """`trust` with the updates of `files` applied (the workdir's, then the manifest's neighbour);
    a bad update stops the node with the reason, before it joins."""
    from swarm.rejections import Rejection

    for path in files:
        try:
            trust.read(path)
        except Rejection as e:
            raise CliError(f"{path}: manifest update refused: {e}; remove the file or ask the run owner "
                           "for the updates made with `swarm trust`") from None
    return trust


EXIT_WITH_LAUNCHER = "ECHO_SWARM_EXIT_WITH_LAUNCHER"
"""Set by `swarm simulate` (and tests): a node whose launcher died, even by SIGKILL, leaves too."""


def _stop_when_orphaned(stop: threading.Event) -> None:
    launcher = os.getppid()

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != launcher:  # re-parented: the launcher is gone
                logging.getLogger("echo_swarm.node").warning("launcher %d exited; leaving the swarm", launcher)
                stop.set()

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
