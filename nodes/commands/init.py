"""`swarm init`: write and sign a run manifest from the command line's settings."""
from __future__ import annotations

import sys
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
    from nodes.cli import GRPO_FLAGS
    from nodes.runconfig import build_manifest
    from swarm.manifest import (
        GrpoSection,
        LoraSection,
        ModelSection,
        RunSection,
        SwarmSection,
        SyncSection,
        TaskSection,
    )

    return build_manifest(
        RunSection(id=args.run_id or time.strftime("run-%Y%m%d-%H%M%S"), owner_key_id=owner_key_id,
                   seed=args.seed),
        model=ModelSection(base=args.base),
        task=TaskSection(name=args.task, options=task_options(args.task_option)),
        grpo=GrpoSection(steps=args.steps, **{name: getattr(args, f"grpo_{name}") for name in GRPO_FLAGS}),
        lora=LoraSection(r=args.lora_r, alpha=args.lora_alpha,
                         targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())),
        sync=SyncSection(mode=args.mode, staleness=args.staleness, publish_every=args.publish_every),
        swarm=SwarmSection(trainer_slots=args.trainer_slots, trainer_keys=trainer_keys(args, owner_key_id),
                           open_training=args.open_training, rollout_keys=tuple(args.rollout_key),
                           announce_period_s=args.announce_period),
    )


def trainer_keys(args, owner_key_id: str) -> tuple:
    """Who may train: the `--trainer-key`s given; none given, the owner's key alone; none with
    `--open-training-UNSAFE` (any member: the manifest refuses both at once)."""
    if args.trainer_key or args.open_training:
        return tuple(args.trainer_key)
    return (owner_key_id,)


OPEN_TRAINING_WARNING = ("open training (--open-training-UNSAFE): ANY member of this swarm may train; whichever "
                         "node claims the best hardware takes the trainer slot, receives every trajectory chunk "
                         "and signs the adapter every node runs. Use it only for throwaway test swarms; "
                         "list --trainer-key KEYID instead.")


def trainers_line(manifest, owner_key_id: str) -> str:
    """Who may train, as `swarm init` reports it."""
    keys = manifest.swarm.trainer_keys
    if manifest.swarm.open_training:
        return "ANY member may train (open training, UNSAFE: see the warning)"
    if keys == (owner_key_id,):
        return f"owner key {owner_key_id[:16]}... only (add --trainer-key KEYID to authorise others)"
    named = ", ".join(f"{k[:16]}...{' (owner)' if k == owner_key_id else ''}" for k in keys)
    return f"{len(keys)} key(s) in priority order: {named}"


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
    print(f"trainers {trainers_line(manifest, owner.key_id)}")
    g, lora = manifest.grpo, manifest.lora
    print(f"grpo     {g.steps} steps of {g.prompts_per_step} prompts x {g.group_size} samples, up to "
          f"{g.max_new_tokens} new tokens; lr {g.lr:g}, clip {g.clip:g}, KL {g.kl_coef:g}")
    print(f"lora     r={lora.r} alpha={lora.alpha} on {', '.join(lora.targets)}")
    if manifest.swarm.open_training:
        print(f"swarm init: WARNING: {OPEN_TRAINING_WARNING}", file=sys.stderr)
    print(f"digest   {signed.digest}")
    print(f"wrote    {args.out} (signed by {owner.key_id[:16]}...)")
    return 0
