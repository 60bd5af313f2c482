"""Honesty-check calibration per base format: honest mismatch, false rejects and misses.

A rollout may sample from a GGUF copy of the base in another format (f16, bf16, Q8_0, Q4_K_M:
llama.cpp's own quantizer); the trainer recomputes the claimed log-probs with its f32 policy.
For each format this script
  1. samples CAL honest chunks (llama.cpp on that format + a random LoRA; the chunk shape of the
     default manifest: 4 prompts x 8 samples x up to 7 tokens) and measures, per chunk, the mean
     and worst |claimed - recomputed| (the transformers engine on the f32 base + the same LoRA);
  2. proposes a tolerance: the worst chunk seen x MARGIN (floored at f32's);
  3. on HELD other honest chunks, reports the false-reject rate of the tolerance in use
     (`nodes.engines.formats.TOLERANCES`) and of the proposed one;
  4. reports the miss rate of forgeries that claim that format:
       other_version  sampled with the base without the adapter, claimed as the adapter's version
       shift_0.1 / shift_0.3  every claimed log-prob raised by 0.1 / 0.3 (capped at 0)
       random         claimed log-probs uniform in [-5, 0]
  5. checks the base probe (`nodes.models.probe`): the base in that format passes, another base
     (the tiny model of another seed, same format) fails.

Prints one JSON object; `ok` is true when, for the tolerances in use, every format has a false-
reject rate <= 1% and misses no `random`, `shift_0.3` or `other_version` forgery, and the probe
tells the bases apart in every format.

    python benchmarks/honesty_calibration.py [--cal 60] [--held 60] [--formats f32,f16,bf16,q8_0,q4_k_m]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MARGIN = 1.5
PROMPTS, GROUP, MAX_NEW = 4, 8, 7


def gguf_of(hf_dir: Path, fmt: str, out: Path) -> Path:
    from nodes.engines import gguf_export
    from nodes.engines.quantize import quantize_gguf

    f32 = gguf_export.ensure_base_gguf(hf_dir)
    return f32 if fmt == "f32" else quantize_gguf(f32, out / f"{hf_dir.name}-{fmt}.gguf", fmt)


def chunk_stats(lc, hf, prompts: list[str], seed: int, lora: Path | None, forge=None):
    """Per-chunk (mean, worst) mismatch of chunks sampled by `lc` (adapter `lora`), judged by `hf`
    (always with the adapter): one chunk per PROMPTS prompts."""
    from nodes.engines import SamplingParams
    from nodes.engines.formats import mismatch

    lc.set_adapter(1 if lora else None, lora)
    out = []
    for c in range(0, len(prompts), PROMPTS):
        flat = [s for g in lc.generate(prompts[c:c + PROMPTS], GROUP, SamplingParams(max_new_tokens=MAX_NEW),
                                       seed=seed + c) for s in g]
        claimed = [list(s.logprobs) for s in flat]
        if forge is not None:
            claimed = forge(claimed, np.random.default_rng(seed + c))
        out.append(mismatch(claimed, hf.score([s.prompt_ids for s in flat], [s.completion_ids for s in flat])))
    return out


def shift(delta):
    return lambda claimed, rng: [[min(0.0, v + delta) for v in c] for c in claimed]


def random_claims(claimed, rng):
    return [list(rng.uniform(-5.0, 0.0, len(c))) for c in claimed]


def rate(stats, tol) -> float:
    return sum(not tol.admits(m, w) for m, w in stats) / max(1, len(stats))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cal", type=int, default=60, help="honest chunks to calibrate on, per format")
    parser.add_argument("--held", type=int, default=60, help="held-out chunks per format (and per forgery)")
    parser.add_argument("--formats", default="f32,f16,bf16,q8_0,q4_k_m")
    args = parser.parse_args()

    from nodes.engines import make_engine
    from nodes.engines.formats import TOLERANCES, Tolerance
    from nodes.models.probe import probe_mismatch
    from nodes.models.random_lora import save_random_lora
    from nodes.models.tiny import tiny_model_dir
    from nodes.runconfig import base_probe, build_manifest
    from nodes.tasks import make_task
    from swarm.manifest import RunSection

    base, other = tiny_model_dir(0), tiny_model_dir(1)
    task = make_task("sort-digits", {})
    texts = [p.text for p, _ in zip(task.prompts(123), range(PROMPTS * (args.cal + args.held)))]
    cal, held = texts[:PROMPTS * args.cal], texts[PROMPTS * args.cal:]
    probe = base_probe(build_manifest(RunSection(id="calibration", owner_key_id="0" * 64)))
    report: dict = {"chunk": {"prompts": PROMPTS, "group": GROUP, "max_new_tokens": MAX_NEW},
                    "margin": MARGIN, "formats": {}}
    ok = True
    with tempfile.TemporaryDirectory(prefix="echo-honesty-") as tmp:
        tmp = Path(tmp)
        lora = save_random_lora(base, tmp / "lora", seed=3)
        hf = make_engine("transformers", str(base), threads=1)
        hf.set_adapter(1, lora)
        f32_cal = None
        for fmt in args.formats.split(","):
            lc = make_engine("llamacpp", str(gguf_of(base, fmt, tmp)), threads=1, tokenizer=str(base))
            honest = chunk_stats(lc, hf, cal, 0, lora)
            proposed = Tolerance(mean=max(m for m, _ in honest) * MARGIN, worst=max(w for _, w in honest) * MARGIN)
            if fmt == "f32":
                f32_cal = proposed
            if f32_cal is not None:
                proposed = Tolerance(max(proposed.mean, f32_cal.mean), max(proposed.worst, f32_cal.worst))
            in_use = TOLERANCES[fmt]
            held_honest = chunk_stats(lc, hf, held, 10_000, lora)
            forged = {
                "other_version": chunk_stats(lc, hf, held, 10_000, None),
                "shift_0.1": chunk_stats(lc, hf, held, 10_000, lora, shift(0.1)),
                "shift_0.3": chunk_stats(lc, hf, held, 10_000, lora, shift(0.3)),
                "random": chunk_stats(lc, hf, held, 10_000, lora, random_claims),
            }
            own_probe = probe_mismatch(lc, probe)
            lc.close()
            other_lc = make_engine("llamacpp", str(gguf_of(other, fmt, tmp)), threads=1, tokenizer=str(other))
            other_probe = probe_mismatch(other_lc, probe)
            other_lc.close()
            row = {
                "honest_mean": {"median": float(np.median([m for m, _ in honest])), "max": max(m for m, _ in honest)},
                "honest_worst": {"median": float(np.median([w for _, w in honest])), "max": max(w for _, w in honest)},
                "held_max": {"mean": max(m for m, _ in held_honest), "worst": max(w for _, w in held_honest)},
                "forged_min_mean": {name: min(m for m, _ in stats) for name, stats in forged.items()},
                "proposed": vars(proposed), "in_use": vars(in_use),
                "false_reject": {"in_use": rate(held_honest, in_use), "proposed": rate(held_honest, proposed)},
                "miss": {name: 1.0 - rate(stats, in_use) for name, stats in forged.items()},
                "probe": {"base": own_probe, "other_base": other_probe,
                          "base_accepted": in_use.admits(*own_probe), "other_rejected": not in_use.admits(*other_probe)},
            }
            report["formats"][fmt] = row
            ok &= (row["false_reject"]["in_use"] <= 0.01 and row["probe"]["base_accepted"]
                   and row["probe"]["other_rejected"]
                   and all(row["miss"][k] == 0.0 for k in ("random", "shift_0.3", "other_version")))
            print(f"{fmt}: honest worst chunk mean {row['honest_mean']['max']:.4f} worst {row['honest_worst']['max']:.4f}; "
                  f"false rejects {row['false_reject']['in_use']:.1%}; misses {row['miss']}", file=sys.stderr)
    report["ok"] = bool(ok)
    print(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
