"""Measured decode speed of this machine on the embedded tiny model (tokens/s), cached.

Advertised in NodeInfo so role assignment and capacity planning use a number measured here,
not a guess from the hardware name. One short greedy decode (~1 s), cached per machine and
software version.
"""
from __future__ import annotations

import json
import os
import platform
import time

from nodes.models.tiny import cache_root

PROBE_TOKENS = 48


def _cache_key() -> str:
    import torch

    return f"{platform.node()}|{platform.machine()}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def measure_decode_speed() -> float:
    import torch

    from nodes.models.tiny import build_untrained

    model, tokenizer = build_untrained(seed=0)
    ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer.convert_tokens_to_ids(list("31415>"))])
    greedy = {"do_sample": False, "max_new_tokens": PROBE_TOKENS, "min_new_tokens": PROBE_TOKENS,
                  "pad_token_id": tokenizer.pad_token_id}
    with torch.inference_mode():
        model.generate(ids, **{**greedy, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up allocations
        start = time.perf_counter()
        model.generate(ids, **greedy)
        elapsed = time.perf_counter() - start
    return round(PROBE_TOKENS / elapsed, 1)


def decode_speed() -> float:
    """Cached measurement; re-measured when the machine or software changes."""
    path = cache_root() / "speed.json"
    key = _cache_key()
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return float(cached["tok_s"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    tok_s = measure_decode_speed()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"speed.json.{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "tok_s": tok_s}))
    os.replace(tmp, path)
    return tok_s
