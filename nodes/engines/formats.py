"""Base formats a rollout may sample from, and how far honest log-probs stray in each.

A rollout on a quantized copy of the base (a laptop's Q4_K_M GGUF) samples from a slightly
different distribution than the trainer's f32 policy, so its claimed log-probs differ from the
trainer's recomputation even when it is honest. Each format's tolerance bounds that mismatch over
a chunk: the mean |claimed - recomputed| and the worst single token. The numbers are measured, not
guessed: `benchmarks/honesty_calibration.py` samples honest chunks per format, takes the worst
chunk seen and adds a margin, and reports the false-reject and miss rates on chunks it did not
calibrate on (README "Quantized rollouts" has the table). The same bound decides whether a GGUF
is the manifest's base (`nodes.models.probe`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarm.chunk import BASE_FORMATS


@dataclass(frozen=True)
class Tolerance:
    mean: float
    """Mean |claimed - recomputed| token log-prob over a chunk."""
    worst: float
    """Max |claimed - recomputed| of any one token."""

    def admits(self, mean: float, worst: float) -> bool:
        return mean <= self.mean and worst <= self.worst


TOLERANCES = {  # measured on the tiny base + a random LoRA, chunks of 4 x 8 x 7 tokens (README table)
    "f32": Tolerance(mean=0.01, worst=0.05),
    "f16": Tolerance(mean=0.01, worst=0.05),
    "bf16": Tolerance(mean=0.01, worst=0.15),
    "q8_0": Tolerance(mean=0.025, worst=1.0),
    "q4_k_m": Tolerance(mean=0.04, worst=2.0),
}
"""The mean carries the check (a forgery must move many tokens to matter; honest mismatch
averages out); the worst token only bounds single outliers, whose honest tail is long in
quantized formats (the worst Q4_K_M token of 80 honest chunks strayed by 0.85)."""
assert set(TOLERANCES) == set(BASE_FORMATS)

GGUF_FILE_TYPES = {0: "f32", 1: "f16", 32: "bf16", 7: "q8_0", 15: "q4_k_m"}
"""`general.file_type` of a GGUF (llama.cpp's llama_ftype) -> our format name."""


def mismatch(claimed, recomputed) -> tuple[float, float]:
    """(mean, worst) |claimed - recomputed| over paired token log-prob sequences."""
    diffs = [abs(a - b) for c, r in zip(claimed, recomputed) for a, b in zip(c, r)]
    return (sum(diffs) / len(diffs), max(diffs)) if diffs else (0.0, 0.0)


def gguf_format(path: Path | str) -> str:
    """The format of a GGUF base, or ValueError naming the ones we have tolerances for."""
    from nodes.engines.gguf_export import read_gguf_meta

    file_type = read_gguf_meta(path).get("general.file_type", 0)
    if file_type not in GGUF_FILE_TYPES:
        raise ValueError(f"{path} has llama.cpp file type {file_type}; a rollout base must be one of "
                         f"{', '.join(BASE_FORMATS)} (convert it with llama-quantize)")
    return GGUF_FILE_TYPES[file_type]
