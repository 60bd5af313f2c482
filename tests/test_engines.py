"""Engines on the real tiny Llama (random weights, built from config): sampling, adapters, and
agreement of llama.cpp and transformers log-probs to 1e-3 (they are f32 on both sides)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import save_lora

from nodes.engines import Engine, EngineError, SamplingParams, encode_prompt, make_engine

PROMPTS = ["31415>", "2>", "987654321>"]


def save_tiny(path: Path, seed: int = 0) -> Path:
    """The tiny Llama with weights made sharper than init, so log-probs span a real range."""
    import torch

    from nodes.models.tiny import build_untrained

    model, tokenizer = build_untrained(seed)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(2.0)  # tied: sharper logits, still diverse
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(4.0)  # attention scores x16: RoPE layout matters
            layer.self_attn.k_proj.weight.mul_(4.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def loras(tiny, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {"v1": save_lora(tiny, root / "v1", 1), "v2": save_lora(tiny, root / "v2", 2),
            "r4": save_lora(tiny, root / "r4", 3, r=4, alpha=4),
            "rslora": save_lora(tiny, root / "rslora", 4, r=16, alpha=8, use_rslora=True)}


@pytest.fixture(scope="module")
def hf(tiny):
    return make_engine("transformers", str(tiny), device="cpu", threads=1)


@pytest.fixture(scope="module")
def lc(tiny):
    import llama_cpp  # noqa: F401  (a dependency: its absence is a failure, not a skip)
    return make_engine("llamacpp", str(tiny), device="cpu", threads=1)


@pytest.fixture(params=["transformers", "llamacpp"])
def engine(request, hf):
    eng = hf if request.param == "transformers" else request.getfixturevalue("lc")
    eng.set_adapter(None, None)
    return eng


def ids_of(groups):
    return [[s.completion_ids for s in g] for g in groups]


# -- interface -----------------------------------------------------------------------------------
def test_encode_prompt_is_bos_plus_chars(hf):
    tok = hf.tokenizer
    assert encode_prompt(tok, "31>") == [tok.bos_token_id] + tok.convert_tokens_to_ids(["3", "1", ">"])


def test_encode_prompt_with_chat_template(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    with pytest.raises(EngineError, match="no chat template"):
        encode_prompt(tok, "123", chat_template=True)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    assert encode_prompt(tok, "123", chat_template=True) == encode_prompt(tok, "123>")


def test_sampling_params_and_factory_validate():
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.9)
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
    with pytest.raises(EngineError):
        make_engine("vllm", "x")


def test_generate_shapes_and_eos(engine):
    assert isinstance(engine, Engine)
    eos = engine.tokenizer.eos_token_id
    params = SamplingParams(temperature=1.5, max_new_tokens=40)  # flat enough that EOS comes up
    groups = engine.generate(PROMPTS, 6, params, seed=3)
    assert len(groups) == len(PROMPTS) and all(len(g) == 6 for g in groups)
    stopped_early = 0
    for prompt, group in zip(PROMPTS, groups):
        for s in group:
            assert s.prompt_ids == encode_prompt(engine.tokenizer, prompt)
            assert 1 <= len(s.completion_ids) <= 40 and len(s.logprobs) == len(s.completion_ids)
            assert all(lp <= 0.0 for lp in s.logprobs)
            assert eos not in s.completion_ids[:-1]  # generation stops at EOS, which is kept
            if len(s.completion_ids) < 40:
                assert s.completion_ids[-1] == eos
                stopped_early += 1
    assert stopped_early > 0
    assert engine.tokens_per_second() > 0


def test_generate_is_deterministic_per_seed(engine):
    params = SamplingParams()
    a = engine.generate(PROMPTS, 4, params, seed=11)
    assert ids_of(a) == ids_of(engine.generate(PROMPTS, 4, params, seed=11))
    assert ids_of(a) != ids_of(engine.generate(PROMPTS, 4, params, seed=12))


def test_greedy(engine):
    groups = engine.generate(["123>"], 3, SamplingParams(temperature=0.0), seed=0)
    assert len({tuple(s.completion_ids) for s in groups[0]}) == 1
    assert all(lp == 0.0 for s in groups[0] for lp in s.logprobs)


def test_context_overflow_is_a_clear_error(engine):
    with pytest.raises(EngineError, match="exceeds|fit"):
        engine.generate(["1" * 60 + ">"], 1, SamplingParams(max_new_tokens=7), seed=0)


def test_score_reproduces_generation_logprobs(engine):
    groups = engine.generate(PROMPTS, 3, SamplingParams(temperature=0.7), seed=5)
    flat = [s for g in groups for s in g]
    scored = engine.score([s.prompt_ids for s in flat], [s.completion_ids for s in flat], temperature=0.7)
    err = max(abs(a - b) for s, r in zip(flat, scored) for a, b in zip(s.logprobs, r))
    assert err < 1e-4


# -- adapters --------------------------------------------------------------------------------------
def test_adapter_hot_swap(engine, loras):
    params = SamplingParams()
    base = engine.generate(PROMPTS, 4, params, seed=1)
    engine.set_adapter(1, loras["v1"])
    assert engine.adapter_version == 1
    v1 = engine.generate(PROMPTS, 4, params, seed=1)
    assert ids_of(v1) != ids_of(base)
    engine.set_adapter(2, loras["v2"])  # same LoRA config: weights replaced in place
    v2 = engine.generate(PROMPTS, 4, params, seed=1)
    assert ids_of(v2) not in (ids_of(v1), ids_of(base))
    engine.set_adapter(3, loras["r4"])  # another rank: a new adapter replaces the old
    r4 = engine.generate(PROMPTS, 4, params, seed=1)
    assert ids_of(r4) not in (ids_of(v1), ids_of(v2))
    engine.set_adapter(1, loras["v1"])
    again = engine.generate(PROMPTS, 4, params, seed=1)
    assert ids_of(again) == ids_of(v1)
    assert np.allclose([s.logprobs for g in again for s in g][-1], [s.logprobs for g in v1 for s in g][-1])
    engine.set_adapter(None, None)
    assert ids_of(engine.generate(PROMPTS, 4, params, seed=1)) == ids_of(base)


def test_bad_adapter_dir(engine, tmp_path):
    with pytest.raises((EngineError, OSError, ValueError)):
        engine.set_adapter(9, tmp_path)


# -- the two engines agree -------------------------------------------------------------------
@pytest.mark.parametrize("adapter", [None, "v1", "rslora"])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_llamacpp_and_transformers_logprobs_agree(hf, lc, loras, adapter, temperature):
    params = SamplingParams(temperature=temperature, max_new_tokens=20)
    for eng in (hf, lc):
        eng.set_adapter(1 if adapter else None, loras[adapter] if adapter else None)
    for producer, checker in ((hf, lc), (lc, hf)):
        flat = [s for g in producer.generate(PROMPTS, 4, params, seed=21) for s in g]
        scored = checker.score([s.prompt_ids for s in flat], [s.completion_ids for s in flat], temperature)
        errs = [abs(a - b) for s, r in zip(flat, scored) for a, b in zip(s.logprobs, r)]
        assert len(errs) == sum(len(s.completion_ids) for s in flat)
        assert max(errs) < 1e-3, f"{producer.name} -> {checker.name}: {max(errs)}"
        print(f"{adapter} T={temperature} {producer.name}->{checker.name} max |dlogp| = {max(errs):.2e}")
        spread = np.ptp([lp for s in flat for lp in s.logprobs])
        assert spread > 1.0  # the test model is not near-uniform: agreement means something
    # same seed, same uniforms, near-equal logits: the engines draw the same tokens
    a = ids_of(hf.generate(PROMPTS, 4, params, seed=21))
    b = ids_of(lc.generate(PROMPTS, 4, params, seed=21))
    same = sum(x == y for ga, gb in zip(a, b) for x, y in zip(ga, gb))
    assert same >= 10


def test_llamacpp_from_bare_gguf_uses_embedded_tokenizer(tiny, lc):
    from nodes.engines.gguf_export import default_gguf_path

    bare = make_engine("llamacpp", str(default_gguf_path(tiny)), device="cpu")
    assert encode_prompt(bare.tokenizer, "90210>") == encode_prompt(lc.tokenizer, "90210>")
    lc.set_adapter(None, None)
    params = SamplingParams()
    assert ids_of(bare.generate(PROMPTS, 3, params, seed=4)) == ids_of(lc.generate(PROMPTS, 3, params, seed=4))
    bare.close()


def test_llamacpp_side_by_side_samples_match_one_at_a_time(tiny, lc):
    """Samples decoded together share the prompt's cache cells; chunks of 3, 3, 1 and a single
    sequence at a time must give the same tokens and log-probs as 8 side by side."""
    params = SamplingParams(max_new_tokens=12)
    lc.set_adapter(None, None)
    ref = lc.generate(PROMPTS, 7, params, seed=9)
    for parallel in (3, 1):
        other = make_engine("llamacpp", str(tiny), device="cpu", parallel=parallel)
        got = other.generate(PROMPTS, 7, params, seed=9)
        assert ids_of(got) == ids_of(ref)
        diffs = [abs(a - b) for ga, gb in zip(got, ref) for x, y in zip(ga, gb) for a, b in zip(x.logprobs, y.logprobs)]
        assert max(diffs) < 1e-4
        other.close()
