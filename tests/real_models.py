"""Real-architecture models built locally: random weights, a tokenizer trained here (byte-level BPE
with Qwen's pre-tokenizer and ChatML; for Gemma a SentencePiece model with byte fallback and its
turn template), bf16 weights, optionally sharded. No hub, no download.

Small (2 layers, hidden 64) so a test converts and runs them in seconds; the same code paths as
the released checkpoints of each family (config class, tensor names, tokenizer type).
"""
from __future__ import annotations

from pathlib import Path

QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
              r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXT = ["sort the digits 31415 to 11345", "what is two plus two? four", "hello world, the quick brown fox",
        "31415926>", "2>", "hello world, 1+2=3 and more text>"]


def bpe_tokenizer():
    """A byte-level BPE tokenizer with Qwen's pre-tokenizer, special tokens and chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT * 100, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


GEMMA_TURNS = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
               "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
               "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def sentencepiece_tokenizer(out: Path):
    """Gemma's kind of tokenizer: a SentencePiece BPE model (tokenizer.model, what llama.cpp's
    converter reads for Gemma) with byte fallback, loaded the way transformers loads Gemma's."""
    import json

    import sentencepiece as spm
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(TEXT * 50))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=300,
                                   model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, byte_fallback=True,
                                   user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], minloglevel=2)
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "unk_token": "<unk>", "add_bos_token": True, "chat_template": GEMMA_TURNS}))
    return AutoTokenizer.from_pretrained(out)


def build(arch: str, out: Path, seed: int = 0, shard_size: str | None = None) -> Path:
    """A tiny `arch` model ('llama', 'qwen2', 'qwen3', 'mistral', 'gemma') in `out`, bf16, with its
    tokenizer; `shard_size` (e.g. "100KB") splits the weights into shards with an index."""
    import torch
    from transformers import (
        GemmaConfig,
        GemmaForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    tok = sentencepiece_tokenizer(out) if arch == "gemma" else bpe_tokenizer()
    common = {"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
              "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id}
    classes = {"llama": (LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": False}),
               "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"tie_word_embeddings": True}),
               "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"tie_word_embeddings": False, "head_dim": 24}),
               "mistral": (MistralConfig, MistralForCausalLM, {"tie_word_embeddings": False}),
               "gemma": (GemmaConfig, GemmaForCausalLM, {"head_dim": 16})}
    config_cls, model_cls, extra = classes[arch]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**common, **extra)).eval()
    with torch.no_grad():  # weights that make logits differ clearly between tokens
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
        model.get_output_embeddings().weight.mul_(3.0)
    model.to(torch.bfloat16).save_pretrained(out, **({"max_shard_size": shard_size} if shard_size else {}))
    tok.save_pretrained(out)
    return out
