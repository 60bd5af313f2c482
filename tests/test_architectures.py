"""Real model families on both engines: a Qwen2 and a Qwen3 base (built locally, bf16, BPE
tokenizer) are converted by llama.cpp's own converter, and llama.cpp agrees with transformers on
every log-prob, with and without a LoRA adapter (converted the same way).

Found by a user: a Qwen2 base worked on the transformers engine, but a llama.cpp rollout failed
with "GGUF export supports Llama-architecture models only" (and then sat in the swarm doing nothing).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import save_lora
from real_models import build


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_a_family_base_and_its_lora_agree_across_engines(arch, tmp_path):
    from nodes.engines import SamplingParams, make_engine
    from nodes.engines.gguf_export import read_gguf_meta

    base = build(arch, tmp_path / arch)
    hf = make_engine("transformers", str(base), device="cpu")
    lc = make_engine("llamacpp", str(base), device="cpu")
    assert read_gguf_meta(lc.gguf_path)["general.architecture"] == arch  # llama.cpp's converter wrote it
    assert lc.tokenizer("sort the digits 31415")["input_ids"] == hf.tokenizer("sort the digits 31415")["input_ids"]
    prompts = ["sort the digits 31415", "what is two plus two?", "hello world, the quick"]
    for adapter in (None, save_lora(base, tmp_path / "lora", seed=0)):
        for eng in (hf, lc):
            eng.set_adapter(1 if adapter else None, adapter)
        flat = [s for g in hf.generate(prompts, 3, SamplingParams(max_new_tokens=16), seed=2) for s in g]
        scored = lc.score([s.prompt_ids for s in flat], [s.completion_ids for s in flat])
        err = max(abs(a - b) for s, r in zip(flat, scored) for a, b in zip(s.logprobs, r))
        print(f"{arch}, adapter={adapter is not None}: max |dlogp| = {err:.2e}")
        assert err < 1e-3
        assert np.ptp([lp for s in flat for lp in s.logprobs]) > 1.0  # a real distribution, not uniform
    lc.close()
