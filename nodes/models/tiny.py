"""The embedded default base model: a ~0.5 M parameter Llama built from a config, no downloads.

A character-level tokenizer (trained locally with `tokenizers`) and a 2-layer Llama, warmed up
with supervised steps that teach only the *format* of the sort-digits task: targets are random
permutations of the prompt digits, so sorted answers appear only by chance and any later rise
in reward comes from RL (DESIGN.md §8). Deterministic from a seed and cached on disk.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]
CHARS = list("0123456789") + list("abcdefghijklmnopqrstuvwxyz") + list(" :>=+-,.")
ANSWER_MARK = ">"  # prompt "31415>" -> completion "11345<eos>"

TINY_CONFIG = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 64,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
# 1000 steps: the model writes a valid permutation almost always (300 steps: 53% of the time), so
# reward starts at chance (~0.05) yet RL has a format to build on (DESIGN.md §8 speed of learning).
WARMUP = {"steps": 1000, "batch": 64, "lr": 3e-3}
FORMAT_VERSION = "tiny-llama-v2"  # bump when anything above changes: it keys the cache


def build_tokenizer():
    """Character-level fast tokenizer: one token per character, specials never split."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()  # characters join back without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )


def build_untrained(seed: int = 0):
    """The tiny Llama with seeded random weights (enough for speed probes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    return model, tokenizer


def format_warmup(model, tokenizer, seed: int, steps: int = WARMUP["steps"]) -> None:
    """Teach the answer format (digits then <eos>) on random permutations of the prompt."""
    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=WARMUP["lr"])
    model.train()
    for _ in range(steps):
        rows = []
        for _ in range(WARMUP["batch"]):
            digits = [str(rng.randrange(10)) for _ in range(rng.randint(3, 5))]
            target = digits[:]
            rng.shuffle(target)
            prompt = [tokenizer.bos_token_id] + tokenizer.convert_tokens_to_ids(digits + [ANSWER_MARK])
            answer = tokenizer.convert_tokens_to_ids(target) + [tokenizer.eos_token_id]
            rows.append((prompt, answer))
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, a) in enumerate(rows):
            seq = p + a
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p) : len(seq)] = torch.tensor(a)
            mask[i, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def cache_root() -> Path:
    return Path(os.environ.get("ECHO_SWARM_CACHE", Path.home() / ".cache" / "echo-swarm"))


def tiny_model_dir(seed: int = 0) -> Path:
    """Build (once) and return the HF directory of the warmed-up tiny model for `seed`."""
    import torch

    out = cache_root() / "models" / f"{FORMAT_VERSION}-seed{seed}"
    if (out / "model.safetensors").exists():
        return out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: same float reductions on every machine -> same digest
    try:
        model, tokenizer = build_untrained(seed)
        format_warmup(model, tokenizer, seed)
    finally:
        torch.set_num_threads(threads)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, out)  # atomic: concurrent builders race harmlessly, first one wins
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out
