"""Quantized GGUF copies of a base, made with llama.cpp's own quantizer (what `llama-quantize`
runs), for laptops that cannot hold the f32 base. Formats are named as llama.cpp names them."""
from __future__ import annotations

import os
from pathlib import Path

FORMATS = {"f32": "LLAMA_FTYPE_ALL_F32", "f16": "LLAMA_FTYPE_MOSTLY_F16", "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
           "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
"""Our base formats (`nodes.engines.formats`) -> llama.cpp's llama_ftype names."""


def quantize_gguf(src: Path | str, out: Path | str, fmt: str, threads: int = 1) -> Path:
    """Write `src` (an f32/f16 GGUF) to `out` in `fmt` (a key of FORMATS); atomic."""
    import llama_cpp as L

    from nodes.engines.llamacpp_engine import _log_tail, _quiet_llama

    if fmt not in FORMATS:
        raise ValueError(f"unknown GGUF format {fmt!r}: one of {', '.join(FORMATS)}")
    _quiet_llama()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    params = L.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = getattr(L, FORMATS[fmt])
    if L.llama_model_quantize(str(src).encode(), str(tmp).encode(), params) != 0:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"llama.cpp could not quantize {src} to {fmt}{_log_tail()}")
    os.replace(tmp, out)
    return out
