"""The trained policy: a frozen HF base model wrapped with a PEFT LoRA adapter, stepped by GRPO.

Only LoRA parameters train (DESIGN.md §8 defaults). The model stays in eval mode: nothing in the
recipe uses dropout, and eval mode keeps the trainer's teacher-forced log-probs equal to the
rollout engines' sampling log-probs, which is what the importance ratio assumes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodes.trainer.grpo import group_advantages, grpo_loss

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class PolicyConfig:
    """LoRA shape and GRPO optimiser settings; the defaults are the measured recipe."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS
    lr: float = 2e-3
    grad_clip: float = 1.0
    clip: float = 0.2
    kl_coef: float = 0.0
    adv_eps: float = 1e-4
    temperature: float = 1.0
    """The sampling temperature: log-probs are of softmax(logits / T), as the engines record them."""
    micro_batch_tokens: int = 8192
    """Rows x longest row per forward/backward of a training step (gradients accumulate over the
    micro-batches): bounds activation memory whatever the batch size."""
    logit_elements: int = 1 << 22
    """Most vocabulary-sized logits held at once (positions x vocab): log-probs are computed in
    chunks of positions, and recomputed in backward, so memory does not grow with the vocabulary
    times the batch."""

    @classmethod
    def from_manifest(cls, m) -> PolicyConfig:
        """The LoRA and GRPO settings of a run manifest (what every trainer of the run uses)."""
        return cls(r=m.lora.r, alpha=m.lora.alpha, targets=tuple(m.lora.targets), lr=m.grpo.lr,
                   grad_clip=m.grpo.grad_clip, clip=m.grpo.clip, kl_coef=m.grpo.kl_coef,
                   temperature=m.grpo.temperature)

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0 or not self.targets:
            raise ValueError("LoRA needs r >= 1, alpha > 0, 0 <= dropout < 1 and some target modules")
        if self.lr <= 0 or self.grad_clip <= 0 or not 0 < self.clip < 1 or self.kl_coef < 0:
            raise ValueError("need lr > 0, grad_clip > 0, 0 < clip < 1, kl_coef >= 0")
        if self.temperature <= 0:
            raise ValueError("training needs temperature > 0 (greedy samples have no log-probs)")


Pair = tuple[Sequence[int], Sequence[int]]  # (prompt_ids, completion_ids)


@dataclass
class Policy:
    """LoRA policy over ``base_dir``. Deterministic from ``seed`` (LoRA init; training itself
    has no randomness). ``threads`` sets torch's intra-op threads, which is process-wide."""

    base_dir: str | Path
    config: PolicyConfig = field(default_factory=PolicyConfig)
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        c = self.config
        base = AutoModelForCausalLM.from_pretrained(str(self.base_dir), dtype=torch.float32)
        lora = LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=list(c.targets),
                          bias="none", task_type="CAUSAL_LM")
        with torch.random.fork_rng(devices=[]):  # seeded LoRA init without touching the caller's RNG
            torch.manual_seed(self.seed)
            self.model = get_peft_model(base, lora)
        self.model.eval()
        self.pad_id = int(base.config.pad_token_id if base.config.pad_token_id is not None else 0)
        self.vocab_size = int(base.config.vocab_size)
        self.named_trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not self.named_trainable or any("lora_" not in n for n, _ in self.named_trainable):
            raise RuntimeError("expected only LoRA parameters to be trainable")
        self.optimizer = torch.optim.Adam([p for _, p in self.named_trainable], lr=c.lr)
        self.step = 0

    # -- scoring ---------------------------------------------------------------------------

    def token_logprobs(self, batch: Sequence[Pair], temperature: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log p(completion token | prefix) under softmax(logits / T).

        Returns ``(logprobs [B, Tc], mask [B, Tc])``, right-padded to the longest completion;
        gradients flow when called under grad mode. One forward over right-padded
        prompt+completion rows: causal attention means padding on the right changes nothing
        for the real positions.
        """
        t = self.config.temperature if temperature is None else float(temperature)
        if t <= 0:
            raise ValueError("temperature must be > 0")
        if not batch:
            raise ValueError("empty batch")
        p_len = torch.tensor([len(p) for p, _ in batch])
        c_len = torch.tensor([len(c) for _, c in batch])
        if int(p_len.min()) < 1 or int(c_len.min()) < 1:
            raise ValueError("every sample needs a prompt token and a completion token")
        width = int((p_len + c_len).max())
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, c) in enumerate(batch):
            row = list(p) + list(c)
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attn[i, : len(row)] = 1
        if int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            raise ValueError("token id outside the model's vocabulary")
        base = self.model.get_base_model()
        hidden = base.model(input_ids=ids, attention_mask=attn).last_hidden_state  # [B, L, H]: no logits yet
        tc = int(c_len.max())
        j = torch.arange(tc)
        mask = j[None, :] < c_len[:, None]
        pos = (p_len[:, None] + j[None, :] - 1).clamp(max=width - 2)  # the state at pos predicts pos + 1
        rows = torch.arange(len(batch))[:, None]
        logp = self._completion_logprobs(hidden[rows, pos], ids[rows, pos + 1], t)
        return torch.where(mask, logp, torch.zeros_like(logp)), mask

    def _completion_logprobs(self, states: torch.Tensor, targets: torch.Tensor, t: float) -> torch.Tensor:
        """log softmax(head(state) / T)[target] for [B, Tc] positions, `logit_elements` logits at a
        time; under grad each chunk's logits are recomputed in backward instead of kept."""
        from torch.utils.checkpoint import checkpoint

        base = self.model.get_base_model()
        head = base.get_output_embeddings()
        cap = getattr(base.config, "final_logit_softcapping", None)

        def chunk_logprobs(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = head(h)
            if cap:  # Gemma 2/3 cap their logits before the softmax
                logits = torch.tanh(logits / cap) * cap
            return torch.log_softmax(logits.float() / t, dim=-1).gather(-1, y[:, None]).squeeze(-1)

        flat_h, flat_y = states.reshape(-1, states.shape[-1]), targets.reshape(-1)
        step = max(1, self.config.logit_elements // self.vocab_size)
        if flat_h.shape[0] <= step:  # all logits fit the budget: one pass, kept for backward
            return chunk_logprobs(flat_h, flat_y).reshape(targets.shape)
        recompute = torch.is_grad_enabled()
        parts = [checkpoint(chunk_logprobs, flat_h[i : i + step], flat_y[i : i + step], use_reentrant=False)
                 if recompute else chunk_logprobs(flat_h[i : i + step], flat_y[i : i + step])
                 for i in range(0, flat_h.shape[0], step)]
        return torch.cat(parts).reshape(targets.shape)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits

    # -- training --------------------------------------------------------------------------

    def train_step(self, samples: Sequence[Pair], rewards: Any, old_logprobs: Sequence[Sequence[float]],
                   ) -> dict[str, float]:
        """One GRPO step (one optimiser step over the whole batch).

        ``samples`` is flat and group-major; ``rewards`` is a [G, n] tensor or a list of
        per-group reward lists (ragged allowed) whose sizes sum to ``len(samples)``;
        ``old_logprobs[i]`` are the behaviour log-probs of ``samples[i]``'s completion tokens.
        """
        c = self.config
        adv = self._advantages(rewards, len(samples))
        if len(old_logprobs) != len(samples):
            raise ValueError("one behaviour log-prob list per sample")
        for i, lp in enumerate(old_logprobs):
            if len(lp) != len(samples[i][1]):
                raise ValueError(f"sample {i}: {len(lp)} behaviour log-probs for {len(samples[i][1])} tokens")
        total_tokens = sum(len(comp) for _, comp in samples)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, parts = 0.0, []
        # Gradient accumulation: each micro-batch's loss is its share of the batch's token mean,
        # so the accumulated gradient is the whole batch's.
        for rows in micro_batches([len(p) + len(comp) for p, comp in samples], c.micro_batch_tokens):
            part = [samples[i] for i in rows]
            new_lp, mask = self.token_logprobs(part)
            old = torch.zeros_like(new_lp)
            for k, i in enumerate(rows):
                old[k, : len(old_logprobs[i])] = torch.tensor(list(old_logprobs[i]), dtype=old.dtype)
            ref = None
            if c.kl_coef > 0:
                with torch.no_grad(), self.model.disable_adapter():
                    ref, _ = self.token_logprobs(part)
            loss, stats = grpo_loss(new_lp, old, adv[rows], mask, clip=c.clip, kl_coef=c.kl_coef, ref_logprobs=ref)
            share = stats["tokens"] / total_tokens
            (loss * share).backward()
            loss_sum += float(loss.detach()) * share
            parts.append(stats)
        stats = _merge_stats(parts)
        loss = torch.tensor(loss_sum)
        params = [p for _, p in self.named_trainable]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        stats.update(loss=float(loss.detach()), grad_norm=float(grad_norm), step=self.step,
                     adv_abs_mean=float(adv.abs().mean()))
        return stats

    def _advantages(self, rewards: Any, n_samples: int) -> torch.Tensor:
        if isinstance(rewards, torch.Tensor):
            groups = [rewards] if rewards.ndim == 1 else list(rewards)
        else:
            groups = [torch.as_tensor(list(g), dtype=torch.float32) for g in rewards]
        if sum(len(g) for g in groups) != n_samples:
            raise ValueError("rewards do not cover the samples one to one")
        sizes = {len(g) for g in groups}
        if len(sizes) == 1:  # the usual case: one [G, n] call
            return group_advantages(torch.stack([g.float() for g in groups]), self.config.adv_eps).reshape(-1)
        return torch.cat([group_advantages(g.float()[None], self.config.adv_eps)[0] for g in groups])

    # -- adapter and checkpoint state ------------------------------------------------------

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The adapter as PEFT writes it (``adapter_model.safetensors`` names), detached copies."""
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}

    def set_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load an adapter version (e.g. the newest published one, on trainer failover)."""
        from peft import set_peft_model_state_dict

        want = set(self.adapter_tensors())
        if set(tensors) != want:
            raise ValueError(f"adapter tensors differ from this policy's: {sorted(set(tensors) ^ want)[:4]}")
        result = set_peft_model_state_dict(self.model, tensors)
        if [k for k in result.unexpected_keys if "lora_" in k]:
            raise ValueError(f"unexpected adapter keys: {result.unexpected_keys[:4]}")

    def peft_config_dict(self) -> dict[str, Any]:
        """``adapter_config.json`` content, JSON-ready (sets as sorted lists, enums as values).

        ``base_model_name_or_path`` names the base as a user resolves it, so that
        ``AutoPeftModelForCausalLM.from_pretrained(version_dir)`` loads: a Hugging Face id as is,
        a local directory (the embedded tiny model's included) as an absolute path, which is
        only meaningful on this machine (`swarm export` writes the base beside the adapter).
        ``revision`` is PEFT's revision of the *base* model: kept only when one is pinned.
        """
        d = self.model.peft_config["default"].to_dict()
        out = {}
        for k, v in d.items():
            if isinstance(v, set):
                v = sorted(v)
            elif hasattr(v, "value"):
                v = v.value
            out[k] = v
        base = Path(self.base_dir)
        out["base_model_name_or_path"] = str(base.resolve()) if base.is_dir() else str(self.base_dir)
        if out.get("revision") is None:
            out.pop("revision", None)
        out["inference_mode"] = True
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter + Adam state as a flat name -> tensor dict (storable with safetensors, no pickle)."""
        out: dict[str, torch.Tensor] = {"meta.step": torch.tensor(self.step, dtype=torch.int64)}
        for name, p in self.named_trainable:
            out[f"adapter.{name}"] = p.detach().clone()
            st = self.optimizer.state.get(p)
            if st:
                out[f"optim.{name}.exp_avg"] = st["exp_avg"].detach().clone()
                out[f"optim.{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().clone()
                out[f"optim.{name}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).clone()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        names = [n for n, _ in self.named_trainable]
        missing = [n for n in names if f"adapter.{n}" not in state]
        if missing or "meta.step" not in state:
            raise ValueError(f"checkpoint lacks {missing[:3] or ['meta.step']}")
        opt_state = {}
        with torch.no_grad():
            for i, (name, p) in enumerate(self.named_trainable):
                src = state[f"adapter.{name}"]
                if src.shape != p.shape:
                    raise ValueError(f"{name}: shape {tuple(src.shape)} != {tuple(p.shape)}")
                p.copy_(src)
                if f"optim.{name}.exp_avg" in state:
                    opt_state[i] = {
                        "step": state[f"optim.{name}.step"].clone().float(),
                        "exp_avg": state[f"optim.{name}.exp_avg"].clone(),
                        "exp_avg_sq": state[f"optim.{name}.exp_avg_sq"].clone(),
                    }
        sd = self.optimizer.state_dict()
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": sd["param_groups"]})
        self.step = int(state["meta.step"])


def micro_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Consecutive index groups whose rows x longest row stays within `max_tokens` (a single row
    longer than that is a batch of its own): what one forward (and backward) may hold."""
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i, n in enumerate(lengths):
        if current and (len(current) + 1) * max(width, n) > max_tokens:
            batches.append(current)
            current, width = [], 0
        current.append(i)
        width = max(width, n)
    return batches + ([current] if current else [])


def _merge_stats(parts: list[dict]) -> dict:
    """Token-weighted means of the micro-batches' stats (ratio_max: the largest)."""
    tokens = sum(p["tokens"] for p in parts) or 1
    out = {k: sum(p[k] * p["tokens"] for p in parts) / tokens for k in parts[0] if k not in ("tokens", "ratio_max")}
    out.update(ratio_max=max(p["ratio_max"] for p in parts), tokens=sum(p["tokens"] for p in parts))
    return out
