"""Real-architecture models built locally: random weights, a byte-level BPE tokenizer trained here
with the family's own pre-tokenizer and chat template, bf16 weights. No hub, no download.

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


def build(arch: str, out: Path, seed: int = 0) -> Path:
    """A tiny `arch` model ('qwen2', 'qwen3', 'mistral') in `out`, bf16, with its tokenizer. (Gemma's
    converter needs a SentencePiece tokenizer.model: not built here yet.)"""
    import torch
    from transformers import (
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    tok = bpe_tokenizer()
    common = {"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
              "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "bos_token_id": None}
    classes = {"qwen2": (Qwen2Config, Qwen2ForCausalLM, {"tie_word_embeddings": True}),
               "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"tie_word_embeddings": False, "head_dim": 24}),
               "mistral": (MistralConfig, MistralForCausalLM, {"tie_word_embeddings": False})}
    config_cls, model_cls, extra = classes[arch]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**common, **extra)).eval()
    with torch.no_grad():  # weights that make logits differ clearly between tokens
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
        model.get_output_embeddings().weight.mul_(3.0)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
