"""Engine overhead: tokens/s of Engine.generate vs a bare loop on the same model and sampler.

Both paths run in this process on the same weights, the same uniforms (so the same tokens, the
same work) and the same algorithm (batched KV-cache loop for transformers; prompt evaluated once
per group, its samples decoded side by side, for llama.cpp). The ratio engine/bare is what our
engine layer costs; the goal is >= 0.9. Runs alternate and the median is reported, because this
box is shared. Prints JSON.

    python benchmarks/engine_bench.py [--untrained] [--prompts 32 --n 8 --max-new 7 --repeats 7]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def prompts_for(count: int, seed: int) -> list[str]:
    import itertools

    from nodes.tasks.sort_digits import SortDigits

    return [p.text for p in itertools.islice(SortDigits().prompts(seed), count)]


def bare_transformers(model, rows_ids: list[list[int]], n: int, params, seed: int, pad_id: int, stop: set) -> int:
    """The minimal HF loop: left-padded batch, DynamicCache, our batched sampler. Returns tokens made."""
    import torch
    from transformers import DynamicCache

    from nodes.engines.base import sampling_uniforms
    from nodes.engines.transformers_engine import _left_pad, _sample_rows, cache_kwarg

    rows = [p for p in rows_ids for _ in range(n)]
    u = torch.from_numpy(sampling_uniforms(seed, len(rows_ids), n, params.max_new_tokens).reshape(len(rows), -1))
    ids, mask, pos = _left_pad(rows, pad_id, "cpu")
    stop_t = torch.tensor(sorted(stop))
    done = torch.zeros(len(rows), dtype=torch.bool)
    made = 0
    kw = {cache_kwarg(model): DynamicCache()}
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1, **kw)
        for t in range(params.max_new_tokens):
            tok, _ = _sample_rows(out.logits[:, -1, :], params.temperature, u[:, t])
            made += int((~done).sum())
            done |= torch.isin(tok, stop_t)
            if bool(done.all()) or t + 1 == params.max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=tok.unsqueeze(-1), attention_mask=mask, position_ids=pos, use_cache=True, **kw)
    return made


class BareLlama:
    """Direct llama_cpp calls on an own model and context: the same batched-group algorithm as the
    engine (prompt once, its cells shared by the group's sequences, one llama_decode per step)."""

    def __init__(self, gguf_path: Path, n_cells: int, n_batch: int, parallel: int):
        import llama_cpp as L

        from nodes.engines.llamacpp_engine import _quiet_llama

        _quiet_llama()
        self.L, self.parallel = L, parallel
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(str(gguf_path).encode(), mp)
        cp = L.llama_context_default_params()
        cp.n_ctx = n_cells
        cp.n_batch = cp.n_ubatch = n_batch
        cp.n_seq_max = parallel
        cp.kv_unified = True
        cp.n_threads = cp.n_threads_batch = 1
        cp.n_outputs_max_per_seq = 0
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.type_k = cp.type_v = L.GGML_TYPE_F32
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.mem = L.llama_get_memory(self.ctx)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(cp.n_batch, 0, 1)

    def run(self, rows_ids: list[list[int]], n: int, params, seed: int, stop: set) -> int:
        import numpy as np

        from nodes.engines.base import sample_rows, sampling_uniforms

        L, b, V = self.L, self.batch, self.n_vocab
        u = sampling_uniforms(seed, len(rows_ids), n, params.max_new_tokens)
        made = 0
        for i, prompt in enumerate(rows_ids):
            L.llama_memory_clear(self.mem, True)
            arr = (L.llama_token * len(prompt))(*prompt)
            L.llama_decode(self.ctx, L.llama_batch_get_one(arr, len(prompt)))
            first = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, -1), shape=(V,)).copy()
            plen = len(prompt)
            for j0 in range(0, n, self.parallel):
                m = min(n - j0, self.parallel)
                L.llama_memory_seq_rm(self.mem, -1, plen, -1)
                for s in range(1, m):
                    L.llama_memory_seq_cp(self.mem, 0, s, -1, -1)
                logits, last, active = np.broadcast_to(first, (m, V)), [0] * m, list(range(m))
                for t in range(params.max_new_tokens):
                    toks, _ = sample_rows(logits, params.temperature, u[i, [j0 + s for s in active], t])
                    made += len(active)
                    running = []
                    for s, tok in zip(active, toks.tolist()):
                        last[s] = tok
                        if tok not in stop:
                            running.append(s)
                    active = running
                    if not active or t + 1 == params.max_new_tokens:
                        break
                    b.n_tokens = len(active)
                    for k, s in enumerate(active):
                        b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = last[s], plen + t, 1, True
                        b.seq_id[k][0] = s
                    L.llama_decode(self.ctx, b)
                    logits = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(len(active), V)).copy()
        return made


def timed(fn) -> tuple[float, float, int]:
    c0, t0 = time.process_time(), time.perf_counter()
    made = fn()
    return time.perf_counter() - t0, time.process_time() - c0, made


def measure(engine_fn, bare_fn, repeats: int) -> dict:
    """Alternating runs; tokens per wall second (the goal) and per CPU second of this process
    (steadier when other work shares the cores: it does not count time spent waiting for a core)."""
    engine_fn(), bare_fn()  # warm-up: allocations, graph build, caches
    runs: dict[str, list[tuple[float, float]]] = {"engine": [], "bare": []}
    for _ in range(repeats):
        for key, fn in (("engine", engine_fn), ("bare", bare_fn)):
            wall, cpu, made = timed(fn)
            runs[key].append((made / wall, made / max(cpu, 1e-9)))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    return {"engine_tokens_per_s": round(med["engine"][0], 1), "bare_tokens_per_s": round(med["bare"][0], 1),
            "ratio": round(med["engine"][0] / med["bare"][0], 3),
            "engine_tokens_per_cpu_s": round(med["engine"][1], 1), "bare_tokens_per_cpu_s": round(med["bare"][1], 1),
            "ratio_cpu": round(med["engine"][1] / med["bare"][1], 3),
            "engine_runs": [round(w) for w, _ in runs["engine"]], "bare_runs": [round(w) for w, _ in runs["bare"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--untrained", action="store_true", help="random weights instead of the warmed tiny model")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--engines", default="transformers,llamacpp")
    args = ap.parse_args()

    import torch

    from nodes.engines import SamplingParams, encode_prompt, make_engine

    torch.set_num_threads(1)
    if args.untrained:
        from nodes.models.tiny import build_untrained

        model_dir = Path(tempfile.mkdtemp(prefix="engine-bench-"))
        m, tok = build_untrained(0)
        m.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    else:
        from nodes.models.tiny import tiny_model_dir

        model_dir = tiny_model_dir(0)
    prompts = prompts_for(args.prompts, 0)
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new)
    result: dict = {"model": "tiny-untrained" if args.untrained else "tiny-warmed",
                    "workload": {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new,
                                 "temperature": 1.0, "repeats": args.repeats},
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "torch": torch.__version__, "threads": 1}}
    seed = 123
    if "transformers" in args.engines:
        eng = make_engine("transformers", str(model_dir), device="cpu", threads=1)
        ids = [encode_prompt(eng.tokenizer, p) for p in prompts]
        result["transformers"] = measure(
            lambda: sum(len(s.completion_ids) for g in eng.generate(prompts, args.n, params, seed) for s in g),
            lambda: bare_transformers(eng.model, ids, args.n, params, seed, eng.pad_id, set(eng.stop_ids)),
            args.repeats)
    if "llamacpp" in args.engines:
        import llama_cpp

        eng = make_engine("llamacpp", str(model_dir), device="cpu", threads=1)
        bare = BareLlama(eng.gguf_path, eng.n_cells, eng.n_batch, eng.parallel)
        ids = [encode_prompt(eng.tokenizer, p) for p in prompts]
        result["llamacpp"] = measure(
            lambda: sum(len(s.completion_ids) for g in eng.generate(prompts, args.n, params, seed) for s in g),
            lambda: bare.run(ids, args.n, params, seed, set(eng.stop_ids)),
            args.repeats)
        result["llamacpp"]["llama_cpp_python"] = llama_cpp.__version__
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
