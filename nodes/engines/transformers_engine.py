"""Rollouts on torch/transformers (CPU, CUDA, MPS): batched sampling with a KV cache.

All n * len(prompts) rows are sampled together, prompts left-padded (explicit position ids,
because transformers derives positions from the cache, not from the mask). Tokens are drawn by
our own sampler (`base.sample_rows`'s math, in torch) so the recorded log-probs are
those of softmax(logits / T) and the draws match the llama.cpp engine for the same seed.

`completion_logprobs` / `score_completions` teacher-force given completions with the same
layout: the trainer reuses them to compute new log-probs and to re-check claimed behaviour ones.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nodes.engines.base import (
    EngineError,
    Sample,
    SamplingParams,
    TimedGeneration,
    sampling_uniforms,
    stop_token_ids,
)


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cache_kwarg(model) -> str:
    """transformers 5.2x renamed forward's `past_key_values` to `cache`; older ones only know the former."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _left_pad(rows: list[list[int]], pad_id: int, device):
    """(ids, attention_mask, position_ids) with rows right-aligned: column -1 is every row's last token."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def _sample_rows(logits, temperature: float, u):
    """Batched inverse-CDF draw; returns (tokens long[B], logprobs float64[B]) on logits' device."""
    import torch

    z = logits.to(torch.float64)
    if temperature == 0.0:
        return z.argmax(-1), torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    logp = torch.log_softmax(z / temperature, dim=-1)
    cdf = torch.cumsum(logp.exp(), dim=-1)
    target = (u.to(cdf.device, torch.float64) * cdf[:, -1]).unsqueeze(-1)
    tok = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
    return tok, logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)


def completion_logprobs(model, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                        temperature: float = 1.0, pad_id: int = 0):
    """Differentiable per-token log-probs of completions given prompts, teacher-forced.

    Layout: [pad.. prompt | completion ..pad]: prompts left-padded so every completion starts in
    the same column, only the completion's logits are computed (`logits_to_keep`).
    Returns (logprobs float32 [B, C], mask bool [B, C]) with C the longest completion.
    """
    import torch

    if temperature <= 0.0:
        raise ValueError("teacher-forced log-probs need temperature > 0")
    device = next(model.parameters()).device
    ids, mask, pos = _left_pad(prompt_ids, pad_id, "cpu")
    width_c = max(1, max(len(c) for c in completion_ids))
    comp = torch.full((len(prompt_ids), width_c), pad_id, dtype=torch.long)
    cmask = torch.zeros((len(prompt_ids), width_c), dtype=torch.bool)
    for i, c in enumerate(completion_ids):
        comp[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        cmask[i, : len(c)] = True
    last = pos[:, -1:]
    full_ids = torch.cat([ids, comp], dim=1).to(device)
    full_mask = torch.cat([mask, cmask.long()], dim=1).to(device)
    full_pos = torch.cat([pos, last + 1 + torch.arange(width_c).unsqueeze(0)], dim=1).to(device)
    out = model(input_ids=full_ids, attention_mask=full_mask, position_ids=full_pos,
                use_cache=False, logits_to_keep=width_c + 1)
    logits = out.logits[:, :-1, :].float() / temperature  # position k predicts completion token k
    logp = torch.log_softmax(logits, dim=-1).gather(-1, comp.to(device).unsqueeze(-1)).squeeze(-1)
    return logp, cmask.to(device)


def score_completions(model, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                      temperature: float = 1.0, pad_id: int = 0, batch_size: int = 256) -> list[list[float]]:
    """Per-token log-probs as lists (no grad): for re-checking claimed behaviour log-probs."""
    import torch

    out: list[list[float]] = []
    with torch.no_grad():
        for s in range(0, len(prompt_ids), batch_size):
            lp, _ = completion_logprobs(model, prompt_ids[s:s + batch_size], completion_ids[s:s + batch_size],
                                        temperature, pad_id)
            lp = lp.double().cpu().numpy()
            for row, c in zip(lp, completion_ids[s:s + batch_size]):
                out.append([float(x) for x in row[: len(c)]])
    return out


class TransformersEngine(TimedGeneration):
    name = "transformers"

    def __init__(self, base: str, *, device: str = "auto", threads: int | None = None, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)  # process-wide: an engine owns its process's torch
        self.device = pick_device(device)
        self.base = str(base)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.base)
            self.model = AutoModelForCausalLM.from_pretrained(self.base, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as e:
            raise EngineError(f"cannot load transformers base {self.base!r}: {e}") from e
        self.model.to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.stop_ids = stop_token_ids(self.tokenizer, getattr(self.model.generation_config, "eos_token_id", None))
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self._cache_kw = cache_kwarg(self.model)
        self.peft = None  # PeftModel wrapping self.model, created on the first adapter
        self._peft_config: dict | None = None
        self._adapter_name = "default"
        self._swaps = 0
        self._use_adapter = False
        self.adapter_version: int | None = None
        self._last_tps = 0.0

    # -- adapters -----------------------------------------------------------------------------
    def set_adapter(self, version: int | None, peft_dir: Path | None) -> None:
        """Load adapter `version`; the base stays in memory, only LoRA weights are replaced.

        Same LoRA config as the loaded one: weights copied in place (set_peft_model_state_dict).
        Different config: loaded under a new name, activated, the old one deleted.
        """
        if peft_dir is None:
            self._use_adapter = False
            self.adapter_version = version
            return
        from peft import PeftModel, set_peft_model_state_dict
        from safetensors.torch import load_file

        peft_dir = Path(peft_dir)
        cfg_path, weights = peft_dir / "adapter_config.json", peft_dir / "adapter_model.safetensors"
        if not cfg_path.is_file() or not weights.is_file():
            raise EngineError(f"{peft_dir} is not a PEFT adapter dir (adapter_config.json, adapter_model.safetensors)")
        cfg = json.loads(cfg_path.read_text())
        sig = {k: cfg.get(k) for k in ("r", "lora_alpha", "target_modules", "use_rslora", "rank_pattern",
                                       "alpha_pattern", "use_dora", "bias", "modules_to_save")}
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.model, str(peft_dir), adapter_name=self._adapter_name)
            self.peft.eval()
        elif sig == self._peft_config:
            state = load_file(str(weights), device=str(self.device))
            res = set_peft_model_state_dict(self.peft, state, adapter_name=self._adapter_name)
            if getattr(res, "unexpected_keys", None):
                raise EngineError(f"adapter {peft_dir} has tensors the model lacks: {res.unexpected_keys[:4]}")
        else:
            self._swaps += 1
            old, new = self._adapter_name, f"slot{self._swaps}"  # never the name in use
            self.peft.load_adapter(str(peft_dir), adapter_name=new)
            self.peft.set_adapter(new)
            self.peft.delete_adapter(old)
            self._adapter_name = new
        self.peft.eval()
        self._peft_config = sig
        self._use_adapter = True
        self.adapter_version = version

    def _adapter_scope(self):
        import contextlib

        if self.peft is not None and not self._use_adapter:
            return self.peft.disable_adapter()
        return contextlib.nullcontext()

    # -- sampling -----------------------------------------------------------------------------
    def generate_ids(self, prompt_ids: list[list[int]], n: int, params: SamplingParams, seed: int
                     ) -> list[list[Sample]]:
        import torch

        if not prompt_ids:
            return []
        if n < 1:
            raise ValueError("n must be >= 1")
        longest = max(len(p) for p in prompt_ids)
        if self.max_positions and longest + params.max_new_tokens > self.max_positions:
            raise EngineError(f"prompt of {longest} tokens + {params.max_new_tokens} new exceeds the "
                              f"model's {self.max_positions} positions")
        rows = [p for p in prompt_ids for _ in range(n)]
        u = torch.from_numpy(sampling_uniforms(seed, len(prompt_ids), n, params.max_new_tokens)
                             .reshape(len(rows), params.max_new_tokens))
        stop = torch.tensor(sorted(self.stop_ids) or [-1], device=self.device)
        ids, mask, pos = _left_pad(rows, self.pad_id, self.device)
        toks = np.zeros((len(rows), params.max_new_tokens), dtype=np.int64)
        lps = np.zeros((len(rows), params.max_new_tokens), dtype=np.float64)
        lengths = np.zeros(len(rows), dtype=np.int64)
        done = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
        with torch.inference_mode(), self._adapter_scope():
            from transformers import DynamicCache

            cache = {self._cache_kw: DynamicCache()}  # filled in place by every forward
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                             logits_to_keep=1, **cache)
            for t in range(params.max_new_tokens):
                tok, lp = _sample_rows(out.logits[:, -1, :], params.temperature, u[:, t])
                active = ~done
                done = done | torch.isin(tok, stop)
                a = active.cpu().numpy()
                toks[a, t] = tok.cpu().numpy()[a]
                lps[a, t] = lp.cpu().numpy()[a]
                lengths += a
                if bool(done.all()) or t + 1 == params.max_new_tokens:
                    break
                nxt = torch.where(done, torch.full_like(tok, self.pad_id), tok)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                pos = pos[:, -1:] + 1
                out = self.model(input_ids=nxt.unsqueeze(-1), attention_mask=mask, position_ids=pos,
                                 use_cache=True, **cache)
        groups: list[list[Sample]] = []
        for i, p in enumerate(prompt_ids):
            group = []
            for j in range(n):
                r = i * n + j
                k = int(lengths[r])
                group.append(Sample(list(p), toks[r, :k].tolist(), lps[r, :k].tolist()))
            groups.append(group)
        return groups

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], temperature: float = 1.0
              ) -> list[list[float]]:
        with self._adapter_scope():
            return score_completions(self.model, prompt_ids, completion_ids, temperature, self.pad_id)

