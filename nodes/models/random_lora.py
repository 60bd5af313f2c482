"""A LoRA adapter with random, non-zero B for a base (a fresh PEFT LoRA has B = 0, i.e. is the
base): what engine-agreement tests and the honesty calibration run instead of a trained one."""
from __future__ import annotations

from pathlib import Path


def save_random_lora(base_dir: Path | str, out: Path | str, seed: int, r: int = 8, alpha: int = 16,
                     scale: float = 0.1, **lora) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from nodes.trainer.policy import LORA_TARGETS

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)  # A is PEFT's random init: seeded too, so the adapter is reproducible
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(LORA_TARGETS), **lora))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    peft.save_pretrained(out)
    return Path(out)
