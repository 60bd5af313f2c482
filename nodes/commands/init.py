"""`swarm init`: write and sign a run manifest from the command line's settings."""
from __future__ import annotations

import time
from pathlib import Path

from nodes.cli import CliError


def task_options(pairs: list[str]) -> dict:
    """`--task-option KEY=VALUE` pairs as typed task options: integers, numbers, true/false, else
    strings."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--task-option {pair!r} must look like KEY=VALUE")
        options[key] = _typed(value)
    return options


def _typed(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(text, text)


def manifest_of(args, owner_key_id: str):
    """The manifest for parsed `swarm init` arguments (defaults: the manifest sections')."""
    from nodes.runconfig import build_manifest
    from swarm.manifest import GrpoSection, ModelSection, RunSection, SwarmSection, SyncSection, TaskSection

    return build_manifest(
        RunSection(id=args.run_id or time.strftime("run-%Y%m%d-%H%M%S"), owner_key_id=owner_key_id,
                   seed=args.seed),
        model=ModelSection(base=args.base),
        task=TaskSection(name=args.task, options=task_options(args.task_option)),
        grpo=GrpoSection(steps=args.steps),
        sync=SyncSection(mode=args.mode, staleness=args.staleness, publish_every=args.publish_every),
        swarm=SwarmSection(trainer_slots=args.trainer_slots, trainer_keys=tuple(args.trainer_key),
                           rollout_keys=tuple(args.rollout_key), announce_period_s=args.announce_period),
    )


def run(args) -> int:
    from crypto.identity import Identity
    from swarm.manifest import load_manifest, sign_manifest, write_manifest

    owner = Identity.load(args.owner_key)
    manifest = manifest_of(args, owner.key_id)
    write_manifest(sign_manifest(manifest, owner), Path(args.out))
    signed = load_manifest(args.out)
    print(f"run      {manifest.run.id}  ({manifest.sync.mode}, S={manifest.sync.staleness}, "
          f"{manifest.swarm.trainer_slots} trainer slot(s), "
          f"{'closed' if manifest.swarm.rollout_keys else 'open'} swarm)")
    print(f"digest   {signed.digest}")
    print(f"wrote    {args.out} (signed by {owner.key_id[:16]}...)")
    return 0
