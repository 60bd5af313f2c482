"""Is this GGUF the manifest's base? A probe answers before a rollout generates anything.

`swarm init` samples a fixed continuation of the task's first prompts from the pinned f32 base
(no adapter) and signs them into the manifest (`model.probe`: per prompt its ids, the completion's
ids and their log-probs).
A rollout given a GGUF copy of the base (quantized for a laptop: `swarm node --base-gguf`) scores
that completion teacher-forced and must reproduce the log-probs within its format's tolerance
(`nodes.engines.formats`). Another model, a damaged file or one quantized harder than it says
misses by far more (the calibration benchmark reports by how much).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nodes.engines.formats import TOLERANCES, mismatch
from nodes.models.pinning import BaseError
from nodes.models.tiny import cache_root

PROBE_PROMPTS = 8
PROBE_TOKENS = 32
PROBE_SEED = 0


def make_probe(base_dir: Path | str, digest: str, prompts: list[str], chat_template: bool = False) -> dict:
    """The probe of a base (cached by base digest and prompts: `swarm init` is run often)."""
    key = hashlib.sha256(json.dumps([digest, chat_template, prompts]).encode()).hexdigest()[:32]
    cached = cache_root() / "probes" / f"{key}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    from nodes.engines import SamplingParams, make_engine

    engine = make_engine("transformers", str(base_dir), threads=1)
    samples = [g[0] for g in engine.generate(prompts, 1, SamplingParams(max_new_tokens=PROBE_TOKENS),
                                             seed=PROBE_SEED, chat_template=chat_template)]
    probe = {"prompt_ids": [list(s.prompt_ids) for s in samples],
             "completion_ids": [list(s.completion_ids) for s in samples],
             "logprobs": [[round(lp, 6) for lp in s.logprobs] for s in samples]}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(probe))
    return probe


def probe_mismatch(engine, probe: dict) -> tuple[float, float]:
    """(mean, worst) |log-prob| difference of `engine` (its base, no adapter) on the probe."""
    engine.set_adapter(None, None)
    scored = engine.score(probe["prompt_ids"], probe["completion_ids"])
    return mismatch(probe["logprobs"], scored)


def check_probe(engine, probe: dict, fmt: str, where: str) -> tuple[float, float]:
    """Raise BaseError unless `engine` reproduces the probe within `fmt`'s tolerance."""
    if not probe:
        raise BaseError(f"the manifest has no model.probe, so {where} cannot be checked against the base: "
                        "ask the owner to re-create the manifest with this version's `swarm init`")
    mean, worst = probe_mismatch(engine, probe)
    tol = TOLERANCES[fmt]
    if not tol.admits(mean, worst):
        raise BaseError(f"{where} ({fmt}) is not the manifest's base: on the probe its log-probs differ by "
                        f"{mean:.3f} on average and {worst:.3f} at worst (a {fmt} copy of the base stays "
                        f"within {tol.mean:g} and {tol.worst:g}); use a GGUF converted from the pinned base")
    return mean, worst
