"""`swarm trust`: the owner signs the next manifest update (who may train or roll out), TUF style.

The update is appended to MANIFEST.updates beside the manifest. A node started with that manifest
reads the file at start and at every announce period, and every node hands the updates it holds
to its peers in the `log` protocol, so one copy given to any node reaches the whole swarm.
"""
from __future__ import annotations

import re

from nodes.cli import CliError

_KEY_ID = re.compile(r"^[0-9a-f]{64}$")


def run(args) -> int:
    from crypto.identity import Identity
    from swarm.manifest import load_manifest
    from swarm.rejections import Rejection
    from swarm.trust import TrustRoot, make_update, updates_path

    trust = TrustRoot(load_manifest(args.run))
    path = updates_path(args.run)
    try:
        trust.read(path)
    except Rejection as e:
        raise CliError(f"{path}: {e}; restore the file from a node's provenance/updates.jsonl") from None
    owner = Identity.load(args.owner_key)
    head = trust.head
    if owner.key_id != head.owner_key_id:
        raise CliError(f"{args.owner_key} is key {owner.key_id[:16]}, not the run's current owner "
                       f"{head.owner_key_id[:16]} (as of update #{head.serial}): only the owner may change trust")
    changes = _changes(args, head)
    if changes is None:
        _show(trust)
        return 0
    trainers, rollouts = changes
    removed = set(head.trainer_keys) - set(trainers)
    if removed and args.from_version is None:
        raise CliError("removing a trainer key needs --from-version V: the first adapter version that key may no "
                       "longer sign (`swarm peers` shows the current version)")
    if head.open_training and trainers:
        raise CliError("this swarm has open training (anyone may train): listing trainer keys would close it; "
                       "re-create the run with `swarm init --trainer-key` instead")
    signers = [owner]
    new_owner = None
    if args.new_owner_key:
        new_owner = Identity.load(args.new_owner_key)
        signers.append(new_owner)
    envelope = make_update(trust, signers, owner_public_key=new_owner.public_key if new_owner else None,
                           trainer_keys=trainers, rollout_keys=rollouts, from_version=args.from_version or 0)
    trust.apply(envelope)  # the same checks every node makes
    trust.write(path)
    state = trust.head
    print(f"manifest update #{state.serial} written to {path}")
    print(f"trainers {', '.join(k[:16] for k in state.trainer_keys) or 'none'}"
          + (f" (revoked from v{state.from_version}: {', '.join(k[:16] for k in sorted(removed))})" if removed else ""))
    if state.rollout_keys:
        print(f"rollouts {', '.join(k[:16] for k in state.rollout_keys)}")
    print(f"owner    {state.owner_key_id[:16]}")
    print("give the file to any node (beside its manifest); its peers pick the update up from it")
    return 0


def _changes(args, head) -> tuple[list[str], list[str]] | None:
    """The new trainer and rollout key lists, or None when the command asks for no change."""
    for key in args.add_trainer_key + args.remove_trainer_key + args.add_rollout_key + args.remove_rollout_key:
        if not _KEY_ID.match(key):
            raise CliError(f"{key!r} is not a key id (64 hex digits; `swarm peers` lists them)")
    if not (args.add_trainer_key or args.remove_trainer_key or args.add_rollout_key or args.remove_rollout_key
            or args.new_owner_key):
        return None
    for key in args.remove_trainer_key:
        if key not in head.trainer_keys:
            raise CliError(f"{key[:16]} is not a trainer key of this run")
    trainers = [k for k in head.trainer_keys if k not in args.remove_trainer_key]
    trainers += [k for k in dict.fromkeys(args.add_trainer_key) if k not in trainers]
    rollouts = [k for k in head.rollout_keys if k not in args.remove_rollout_key]
    rollouts += [k for k in dict.fromkeys(args.add_rollout_key) if k not in rollouts]
    return trainers, rollouts


def _show(trust) -> None:
    for state in trust.states:
        what = "the signed manifest" if state.serial == 0 else f"update #{state.serial}"
        print(f"{what}: owner {state.owner_key_id[:16]}, trainers "
              f"{', '.join(k[:16] for k in state.trainer_keys) or ('anyone' if state.open_training else 'none')}"
              + (f", from v{state.from_version}" if state.serial else ""))
    print(f"pass --add-trainer-key/--remove-trainer-key/--add-rollout-key/--remove-rollout-key/--new-owner-key "
          f"to sign update #{trust.serial + 1}")
