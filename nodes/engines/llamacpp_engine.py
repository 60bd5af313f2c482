"""Rollouts on llama.cpp through llama-cpp-python's low-level API (CPU, Apple, CUDA builds).

Why the low-level API and our own sampler: the behaviour log-probs must be those of the
distribution actually sampled from, so we read the logits after every step and draw with
`base.sample_rows` (the same inverse-CDF rule and uniforms as the transformers engine).
Token ids come from `base.encode_prompt` and go straight into llama_decode: llama.cpp's own
tokenizer is never used, so the GGUF vocabulary only has to load, not to tokenize.

Defaults chosen for agreement with transformers (DESIGN.md §7): f32 KV cache, flash attention
off, one thread (fastest on a busy 2-core box). The prompt is evaluated once per group, its cache
cells shared (seq_cp) by up to `parallel` samples that are then decoded side by side, one
llama_decode per step for all of them; cells past the prompt are dropped before the next samples
and the whole cache is cleared between prompts and after an adapter swap. Same numbers as one
sequence at a time with a full reset (the tests check 1e-3; measured ~1e-6), several times faster.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import json
from pathlib import Path

import numpy as np

from nodes.engines import gguf_export
from nodes.engines.base import (
    EngineError,
    Sample,
    SamplingParams,
    TimedGeneration,
    sample_rows,
    sampling_uniforms,
    stop_token_ids,
)

_LOG_TAIL: collections.deque[str] = collections.deque(maxlen=40)
_LOG_CALLBACK = None  # keep the ctypes callback alive for the life of the process
_BACKEND_READY = False


def _quiet_llama() -> None:
    """Route llama.cpp/ggml logging into a small ring buffer (shown in our errors), not stderr."""
    global _LOG_CALLBACK, _BACKEND_READY
    import llama_cpp as L

    if _LOG_CALLBACK is None:
        def _log(level, text, _user):
            if text:
                _LOG_TAIL.append(text.decode("utf-8", "replace"))

        _LOG_CALLBACK = L.llama_log_callback(_log)
        L.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
    if not _BACKEND_READY:
        L.llama_backend_init()
        _BACKEND_READY = True


def _log_tail(n: int = 6) -> str:
    lines = "".join(_LOG_TAIL).strip().splitlines()[-n:]
    return (" | llama.cpp said: " + " / ".join(s.strip() for s in lines)) if lines else ""


def _hf_snapshot(repo_id: str) -> Path:
    """A Hugging Face id, fetched when a user points at one (never in tests)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise EngineError(f"{repo_id!r} is neither a .gguf file nor a local HF dir") from e
    return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.model"]))


class LlamaCppEngine(TimedGeneration):
    name = "llamacpp"

    def __init__(self, base: str, *, device: str = "auto", threads: int | None = None, n_ctx: int | None = None,
                 tokenizer=None, gguf_cache: str | None = None, kv_f32: bool = True, parallel: int = 8):
        import llama_cpp as L

        self._L = L
        src = Path(base)
        hf_dir: Path | None = None
        if src.suffix == ".gguf":
            if not src.is_file():
                raise EngineError(f"GGUF file {src} does not exist")
            self.gguf_path = src
        elif src.is_dir():
            hf_dir = src
        elif str(base).startswith(("/", ".", "~")):
            raise EngineError(f"base {base} is neither a .gguf file nor a local HF dir")
        else:
            hf_dir = _hf_snapshot(str(base))
        if hf_dir is not None:
            self.gguf_path = gguf_export.ensure_base_gguf(hf_dir, gguf_cache)
        self.hf_dir = hf_dir
        try:
            self.meta = gguf_export.read_gguf_meta(self.gguf_path)
        except (ValueError, OSError, IndexError) as e:
            raise EngineError(f"{self.gguf_path} is not a readable GGUF file: {e}") from e
        self.tokenizer = self._load_tokenizer(tokenizer, hf_dir)
        arch = self.meta.get("general.architecture", "llama")
        self.n_head = int(self.meta[f"{arch}.attention.head_count"])
        self.n_head_kv = int(self.meta.get(f"{arch}.attention.head_count_kv", self.n_head))
        n_ctx_train = int(self.meta.get(f"{arch}.context_length", 4096))

        _quiet_llama()
        mparams = L.llama_model_default_params()
        if device == "cpu":
            mparams.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(str(self.gguf_path).encode(), mparams)
        if not self.model:
            raise EngineError(f"llama.cpp cannot load {self.gguf_path}{_log_tail()}")
        self.n_ctx = min(n_ctx or 4096, n_ctx_train)  # positions per sequence
        self.parallel = max(1, parallel)
        cparams = L.llama_context_default_params()
        # One unified cache for the samples of a group: the prompt's cells are shared (seq_cp), each
        # sample adds only its own tokens. A group runs min(parallel, free cells // max_new) side by side.
        self.n_cells = self.n_ctx + (self.parallel - 1) * min(self.n_ctx, 512)
        cparams.n_ctx = self.n_cells
        cparams.n_batch = cparams.n_ubatch = max(min(self.n_ctx, 512), self.parallel)
        cparams.n_seq_max = self.parallel
        cparams.kv_unified = True
        cparams.n_outputs_max = 0  # 0 = n_batch: score() needs one output per completion token
        cparams.n_outputs_max_per_seq = 0
        cparams.n_threads = cparams.n_threads_batch = threads or 1
        cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if kv_f32:
            cparams.type_k = cparams.type_v = L.GGML_TYPE_F32
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise EngineError(f"llama.cpp cannot create a context for {self.gguf_path}{_log_tail()}")
        self.mem = L.llama_get_memory(self.ctx)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.n_batch = cparams.n_batch
        self.batch = L.llama_batch_init(self.n_batch, 0, 1)
        if len(self.tokenizer) > self.n_vocab:
            raise EngineError(f"tokenizer has {len(self.tokenizer)} tokens, the GGUF only {self.n_vocab}")
        self.stop_ids = stop_token_ids(self.tokenizer, self._generation_eos(hf_dir))
        self._adapter = None
        self.adapter_version: int | None = None
        self._last_tps = 0.0

    def _load_tokenizer(self, tokenizer, hf_dir: Path | None):
        from transformers import AutoTokenizer

        if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
            return tokenizer
        if tokenizer is not None or hf_dir is not None:
            return AutoTokenizer.from_pretrained(str(tokenizer or hf_dir))
        tok = gguf_export.tokenizer_from_gguf(self.gguf_path)
        if tok is None:
            raise EngineError(f"{self.gguf_path} embeds no HF tokenizer: pass tokenizer=<HF dir of the base>")
        return tok

    def _generation_eos(self, hf_dir: Path | None):
        text = None
        if hf_dir is not None and (hf_dir / "generation_config.json").is_file():
            text = (hf_dir / "generation_config.json").read_text()
        else:
            text = self.meta.get(gguf_export.KEY_TOKENIZER + "generation_config.json")
        return json.loads(text).get("eos_token_id") if text else None

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        L = self._L
        if getattr(self, "ctx", None):
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            L.llama_model_free(self.model)  # frees its adapters too
            self.model = None

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to report to
            self.close()

    # -- adapters -----------------------------------------------------------------------------
    def set_adapter(self, version: int | None, peft_dir: Path | None) -> None:
        """Swap LoRA at run time: load the new adapter, attach it, free the old; the base stays.

        `peft_dir` is a PEFT dir (converted once to <dir>/gguf/adapter-f32.gguf) or a .gguf adapter.
        """
        L = self._L
        old = self._adapter
        if peft_dir is None:
            L.llama_set_adapters_lora(self.ctx, None, 0, None)
            self._adapter = None
        else:
            p = Path(peft_dir)
            path = p if p.suffix == ".gguf" else gguf_export.ensure_lora_gguf(p, self.n_head, self.n_head_kv,
                                                                              hf_dir=self.hf_dir)
            adapter = L.llama_adapter_lora_init(self.model, str(path).encode())
            if not adapter:
                raise EngineError(f"llama.cpp cannot load LoRA adapter {path}{_log_tail()}")
            arr = (L.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(1.0)
            if L.llama_set_adapters_lora(self.ctx, arr, 1, scales) != 0:
                L.llama_adapter_lora_free(adapter)
                raise EngineError(f"llama.cpp refused adapter {path}{_log_tail()}")
            self._adapter = adapter
        if old is not None and old is not self._adapter:
            L.llama_adapter_lora_free(old)
        L.llama_memory_clear(self.mem, True)  # cached K/V were computed with the old weights
        self.adapter_version = version

    # -- evaluation ---------------------------------------------------------------------------
    def _decode(self, tokens: list[int], pos0: int, want_logits: int) -> list[np.ndarray]:
        """Evaluate `tokens` at positions pos0.. in sequence 0; returns logits of the last `want_logits`."""
        L, b = self._L, self.batch
        first_out = len(tokens) - want_logits
        outs: list[np.ndarray] = []
        for s in range(0, len(tokens), self.n_batch):
            chunk = tokens[s:s + self.n_batch]
            b.n_tokens = len(chunk)
            for k, tok in enumerate(chunk):
                b.token[k] = tok
                b.pos[k] = pos0 + s + k
                b.n_seq_id[k] = 1
                b.seq_id[k][0] = 0
                b.logits[k] = s + k >= first_out
            rc = L.llama_decode(self.ctx, b)
            if rc != 0:
                raise EngineError(f"llama_decode failed ({rc}){_log_tail()}")
            for k in range(max(0, first_out - s), len(chunk)):
                ptr = L.llama_get_logits_ith(self.ctx, k)
                outs.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return outs

    def generate_ids(self, prompt_ids: list[list[int]], n: int, params: SamplingParams, seed: int
                     ) -> list[list[Sample]]:
        if n < 1:
            raise ValueError("n must be >= 1")
        for p in prompt_ids:
            if not p or len(p) + params.max_new_tokens > self.n_ctx:
                raise EngineError(f"prompt of {len(p)} tokens + {params.max_new_tokens} new does not fit "
                                  f"the {self.n_ctx}-token context")
        u = sampling_uniforms(seed, len(prompt_ids), n, params.max_new_tokens)
        groups: list[list[Sample]] = []
        for i, prompt in enumerate(prompt_ids):
            self._L.llama_memory_clear(self.mem, True)
            first = self._decode(prompt, 0, 1)[0]
            width = max(1, min(self.parallel, (self.n_cells - len(prompt)) // params.max_new_tokens))
            group: list[Sample] = []
            for j0 in range(0, n, width):
                group += self._sample_together(prompt, first, u[i, j0:min(n, j0 + width)], params)
            groups.append(group)
        return groups

    def _sample_together(self, prompt: list[int], first: np.ndarray, u: np.ndarray, params: SamplingParams
                         ) -> list[Sample]:
        """len(u) samples of one prompt decoded side by side: sequence s holds sample s.

        The prompt's cells (sequence 0) are shared with every sequence; each step is one
        llama_decode of the still-running samples, one token each.
        """
        L, b = self._L, self.batch
        plen, m = len(prompt), len(u)
        L.llama_memory_seq_rm(self.mem, -1, plen, -1)  # drop the previous samples, keep the prompt
        for s in range(1, m):
            L.llama_memory_seq_cp(self.mem, 0, s, -1, -1)
        comps: list[list[int]] = [[] for _ in range(m)]
        lps: list[list[float]] = [[] for _ in range(m)]
        logits = np.broadcast_to(first, (m, self.n_vocab))  # row k: logits of active[k]
        active = list(range(m))
        for t in range(params.max_new_tokens):
            toks, lpv = sample_rows(logits, params.temperature, u[active, t])
            running = []
            for s, tok, lp in zip(active, toks.tolist(), lpv.tolist()):
                comps[s].append(tok)
                lps[s].append(lp)
                if tok not in self.stop_ids:
                    running.append(s)
            active = running
            if not active or t + 1 == params.max_new_tokens:
                break
            b.n_tokens = len(active)
            for k, s in enumerate(active):
                b.token[k] = comps[s][-1]
                b.pos[k] = plen + t
                b.n_seq_id[k] = 1
                b.seq_id[k][0] = s
                b.logits[k] = True
            rc = L.llama_decode(self.ctx, b)
            if rc != 0:
                raise EngineError(f"llama_decode failed ({rc}){_log_tail()}")
            # every token of the batch is an output, in batch order: one (m, V) block
            logits = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(len(active), self.n_vocab)).copy()
        return [Sample(list(prompt), c, lp) for c, lp in zip(comps, lps)]

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], temperature: float = 1.0
              ) -> list[list[float]]:
        """Teacher-forced per-token log-probs of softmax(logits / T), one sequence at a time."""
        if temperature <= 0.0:
            raise ValueError("teacher-forced log-probs need temperature > 0")
        out: list[list[float]] = []
        for p, c in zip(prompt_ids, completion_ids):
            if not c:
                out.append([])
                continue
            if len(p) + len(c) > self.n_ctx:
                raise EngineError(f"{len(p) + len(c)} tokens do not fit the {self.n_ctx}-token context")
            self._L.llama_memory_clear(self.mem, True)
            seq = list(p) + list(c[:-1])
            lps = []
            for tok, logits in zip(c, self._decode(seq, 0, len(c))):
                z = logits.astype(np.float64) / temperature
                z -= z.max()
                lps.append(float(z[tok] - np.log(np.exp(z).sum())))
            out.append(lps)
        return out

