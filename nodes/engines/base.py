"""The one interface every inference engine keeps, and the pieces both engines must share.

Two things are defined here, once, so that engines agree to the token and to the float:

- `encode_prompt`: the prompt ids. The trainer re-scores completions against these ids, so a
  prompt must tokenize the same way on every node whatever engine it runs.
- `sample_rows` / `sampling_uniforms`: the sampler. Both engines draw token t of sample j of
  prompt i by inverse CDF of softmax(logits / T) with the *same* uniform u[i, j, t] from a numpy
  Generator seeded with the call's seed. The recorded log-prob is that of the distribution
  actually sampled from, and two engines with (nearly) equal logits draw the same tokens.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


class EngineError(RuntimeError):
    """An engine cannot load a model or adapter, or was asked for something it cannot do."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    """0 means greedy (log-prob 0: the point mass actually sampled from)."""
    max_new_tokens: int = 7
    top_p: float = 1.0
    """Only 1.0 is supported: the behaviour log-probs are of the full-vocabulary softmax."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.top_p != 1.0:
            raise ValueError("top_p != 1.0 is not supported (log-probs are of the full softmax)")


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]
    """Includes the EOS token when one was generated."""
    logprobs: list[float]
    """One per completion token: log-prob under softmax(logits / T) over the full vocabulary."""


@runtime_checkable
class Engine(Protocol):
    name: str
    tokenizer: Any
    adapter_version: int | None

    def set_adapter(self, version: int | None, peft_dir: Path | None) -> None:
        """Swap to adapter `version` read from `peft_dir` (None: the base) without reloading the base."""

    def generate(
        self, prompts: list[str], n: int, params: SamplingParams, seed: int, *, chat_template: bool = False
    ) -> list[list[Sample]]:
        """One group of `n` samples per prompt, deterministic for `seed`."""

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], temperature: float = 1.0
              ) -> list[list[float]]:
        """Teacher-forced per-token log-probs of given completions under the current adapter."""

    def tokens_per_second(self) -> float:
        """Generated tokens / wall seconds of the last generate()."""


class TimedGeneration:
    """What both engines share: text prompts in, `generate_ids` does the work, tokens/s measured."""

    _last_tps = 0.0

    def encode(self, text: str, *, chat_template: bool = False) -> list[int]:
        return encode_prompt(self.tokenizer, text, chat_template=chat_template)

    def generate(self, prompts: list[str], n: int, params: SamplingParams, seed: int, *,
                 chat_template: bool = False) -> list[list[Sample]]:
        encoded = [self.encode(p, chat_template=chat_template) for p in prompts]
        t0 = time.perf_counter()
        groups = self.generate_ids(encoded, n, params, seed)
        wall = time.perf_counter() - t0
        produced = sum(len(s.completion_ids) for g in groups for s in g)
        self._last_tps = produced / wall if wall > 0 else 0.0
        return groups

    def tokens_per_second(self) -> float:
        return self._last_tps


def encode_prompt(tokenizer, text: str, *, chat_template: bool = False) -> list[int]:
    """The prompt ids, defined in one place for every engine and for the trainer.

    The tokenizer's own rules (its post-processor), then a BOS in front when the tokenizer has
    one and did not add it: the tiny char model was trained on `[bos] + chars`, and Llama-style
    models expect BOS; tokenizers without a BOS (Qwen) are left alone. With `chat_template` the
    text becomes one user turn rendered with the tokenizer's template and a generation prompt.
    """
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise EngineError("chat_template=True but the tokenizer has no chat template")
        out = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        ids = list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
        if ids and isinstance(ids[0], list):  # some versions return a batch of one
            ids = ids[0]
    else:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return [int(i) for i in ids]


def stop_token_ids(tokenizer, extra: Any = None) -> frozenset[int]:
    """EOS of the tokenizer plus any the model's generation config names (e.g. <|eot_id|>)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(int(i) for i in extra)
    return frozenset(ids)


def sampling_uniforms(seed: int, n_prompts: int, n: int, max_new_tokens: int) -> np.ndarray:
    """u[i, j, t] in [0, 1): the only randomness of a generate() call, identical on every engine."""
    return np.random.default_rng(seed).random((n_prompts, n, max_new_tokens))


def sample_rows(logits: np.ndarray, temperature: float, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF draws from softmax(logits / T), one per row with uniform u[row].

    Returns (tokens int64[rows], log-probs float64[rows]). float64 throughout so the engines'
    float32 logits are the only source of disagreement between them.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(len(u), -1)
    if temperature == 0.0:
        return z.argmax(-1), np.zeros(len(u))
    z = z / temperature
    z -= z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    cdf = np.cumsum(np.exp(logp), axis=-1)
    target = np.asarray(u, dtype=np.float64) * cdf[:, -1]
    tok = (cdf <= target[:, None]).sum(-1).clip(max=cdf.shape[1] - 1)  # searchsorted(side="right") per row
    return tok, logp[np.arange(len(u)), tok]


def sample_token(logits: np.ndarray, temperature: float, u: float) -> tuple[int, float]:
    """One draw of `sample_rows`: (token, log-prob)."""
    tok, lp = sample_rows(logits, temperature, np.asarray([u]))
    return int(tok[0]), float(lp[0])


def make_engine(kind: str, base: str, *, device: str = "auto", threads: int | None = None, **options) -> Engine:
    """Build an engine. `base`: HF dir or id (transformers); .gguf file or HF dir (llamacpp).

    Options: transformers `dtype` ("float32" default); llamacpp `n_ctx`, `tokenizer` (an HF dir,
    for a .gguf that does not embed its HF tokenizer), `gguf_cache` (where to write the converted
    base when `base` is an HF dir).
    """
    if kind == "transformers":
        from nodes.engines.transformers_engine import TransformersEngine

        return TransformersEngine(base, device=device, threads=threads, **options)
    if kind == "llamacpp":
        from nodes.engines.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(base, device=device, threads=threads, **options)
    raise EngineError(f"unknown engine {kind!r}: choose 'transformers' or 'llamacpp'")
