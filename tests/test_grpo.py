"""GRPO math (pure functions), the LoRA policy, and adapter versions on disk — real torch and peft."""
from __future__ import annotations

import math

import pytest
import torch

from nodes.trainer.grpo import group_advantages, grpo_loss

# -- pure functions -----------------------------------------------------------------------------


def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    adv = group_advantages(r)
    std = math.sqrt((0.75**2 + 3 * 0.25**2) / 3)  # sample (n - 1) std of [1, 0, 0, 0] = 0.5
    assert adv[0].tolist() == pytest.approx([0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3, rel=1e-6)
    assert adv[1].tolist() == [0.0] * 4  # all equal: no signal, no gradient
    assert float(adv[0].sum()) == pytest.approx(0.0, abs=1e-6)


def test_group_advantages_shapes():
    assert group_advantages(torch.ones(3, 1)).tolist() == [[0.0], [0.0], [0.0]]
    with pytest.raises(ValueError):
        group_advantages(torch.ones(4))


def _loss(new, old, adv, mask=None, **kw):
    new, old = torch.tensor(new, requires_grad=True), torch.tensor(old)
    mask = torch.ones_like(old, dtype=torch.bool) if mask is None else torch.tensor(mask)
    loss, stats = grpo_loss(new, old, torch.tensor(adv), mask, **kw)
    loss.backward()
    return loss.detach(), stats, new.grad


def close(t: torch.Tensor, expected) -> bool:
    return torch.allclose(t, torch.tensor(expected, dtype=t.dtype), atol=1e-6)


def test_on_policy_loss_is_the_policy_gradient():
    # ratio = 1: loss = -mean(A), gradient d/dnew = -A / n_tokens per token
    loss, stats, grad = _loss([[-1.0, -2.0], [-0.5, -0.1]], [[-1.0, -2.0], [-0.5, -0.1]], [2.0, -1.0])
    assert float(loss) == pytest.approx(-(2 + 2 - 1 - 1) / 4)
    assert close(grad, [[-0.5, -0.5], [0.25, 0.25]])
    assert stats["clip_frac"] == 0.0 and stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["kl_behaviour"] == pytest.approx(0.0, abs=1e-7)


def test_clipping_stops_the_gradient_only_in_the_right_direction():
    up = math.log(1.5)  # ratio 1.5 > 1.2
    # positive advantage, ratio above 1 + clip: clipped, no gradient
    _, stats, grad = _loss([[up]], [[0.0]], [1.0])
    assert close(grad, [[0.0]]) and stats["clip_frac"] == 1.0
    # negative advantage, ratio above 1 + clip: min picks the unclipped branch, gradient flows
    loss, stats, grad = _loss([[up]], [[0.0]], [-1.0])
    assert float(loss) == pytest.approx(1.5) and close(grad, [[1.5]])
    assert stats["clip_frac"] == 0.0
    # negative advantage, ratio below 1 - clip: clipped
    _, stats, grad = _loss([[math.log(0.5)]], [[0.0]], [-1.0])
    assert close(grad, [[0.0]]) and stats["clip_frac"] == 1.0


def test_padding_is_ignored_even_when_it_holds_garbage():
    loss, stats, grad = _loss([[-1.0, 50.0]], [[-1.0, -100.0]], [1.0], mask=[[True, False]])
    assert math.isfinite(float(loss)) and float(loss) == pytest.approx(-1.0)
    assert close(grad, [[-1.0, 0.0]])
    assert stats["tokens"] == 1


def test_token_mean_across_the_batch():
    # 3 valid tokens in total: the one-token sample weighs 1/3, not 1/2
    _, _, grad = _loss([[-1.0, -1.0], [-1.0, 0.0]], [[-1.0, -1.0], [-1.0, 0.0]], [1.0, 1.0],
                       mask=[[True, True], [True, False]])
    assert close(grad, [[-1 / 3, -1 / 3], [-1 / 3, 0.0]])


def test_k3_kl_to_reference():
    new, ref = [[-1.0, -2.0]], [[-1.5, -1.0]]
    loss, stats, _ = _loss(new, new, [0.0], kl_coef=0.5, ref_logprobs=torch.tensor(ref))
    k3 = [math.exp(r - n) - (r - n) - 1 for r, n in zip(ref[0], new[0])]
    assert stats["kl"] == pytest.approx(sum(k3) / 2, rel=1e-6)
    assert float(loss) == pytest.approx(0.5 * sum(k3) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        _loss(new, new, [0.0], kl_coef=0.5)


# -- the policy and adapter versions (real model, real peft) ----------------------------------

@pytest.fixture(scope="module")
def base_dir():
    from nodes.models.tiny import tiny_model_dir

    return tiny_model_dir(0)


@pytest.fixture(scope="module")
def batch(base_dir):
    """A small deterministic batch: 4 prompts x 4 samples from the base model itself."""
    from nodes.engines import SamplingParams, make_engine

    engine = make_engine("transformers", str(base_dir))
    groups = engine.generate(["3141>", "271>", "99120>", "5550>"], 4, SamplingParams(1.0, 7), seed=7)
    rewards = [[float(i % 2 == 0), float(i % 3 == 0), 0.0, 1.0] for i in range(4)]
    flat = [s for g in groups for s in g]
    return flat, rewards


def _pairs(flat):
    return [(s.prompt_ids, s.completion_ids) for s in flat]


def test_policy_matches_engine_logprobs_and_trains_only_lora(base_dir, batch):
    from nodes.trainer.policy import Policy

    flat, rewards = batch
    policy = Policy(base_dir, seed=0)
    assert all("lora_" in n for n, _ in policy.named_trainable)
    assert sum(p.numel() for _, p in policy.named_trainable) == 46 * 1024  # r=8 on 7 modules x 2 layers
    with torch.no_grad():
        lp, mask = policy.token_logprobs(_pairs(flat))
    for i, s in enumerate(flat):  # teacher forcing reproduces the sampler's own log-probs
        assert int(mask[i].sum()) == len(s.completion_ids)
        assert lp[i, : len(s.logprobs)].tolist() == pytest.approx(s.logprobs, abs=1e-4)
    frozen = {n: p.clone() for n, p in policy.model.named_parameters() if not p.requires_grad}
    stats = policy.train_step(_pairs(flat), rewards, [s.logprobs for s in flat])
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-4) and stats["grad_norm"] > 0
    assert all(torch.equal(p, frozen[n]) for n, p in policy.model.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        lp2, _ = policy.token_logprobs(_pairs(flat))
    assert not torch.allclose(lp, lp2)


def test_policy_is_deterministic_and_checkpoints_round_trip(base_dir, batch):
    from safetensors.torch import load, save

    from nodes.trainer.policy import Policy

    flat, rewards = batch
    args = (_pairs(flat), rewards, [s.logprobs for s in flat])
    a, b = Policy(base_dir, seed=3), Policy(base_dir, seed=3)
    a.train_step(*args)
    state = load(save(a.state_dict()))  # storable as safetensors: no pickle anywhere
    b.load_state_dict(state)
    assert b.step == 1
    sa, sb = a.train_step(*args), b.train_step(*args)
    assert sa == sb
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = Policy(base_dir, seed=4)
    assert not torch.equal(c.adapter_tensors()[next(iter(c.adapter_tensors()))],
                           Policy(base_dir, seed=3).adapter_tensors()[next(iter(c.adapter_tensors()))])


def test_saved_version_loads_with_peft_and_reproduces_logits(base_dir, batch, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from nodes.models.pinning import file_sha256
    from nodes.trainer.policy import Policy
    from swarm.adapters.files import AdapterError, load_version, save_version

    flat, rewards = batch
    policy = Policy(base_dir, seed=0)
    for _ in range(2):
        policy.train_step(_pairs(flat), rewards, [s.logprobs for s in flat])
    digest = save_version(policy, tmp_path / "v2", 2)
    assert digest == file_sha256(tmp_path / "v2" / "adapter_model.safetensors")
    assert sorted(p.name for p in (tmp_path / "v2").iterdir()) == ["adapter_config.json",
                                                                  "adapter_model.safetensors"]
    with pytest.raises(AdapterError):
        save_version(policy, tmp_path / "v2", 2)  # versions are immutable
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "v2")).eval()
    ids = torch.tensor([list(s.prompt_ids) + list(s.completion_ids) for s in flat[:1]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, policy.logits(ids), atol=1e-5)
    tensors = load_version(tmp_path / "v2", expected_sha256=digest)
    fresh = Policy(base_dir, seed=9)
    fresh.set_adapter_tensors(tensors)
    assert torch.allclose(fresh.logits(ids), policy.logits(ids), atol=1e-6)
    with pytest.raises(AdapterError):
        load_version(tmp_path / "v2", expected_sha256="0" * 64)


def test_adapter_delta_is_exact(base_dir, batch):
    from nodes.trainer.policy import Policy
    from swarm.adapters.delta import (
        AdapterError,
        adapter_bytes,
        adapter_delta,
        apply_delta,
        decode_delta,
        encode_delta,
        sha256_hex,
    )

    flat, rewards = batch
    policy = Policy(base_dir, seed=0)
    parent = policy.adapter_tensors()
    policy.train_step(_pairs(flat), rewards, [s.logprobs for s in flat])
    child = policy.adapter_tensors()
    delta = adapter_delta(parent, child)
    rebuilt = apply_delta(parent, delta)
    assert adapter_bytes(rebuilt) == adapter_bytes(child)  # bit-exact, so the digest verifies
    p_sha, c_sha = sha256_hex(adapter_bytes(parent)), sha256_hex(adapter_bytes(child))
    data = encode_delta(delta, p_sha, c_sha)
    assert sha256_hex(adapter_bytes(decode_delta(data, parent, p_sha))) == c_sha
    with pytest.raises(AdapterError):
        decode_delta(data, child, c_sha)  # wrong parent named
    with pytest.raises(AdapterError):
        decode_delta(data, child, p_sha)  # right name, wrong bits: the child digest fails
    with pytest.raises(AdapterError):
        decode_delta(b"garbage" * 3, parent, p_sha)
    # added and removed tensors travel too
    extra = dict(child, extra=torch.ones(3))
    del extra[next(iter(child))]
    assert adapter_bytes(apply_delta(parent, adapter_delta(parent, extra))) == adapter_bytes(extra)


def test_logprobs_in_small_chunks_equal_the_full_logits(base_dir, batch):
    """Log-probs are computed a few positions at a time (never [batch, length, vocab] at once):
    the same numbers as from the model's full logits, with and without gradients."""
    import dataclasses

    from nodes.trainer.policy import Policy, PolicyConfig

    flat, _ = batch
    pairs = _pairs(flat)
    policy = Policy(base_dir, config=dataclasses.replace(PolicyConfig(), logit_elements=3 * 49), seed=0)  # 3 rows
    with torch.no_grad():
        chunked, _ = policy.token_logprobs(pairs)
        for i, (p, c) in enumerate(pairs):
            logits = policy.model(input_ids=torch.tensor([list(p) + list(c)])).logits[0]
            full = torch.log_softmax(logits.float(), -1)[torch.arange(len(p) - 1, len(p) + len(c) - 1),
                                                          torch.tensor(list(c))]
            assert torch.allclose(chunked[i, : len(c)], full, atol=1e-5)
    with_grad, _ = policy.token_logprobs(pairs)
    assert torch.allclose(with_grad.detach(), chunked, atol=1e-6) and with_grad.requires_grad


def test_micro_batches_accumulate_to_the_whole_batch_step(base_dir, batch):
    """A step in micro-batches (gradient accumulation) takes the gradient of one whole-batch step."""
    import dataclasses

    from nodes.trainer.policy import Policy, PolicyConfig

    flat, rewards = batch
    old = [s.logprobs for s in flat]

    def gradients(policy) -> tuple[dict, list[torch.Tensor]]:
        seen: list[torch.Tensor] = []
        step = policy.optimizer.step
        policy.optimizer.step = lambda: seen.extend(p.grad.clone() for _, p in policy.named_trainable) or step()
        return policy.train_step(_pairs(flat), rewards, old), seen

    a, whole = gradients(Policy(base_dir, seed=0))
    b, split = gradients(Policy(base_dir, config=dataclasses.replace(PolicyConfig(), micro_batch_tokens=24), seed=0))
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert a["tokens"] == b["tokens"] and a["clip_frac"] == pytest.approx(b["clip_frac"], abs=1e-6)
    assert len(whole) == len(split) > 0
    assert all(torch.allclose(g, h, atol=1e-7, rtol=1e-4) for g, h in zip(whole, split))
