from __future__ import annotations

import time
from pathlib import Path

from nodes.cli import CliError


def _task_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--task-option {pair!r} must look like KEY=VALUE")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        options[key] = {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value
    return options


def base_digest(base: str) -> str:
    """sha256 of the base weights; builds the embedded tiny model on first use (~10-30 s)."""
    from nodes.models.tiny import file_sha256, tiny_model_dir

    if base == "tiny":
        return file_sha256(tiny_model_dir() / "model.safetensors")
    path = Path(base) / "model.safetensors"
    if path.exists():
        return file_sha256(path)
    return ""  # a hub id: nodes check the digest of what they download against what the owner pins


def build_manifest(args, owner):
    """The typed, validated manifest `swarm init` signs for parsed `init` arguments.

    Shared with `swarm simulate`, which parses its own `init` argument list with the same parser,
    so a simulated run gets exactly the manifest (and defaults) a user's `swarm init` would.
    """
    from nodes.tasks import make_task
    from swarm.manifest import parse_manifest

    make_task(args.task, _task_options(args.task_option))  # fail now, not on every node later
    body = {
        "run": {"id": args.run_id or time.strftime("run-%Y%m%d-%H%M%S"), "owner_key_id": owner.key_id,
                "seed": args.seed},
        "model": {"base": args.base, "sha256": base_digest(args.base)},
        "task": {"name": args.task, "options": _task_options(args.task_option)},
        "sync": {"mode": args.mode, "staleness": args.staleness, "publish_every": args.publish_every},
        "grpo": {"steps": args.steps},
        "swarm": {"trainer_slots": args.trainer_slots, "trainer_keys": args.trainer_key,
                  "rollout_keys": args.rollout_key, "announce_period_s": args.announce_period},
    }
    return parse_manifest(body)


def run(args) -> int:
    from crypto.identity import Identity
    from swarm.manifest import sign_manifest, write_manifest

    owner = Identity.load(args.owner_key)
    manifest = build_manifest(args, owner)
    doc = sign_manifest(manifest, owner)
    write_manifest(doc, Path(args.out))
    from swarm.manifest import load_manifest

    signed = load_manifest(args.out)
    print(f"run      {manifest.run.id}  ({manifest.sync.mode}, S={manifest.sync.staleness}, "
          f"{manifest.swarm.trainer_slots} trainer slot(s), "
          f"{'closed' if manifest.swarm.rollout_keys else 'open'} swarm)")
    print(f"digest   {signed.digest}")
    print(f"wrote    {args.out} (signed by {owner.key_id[:16]}...)")
    return 0
