"""GRPO as pure tensor functions: group advantages and the clipped token-level loss.

No model, no I/O: the trainer node and the co-located baseline both call these, and the unit
tests check them against hand-computed values (DESIGN.md §2: pure functions live apart). Which
chunks are fresh enough to train on is `swarm.sync.lag_rejection`, the one staleness rule.
"""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group (row) of a [G, n] reward tensor.

    std is the sample std (Bessel-corrected, as in DeepSeek's GRPO and TRL). A group whose
    rewards are all equal gets zero advantage, so it adds no gradient; a group of one sample
    has no baseline and gets zero too.
    """
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.ndim != 2:
        raise ValueError(f"rewards must be [groups, samples], got shape {tuple(r.shape)}")
    if r.shape[1] < 2:
        return torch.zeros_like(r)
    return (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + eps)


def grpo_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    kl_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level PPO-clip against the behaviour log-probs, mean over all valid tokens.

    All log-prob tensors are [B, T] (right-padded; ``mask`` marks real completion tokens);
    ``advantages`` is [B] (one per sample, broadcast over its tokens) or [B, T]. The ratio is
    taken against ``old_logprobs``, the log-probs of the distribution the tokens were actually
    drawn from, which is what makes stale rollouts usable (DESIGN.md §8). With ``kl_coef > 0``
    the k3 estimator exp(ref - new) - (ref - new) - 1 of KL(new || ref) is added per token.

    Returns the loss and float stats: clip_frac (tokens where the clipped branch is active),
    ratio_mean, ratio_max, kl (k3 to the reference, 0 without one), kl_behaviour (k3 to the
    behaviour policy: how far the trainer's policy has moved from the sampler's).
    """
    mask = mask.to(torch.bool)
    if new_logprobs.shape != old_logprobs.shape or new_logprobs.shape != mask.shape:
        raise ValueError("new_logprobs, old_logprobs and mask must have the same shape")
    adv = advantages.to(new_logprobs.dtype)
    if adv.ndim == 1:
        adv = adv[:, None]
    old = old_logprobs.to(new_logprobs.dtype)
    # Padded positions may hold anything: zero them before exp() so no inf * 0 = nan leaks in.
    log_ratio = torch.where(mask, new_logprobs - old, torch.zeros_like(new_logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if kl_coef > 0.0:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        d = torch.where(mask, ref_logprobs.to(new_logprobs.dtype) - new_logprobs, torch.zeros_like(kl))
        kl = torch.exp(d) - d - 1.0
        per_token = per_token + kl_coef * kl
    n = mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / n
    with torch.no_grad():
        m = mask.float()
        is_clipped = ((ratio > 1.0 + clip) & (adv > 0)) | ((ratio < 1.0 - clip) & (adv < 0))
        back = -log_ratio  # log(old / new)
        stats = {
            "clip_frac": float((is_clipped.float() * m).sum() / n),
            "ratio_mean": float((ratio * m).sum() / n),
            "ratio_max": float(torch.where(mask, ratio, torch.zeros_like(ratio)).max()) if mask.any() else 1.0,
            "kl": float((kl * m).sum() / n),
            "kl_behaviour": float(((torch.exp(back) - back - 1.0) * m).sum() / n),
            "tokens": int(n),
        }
    return loss, stats

