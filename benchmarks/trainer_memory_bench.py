"""Trainer memory against vocabulary size and batch: bounded log-probs and micro-batches vs one pass.

For each vocabulary size (4k, 32k, 152k: Llama-2, Llama-3-ish, Qwen) a small Llama-architecture
model is built from a config (random weights, 2 layers, hidden 128; no download) and one GRPO
step is run on a batch of 32 x 8 samples (24 prompt + 64 completion tokens) in a fresh process,
twice: as the trainer now runs (`PolicyConfig` defaults: log-probs a bounded number of logits at
a time, micro-batches of 8k tokens) and as it ran before (every logit of the batch at once, one
forward: `logit_elements` and `micro_batch_tokens` unbounded). Reported per run: the process's
peak RSS growth during the step over its RSS after loading the model and touching every weight
(the weights grow with the vocabulary in both, and safetensors are mapped lazily), in MiB.
Like `swarm node`, the child fixes glibc's mmap threshold first (nodes/memory.py).

The child runs under a LIMIT_GIB address-space limit: a run that needs more reports
`out_of_memory` (the one-pass baseline does at 152k: its logits alone are ~14 GB).

Goal: flat in vocabulary size at a fixed micro-batch: step memory at 152k / at 4k <= 1.5 for the
bounded trainer (the one-pass baseline's ratio is printed beside it).

    python benchmarks/trainer_memory_bench.py [--vocabs 4096,32768,151936] [--completion 64]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.5

LIMIT_GIB = 8
CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (@LIMIT@ << 30, @LIMIT@ << 30))  # fail cleanly, not by the OOM killer
sys.path.insert(0, @ROOT@)
from nodes.memory import fix_mmap_threshold
fix_mmap_threshold()  # as `swarm node` does
import torch
torch.set_num_threads(1)
from nodes.trainer.policy import Policy, PolicyConfig

model_dir, mode, prompt_len, completion_len = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = PolicyConfig() if mode == "bounded" else PolicyConfig(logit_elements=1 << 62, micro_batch_tokens=1 << 62)
policy = Policy(model_dir, config=config, seed=0, threads=1)
gen = torch.Generator().manual_seed(0)
V = policy.vocab_size
samples = [(torch.randint(0, V, (prompt_len,), generator=gen).tolist(),
            torch.randint(0, V, (completion_len,), generator=gen).tolist()) for _ in range(32 * 8)]
import math
old = [[-math.log(V)] * completion_len for _ in samples]
rewards = [[float((i + j) % 2) for j in range(8)] for i in range(32)]
def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
with torch.no_grad():  # page every weight in (safetensors are mapped lazily): the weights are not the step's
    sum(float(p.sum()) for p in policy.model.parameters())
before = rss_mib()
try:
    policy.train_step(samples, rewards, old)
except (RuntimeError, MemoryError) as e:
    print(json.dumps({"rss_after_load_mib": round(before, 1), "out_of_memory": str(e)[:120]}))
    sys.exit(0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rss_after_load_mib": round(before, 1), "peak_mib": round(peak, 1),
                  "step_growth_mib": round(peak - before, 1)}))
""".replace("@ROOT@", repr(str(ROOT))).replace("@LIMIT@", str(LIMIT_GIB))


def build_model(directory: Path, vocab: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         tie_word_embeddings=False, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocabs", default="4096,32768,151936")
    ap.add_argument("--prompt", type=int, default=24)
    ap.add_argument("--completion", type=int, default=64)
    args = ap.parse_args()
    vocabs = [int(v) for v in args.vocabs.split(",")]
    rows: dict = {}
    with tempfile.TemporaryDirectory(prefix="trainer-mem-") as tmp:
        for vocab in vocabs:
            model_dir = Path(tmp) / f"v{vocab}"
            build_model(model_dir, vocab)
            rows[vocab] = {}
            for mode in ("bounded", "one_pass"):
                out = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), mode, str(args.prompt),
                                      str(args.completion)], capture_output=True, text=True, check=True)
                rows[vocab][mode] = json.loads(out.stdout.strip().splitlines()[-1])
    lo, hi = vocabs[0], vocabs[-1]

    def ratio(mode: str) -> float | str:
        if "out_of_memory" in rows[hi][mode]:
            return f"out of memory under a {LIMIT_GIB} GiB limit at {hi}"
        return round(rows[hi][mode]["step_growth_mib"] / max(rows[lo][mode]["step_growth_mib"], 1.0), 2)

    result = {
        "benchmark": "trainer_memory", "batch": "32 x 8 samples", "prompt_tokens": args.prompt,
        "completion_tokens": args.completion, "runs": {str(k): v for k, v in rows.items()},
        "step_growth_ratio": {"bounded": ratio("bounded"), "one_pass": ratio("one_pass"), "of": f"{hi} / {lo} vocab"},
        "goal": f"bounded ratio <= {GOAL}",
        "met": isinstance(ratio("bounded"), float) and ratio("bounded") <= GOAL,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
