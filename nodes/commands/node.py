from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from nodes.cli import DEFAULT_LISTEN, CliError
from nodes.logs import log_to_workdir, setup_logging


def load_or_create_identity(path: Path):
    from crypto.identity import Identity

    if path.exists():
        return Identity.load(path)
    identity = Identity.generate()
    try:
        identity.save(path)
    except OSError as e:
        raise CliError(f"cannot create a key at {path}: {e.strerror}; pass a --key path you can write") from None
    logging.getLogger("echo_swarm.node").info("created a new identity %s at %s", identity.key_id[:16], path)
    return identity


def check_arguments(args) -> None:
    """Mistakes that would otherwise hang (a bad multiaddr: a 35 s join timeout; --threads 0: an
    engine that never starts) or end in a traceback: one line each, before anything starts."""
    from hivemind.utils.multiaddr import Multiaddr

    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads {args.threads}: give at least 1 (or leave it out to use every core)")
    for flag, addrs in (("--listen", args.listen), ("--announce", args.announce),
                        ("--initial-peers", args.initial_peers)):
        for addr in addrs or ():
            try:
                Multiaddr(addr)
            except Exception:  # noqa: BLE001 - multiaddr raises several types for bad input
                raise CliError(f"{flag} {addr!r} is not a multiaddr; write e.g. /ip4/203.0.113.7/tcp/31337"
                               + ("/p2p/<peer id> (printed by the node you join)" if flag == "--initial-peers"
                                  else "")) from None
    if args.max_tok_s < 0:
        raise CliError(f"--max-tok-s {args.max_tok_s:g} must be >= 0 (tokens/s; 0: no cap)")
    if args.join_patience < 0:
        raise CliError(f"--join-patience {args.join_patience:g} must be >= 0 (seconds)")
    if args.workdir and Path(args.workdir).exists() and not Path(args.workdir).is_dir():
        raise CliError(f"--workdir {args.workdir} is a file; give a directory (it is created if missing)")
    if args.shape_links:
        from swarm.transport.shaped import LinkModel

        try:
            LinkModel(Path(args.shape_links))
        except (OSError, ValueError, KeyError, StopIteration, TypeError) as e:
            raise CliError(f"--shape-links {args.shape_links}: not a readable links file ({type(e).__name__}: {e}); "
                           "`swarm simulate` writes these, see swarm/transport/shaped.py") from None


def run(args) -> int:
    check_arguments(args)
    role, engine_choice = _gguf_rollout(args)
    setup_logging()
    from nodes.memory import fix_mmap_threshold

    fix_mmap_threshold()
    from swarm.manifest import load_manifest
    from swarm.trust import TrustRoot, updates_path

    signed = load_manifest(args.run)
    identity = load_or_create_identity(Path(args.key))
    workdir = Path(args.workdir or Path("runs") / signed.manifest.run.id / identity.key_id[:12])
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create the workdir {workdir}: {e.strerror}; pass a --workdir you can write") from None
    log_to_workdir(workdir)
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
        role_pref=role,
        workdir=workdir,
        nat_port_map=args.upnp,
        updates_file=updates_path(args.run),
        join_patience_s=args.join_patience,
        shape_links=Path(args.shape_links) if args.shape_links else None,
    )
    hardware = probe_hardware()
    engine = engine_choice if engine_choice != "auto" else (
        "llamacpp" if "llamacpp" in hardware.engines else "transformers")
    node = Node(signed, identity, options, hardware, decode_speed(), trust=trust)
    runtime = None
    try:
        node.start()
        from nodes.services import NodeServices

        runtime = NodeServices(node, engine, args.threads, scoring_copy=args.scoring_copy,
                               base_gguf=Path(args.base_gguf) if args.base_gguf else None,
                               max_tok_s=args.max_tok_s)
        say(f"node {node.peer_id} key {identity.key_id[:16]} run {manifest.run.id} ({signed.digest[:12]})")
        for maddr in node.maddrs:
            say(f"join with: --initial-peers {maddr}")
        node.run(stop)
    finally:
        if runtime is not None:
            runtime.close()
        node.shutdown()
        logging.getLogger("echo_swarm.node").info("left the swarm")
    if node.fatal:
        say(f"swarm node: error: {node.fatal}", sys.stderr)
    # Everything worth keeping is on disk. Leave now rather than wait on native threads
    # (engines, the P2P loop) at interpreter exit; the watchdog sweeps up any child left.
    for stream in (sys.stdout, sys.stderr):
        say("", stream, end="")
    os._exit(NO_ROLE if node.fatal else 0)


def say(line: str, stream=None, end: str = "\n") -> None:
    """One line on the node's terminal. When that is a file on a full disk the line is lost, not
    the node (the run's state is in the workdir and the DHT record)."""
    from nodes.disk import is_full

    try:
        print(line, file=stream or sys.stdout, end=end, flush=True)
    except OSError as e:
        if not is_full(e):
            raise


NO_ROLE = 3
"""Exit code of a node that could start no role it may serve (e.g. its model would not load)."""


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


def _gguf_rollout(args) -> tuple[str, str]:
    """(role preference, engine) for `--base-gguf`: a llama.cpp rollout, never a trainer (the
    trainer needs the base's Hugging Face weights)."""
    if args.base_gguf is None:
        return args.role, args.engine
    path = Path(args.base_gguf)
    if not path.is_file():
        raise CliError(f"--base-gguf {path} is not a file: pass a GGUF copy of the manifest's base")
    if args.role == "trainer":
        raise CliError("--base-gguf is for rollout nodes (the trainer needs the base's Hugging Face weights): "
                       "drop it, or use --role rollout")
    if args.engine == "transformers":
        raise CliError("--base-gguf runs on llama.cpp: drop --engine transformers")
    return "rollout", "llamacpp"
