"""The run manifest from typed settings: the one builder behind `swarm init`, `swarm simulate`
and `swarm baseline`.

Callers pass manifest sections (`swarm.manifest`'s dataclasses, whose field defaults are the run
defaults, declared once there) and get the manifest a node would accept: validated by the same
`parse_manifest` a node runs on the file, the task built once from its options (so a typo fails
here, not on every node later), and the base model's weights pinned by their sha256.
"""
from __future__ import annotations

import dataclasses

from nodes.models.pinning import BaseError, base_digest
from swarm.manifest import (
    GrpoSection,
    LoraSection,
    ManifestError,
    ModelSection,
    RunManifest,
    RunSection,
    SwarmSection,
    SyncSection,
    TaskSection,
    parse_manifest,
)

SETTINGS_ONLY_OWNER = "0" * 64
"""A placeholder owner key id for a manifest used for its settings only, never signed
(`swarm baseline` of a scenario)."""


def build_manifest(
    run: RunSection,
    *,
    model: ModelSection | None = None,
    task: TaskSection | None = None,
    lora: LoraSection | None = None,
    grpo: GrpoSection | None = None,
    sync: SyncSection | None = None,
    swarm: SwarmSection | None = None,
) -> RunManifest:
    """The validated manifest of these sections, with the base model's digest pinned.

    Sections left out (None) are the section's defaults. `model.sha256` is filled in when empty:
    the digest of the base's weights, configs and tokenizer (`nodes.models.pinning`; builds the
    embedded tiny model on first use, ~10-30 s); `model.probe` too (the base's own sample, for
    rollouts on a GGUF copy). A base that cannot be found is refused. Any
    problem is a ManifestError naming the field.
    """

    draft = RunManifest(run=run, model=model or ModelSection(), task=task or TaskSection(),
                        lora=lora or LoraSection(), grpo=grpo or GrpoSection(), sync=sync or SyncSection(),
                        swarm=swarm or SwarmSection())
    manifest = parse_manifest(draft.to_dict())  # types and rules exactly as nodes check the file
    manifest = dataclasses.replace(manifest, task=pinned_task(manifest.task))
    if not manifest.model.sha256:
        try:
            pinned = dataclasses.replace(manifest.model, sha256=base_digest(manifest.model.base))
        except BaseError as e:
            raise ManifestError(f"model.base: {e}") from None
        manifest = dataclasses.replace(manifest, model=pinned)
    if not manifest.model.probe:
        manifest = dataclasses.replace(manifest, model=dataclasses.replace(manifest.model, probe=base_probe(manifest)))
    return manifest


def base_probe(manifest: RunManifest) -> dict:
    """The base's samples on the task's first prompts (`nodes.models.probe`), for GGUF rollouts."""
    from nodes.models.pinning import base_dir
    from nodes.models.probe import PROBE_PROMPTS, make_probe
    from nodes.tasks import make_task

    task = make_task(manifest.task.name, dict(manifest.task.options))
    prompts = [p.text for p, _ in zip(task.prompts(0), range(PROBE_PROMPTS))]
    return make_probe(base_dir(manifest.model.base), manifest.model.sha256, prompts, task.chat_template)


def pinned_task(task: TaskSection) -> TaskSection:
    """Build the task once from its options (a ManifestError naming the option, file or line if it
    cannot be built), and pin a task file by its sha256 when the options do not already."""
    from nodes.tasks import TaskError, make_task

    try:
        built = make_task(task.name, dict(task.options))
    except TaskError as e:
        raise ManifestError(f"task.options: {e}" if "option" in str(e) else f"task: {e}") from None
    digest = getattr(built, "file_sha256", None)
    if digest and "sha256" not in task.options:
        return dataclasses.replace(task, options={**task.options, "sha256": digest})
    return task
