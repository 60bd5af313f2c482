from __future__ import annotations

import json
import time

from nodes.cli import DEFAULT_LISTEN


def run(args) -> int:
    import os

    os.environ.setdefault("HIVEMIND_LOGLEVEL", "ERROR")
    from nodes.node import peer_summary
    from swarm.manifest import load_manifest
    from swarm.membership import Membership

    signed = load_manifest(args.run)
    membership = Membership(signed, None, listen=[DEFAULT_LISTEN], initial_peers=args.initial_peers,
                            client_mode=True, join_timeout_s=args.timeout)
    membership.start()
    try:
        view = membership.view()
        deadline = time.monotonic() + args.timeout
        while not view.records and time.monotonic() < deadline:  # a fresh client may need a moment
            time.sleep(0.5)
            view = membership.view()
    finally:
        membership.shutdown()
    peers = [peer_summary(r) for r in view.records]
    if args.json:
        print(json.dumps({"run": signed.manifest.run.id, "digest": signed.digest, "peers": peers,
                          "rejected": view.rejected}, indent=1))
        return 0
    print_table(signed.manifest.run.id, peers)
    return 0


def print_table(run_id: str, peers: list[dict]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"run {run_id}: {len(peers)} live node(s)")
    for col in ("peer", "role", "state", "hardware", "tok/s", "version", "age"):
        table.add_column(col)
    for p in peers:
        hw = p["hardware"]
        desc = f"{hw['cores']} cores, {hw['ram_gb']:g} GB" + (f", {hw['gpu']}" if hw["gpu"] else "")
        desc += f" [{'/'.join(hw['engines'])}]"
        version = "-" if p["adapter_version"] < 0 else str(p["adapter_version"])
        table.add_row(p["peer_id"][-12:], p["role"], p["state"], escape(desc), f"{p['decode_tok_s']:.0f}", version,
                      f"{p['age_s']:.0f}s")
    Console().print(table)
    for p in peers:
        for role, why in p["failed"].items():
            print(f"{p['peer_id'][-12:]} could not start as {role}: {why}")
