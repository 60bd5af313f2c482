"""GGUF export: deterministic bytes, the RoPE permutation, base/vocab mismatch detection, adapters."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_engines_agree, save_lora

from nodes.engines import EngineError
from nodes.engines import gguf_export as G


def save_untrained(path: Path, seed: int) -> Path:
    from nodes.models.tiny import build_untrained

    model, tokenizer = build_untrained(seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("tiny0"), 0)


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("tiny1"), 1)


@pytest.fixture(scope="module")
def base_gguf(tiny) -> Path:
    return G.ensure_base_gguf(tiny)


def test_export_is_deterministic_and_records_its_base(tiny, base_gguf, tmp_path):
    from nodes.models.pinning import base_digest

    again = G.export_base_gguf(tiny, tmp_path / "again.gguf")
    assert G.gguf_sha256(again) == G.gguf_sha256(base_gguf)
    meta = G.read_gguf_meta(base_gguf)
    assert meta[G.KEY_BASE_SHA] == G.hf_base_sha256(tiny) == base_digest(str(tiny))
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 2
    assert "output.weight" not in _tensor_names(base_gguf)  # tied embeddings: llama.cpp reuses token_embd
    assert G.ensure_base_gguf(tiny) == base_gguf  # cached: not rewritten


def test_cache_is_rewritten_when_the_hf_weights_change(tmp_path, other):
    d = tmp_path / "m"
    save_untrained(d, 0)
    first = G.gguf_sha256(G.ensure_base_gguf(d))
    shutil.copy(other / "model.safetensors", d / "model.safetensors")
    assert G.gguf_sha256(G.ensure_base_gguf(d)) != first


def test_permutation_turns_hf_rope_into_ggml_rope():
    """ggml's normal RoPE on permuted rows == permuted HF rotate_half RoPE: the converter's identity."""
    rng = np.random.default_rng(0)
    n_head, hd, pos = 3, 8, 5
    x = rng.standard_normal(n_head * hd)
    theta = pos * 10000.0 ** (-np.arange(0, hd, 2) / hd)
    cos, sin = np.cos(theta), np.sin(theta)

    def hf_rope(v):
        h = v.reshape(n_head, 2, hd // 2)
        a, b = h[:, 0], h[:, 1]
        return np.stack([a * cos - b * sin, b * cos + a * sin], axis=1).reshape(-1)

    def ggml_rope(v):
        h = v.reshape(n_head, hd // 2, 2)
        a, b = h[..., 0], h[..., 1]
        return np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(-1)

    def perm(v):
        return G.permute_qk(v[:, None], n_head)[:, 0]

    assert np.allclose(ggml_rope(perm(x)), perm(hf_rope(x)))


def test_check_accepts_its_own_base(tiny, base_gguf):
    meta = G.check_gguf_base(base_gguf, tiny)
    assert meta[G.KEY_BASE_SHA] == G.hf_base_sha256(tiny)
    G.check_gguf_base(base_gguf, base_sha256=G.hf_base_sha256(tiny))


def test_check_rejects_another_base(base_gguf, other):
    with pytest.raises(G.GGUFMismatchError, match="not the run's base"):
        G.check_gguf_base(base_gguf, other)
    with pytest.raises(G.GGUFMismatchError, match="not the run's base"):
        G.check_gguf_base(base_gguf, base_sha256="ab" * 32)


def test_check_rejects_another_vocabulary(base_gguf, tiny):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from nodes.models.tiny import CHARS, SPECIALS

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS[::-1])}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                  bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
    with pytest.raises(G.GGUFMismatchError, match="vocabulary differs .* id 4"):
        G.check_gguf_base(base_gguf, base_sha256=G.hf_base_sha256(tiny), tokenizer=tok)


def test_check_rejects_foreign_and_broken_files(tmp_path, tiny):
    import gguf

    foreign = tmp_path / "foreign.gguf"
    w = gguf.GGUFWriter(str(foreign), "llama")
    w.add_tensor("token_embd.weight", np.zeros((48, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(G.GGUFMismatchError, match="records no base digest"):
        G.check_gguf_base(foreign, tiny)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF not really")
    with pytest.raises(G.GGUFMismatchError, match="not a readable GGUF"):
        G.check_gguf_base(junk, tiny)
    with pytest.raises(G.GGUFMismatchError, match="does not exist"):
        G.check_gguf_base(tmp_path / "none.gguf", tiny)


def test_embedded_tokenizer_roundtrips(base_gguf, tiny):
    from transformers import AutoTokenizer

    from nodes.engines import encode_prompt

    want = AutoTokenizer.from_pretrained(str(tiny))
    got = G.tokenizer_from_gguf(base_gguf)
    for text in ("31415>", "hello, world: 1+2=3", ""):
        assert encode_prompt(got, text) == encode_prompt(want, text)
    assert got.eos_token_id == want.eos_token_id


def test_lora_gguf_layout(tiny, tmp_path):
    import gguf
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny),
                          LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    peft.save_pretrained(tmp_path / "a")
    out = G.ensure_lora_gguf(tmp_path / "a", n_head=4, n_head_kv=4)
    again = G.export_lora_gguf(tmp_path / "a", tmp_path / "again.gguf", 4, 4)
    assert G.gguf_sha256(out) == G.gguf_sha256(again)
    reader = gguf.GGUFReader(str(out))
    meta = G.read_gguf_meta(out)
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 16.0
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}  # ggml order: ne0 first
    assert len(shapes) == 2 * 2 * len(targets)
    assert shapes["blk.0.attn_q.weight.lora_a"] == (128, 8)  # ne {in, r}
    assert shapes["blk.1.ffn_up.weight.lora_b"] == (8, 512)  # ne {r, out}

    bad = tmp_path / "emb"
    shutil.copytree(tmp_path / "a", bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["modules_to_save"] = ["lm_head"]
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineError, match="modules_to_save"):
        G.export_lora_gguf(bad, tmp_path / "bad.gguf", 4, 4)


def test_llamacpp_needs_a_tokenizer_for_a_foreign_gguf(tmp_path, tiny):
    import llama_cpp  # noqa: F401  (a dependency: its absence is a failure, not a skip)

    from nodes.engines import make_engine

    meta_free = tmp_path / "plain.gguf"
    _strip_tokenizer(G.default_gguf_path(tiny) if G.default_gguf_path(tiny).exists() else G.ensure_base_gguf(tiny),
                     meta_free)
    with pytest.raises(EngineError, match="embeds no HF tokenizer"):
        make_engine("llamacpp", str(meta_free), device="cpu")
    eng = make_engine("llamacpp", str(meta_free), device="cpu", tokenizer=str(tiny))
    assert eng.tokenizer.eos_token_id == 2
    eng.close()


def test_llamacpp_reports_a_broken_gguf(tmp_path):
    import llama_cpp  # noqa: F401  (a dependency: its absence is a failure, not a skip)

    from nodes.engines import make_engine

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(EngineError, match="not a readable GGUF"):
        make_engine("llamacpp", str(junk), device="cpu")
    with pytest.raises(EngineError, match="does not exist"):
        make_engine("llamacpp", str(tmp_path / "none.gguf"), device="cpu")


# -- helpers -----------------------------------------------------------------------------------
def _tensor_names(path: Path) -> set[str]:
    import gguf

    return {t.name for t in gguf.GGUFReader(str(path)).tensors}


def _strip_tokenizer(src: Path, dst: Path) -> None:
    """Copy a GGUF without our echo_swarm.* keys: what a GGUF from another converter looks like."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), "llama")
    for field in reader.fields.values():
        name = field.name
        if name.startswith(("echo_swarm.", "GGUF.")) or name == "general.architecture":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(field.parts[i]).decode() for i in field.data]
            else:
                val = [field.parts[i].tolist()[0] for i in field.data]
            w.add_key_value(name, val, vtype, sub_type=sub)
        elif vtype == gguf.GGUFValueType.STRING:
            w.add_key_value(name, bytes(field.parts[field.data[0]]).decode(), vtype)
        else:
            w.add_key_value(name, field.parts[field.data[0]].tolist()[0], vtype)
    for t in reader.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_shape=tuple(int(x) for x in reversed(t.shape)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_general_llama_layouts_agree_across_engines(tmp_path):
    """GQA, head_dim != hidden/heads, untied output, q/k/v/o biases, llama3 RoPE scaling: the
    shapes real Llama checkpoints use, built from a config; llama.cpp must match transformers."""
    import llama_cpp  # noqa: F401  (a dependency: its absence is a failure, not a skip)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from nodes.engines import make_engine
    from nodes.models.tiny import build_tokenizer

    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=40, max_position_embeddings=64, tie_word_embeddings=False,
        attention_bias=True, rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
            elif "q_proj" in name or "k_proj" in name:
                p.mul_(4.0)
        model.lm_head.weight.mul_(3.0)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    hf = make_engine("transformers", str(tmp_path / "m"), device="cpu")
    lc = make_engine("llamacpp", str(tmp_path / "m"), device="cpu")
    assert "output.weight" in _tensor_names(lc.gguf_path) and "rope_freqs.weight" in _tensor_names(lc.gguf_path)
    prompts = ["31415926>", "2>", "hello world, 1+2=3 and more text>"]
    assert_engines_agree(hf, lc, prompts, save_lora(tmp_path / "m", tmp_path / "lora", seed=0),
                         "general llama layout", max_new_tokens=24)
    lc.close()


def test_llama_cpps_own_tokenizer_reads_our_gguf_like_the_hf_tokenizer(base_gguf, tiny):
    """Found by a user: any tokenize call on our base GGUF aborted llama.cpp (a char vocabulary
    typed as SentencePiece, whose byte tokens it lacks). Now typed as merge-free byte-level BPE."""
    from conftest import llama_cpp_tokenize
    from transformers import AutoTokenizer

    text = "321> ab, c=4"
    assert llama_cpp_tokenize(base_gguf, text) == AutoTokenizer.from_pretrained(tiny)(
        text, add_special_tokens=False).input_ids
