from __future__ import annotations

from pathlib import Path

from nodes.cli import CliError


def run(args) -> int:
    from crypto.identity import Identity

    path = Path(args.out)
    if path.exists() and not args.force:
        raise CliError(f"{path} already exists; pass --force to overwrite it (the old identity is lost)")
    identity = Identity.generate()
    identity.save(path)
    print(f"key id  {identity.key_id}")
    print(f"peer id {identity.peer_id}")
    print(f"wrote   {path} (mode 0600)")
    return 0
