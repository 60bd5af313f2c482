"""Real model families on both engines: Llama (BPE), Qwen2, Qwen3, Mistral and Gemma bases (built locally, bf16,
BPE or SentencePiece tokenizer; Gemma's sharded) are converted by llama.cpp's own converter, and
llama.cpp agrees with transformers on every log-prob, with and without a LoRA adapter (converted
the same way).

Found by a user: a Qwen2 base worked on the transformers engine, but a llama.cpp rollout failed
with "GGUF export supports Llama-architecture models only" (and then sat in the swarm doing nothing).
"""
from __future__ import annotations

import pytest
from conftest import assert_engines_agree, llama_cpp_tokenize, save_lora
from real_models import build


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral", "gemma"])
def test_a_family_base_and_its_lora_agree_across_engines(arch, tmp_path):
    from nodes.engines import make_engine
    from nodes.engines.gguf_export import read_gguf_meta
    from nodes.models.pinning import pinned_files

    base = build(arch, tmp_path / arch, shard_size="100KB" if arch == "gemma" else None)
    if arch == "gemma":  # a sharded checkpoint: every shard and the index are pinned, both engines load it
        assert {p.name for p in pinned_files(base)} >= {"model-00001-of-00002.safetensors",
                                                         "model-00002-of-00002.safetensors",
                                                         "model.safetensors.index.json", "tokenizer.model"}
    hf = make_engine("transformers", str(base), device="cpu")
    lc = make_engine("llamacpp", str(base), device="cpu")
    # llama.cpp's converter wrote it (our own writer does Llama only): Mistral runs as llama.cpp's "llama"
    assert read_gguf_meta(lc.gguf_path)["general.architecture"] == {"mistral": "llama"}.get(arch, arch)
    assert lc.gguf_path.with_name(lc.gguf_path.name + ".base-sha256").is_file()
    assert lc.tokenizer("sort the digits 31415")["input_ids"] == hf.tokenizer("sort the digits 31415")["input_ids"]
    text = "hello world, the quick brown fox 31415"  # llama.cpp's own tokenizer agrees too
    assert llama_cpp_tokenize(lc.gguf_path, text) == hf.tokenizer(text, add_special_tokens=False)["input_ids"]
    prompts = ["sort the digits 31415", "what is two plus two?", "hello world, the quick"]
    assert_engines_agree(hf, lc, prompts, save_lora(base, tmp_path / "lora", seed=0), arch)
    lc.close()


@pytest.mark.slow
def test_a_qwen2_swarm_trains_with_rollouts_on_both_engines(tmp_path, launched):
    """A run whose base is a Qwen2 checkpoint (a local directory, pinned whole): a trainer, a
    llama.cpp rollout and a transformers rollout. Both rollouts' chunks pass the trainer's honesty
    check (llama.cpp's log-probs reproduce under torch) and the run trains."""
    from conftest import node_events, wait_for

    from crypto.identity import Identity
    from nodes.models.pinning import base_digest
    from scenarios.processes import NodeProcess
    from swarm.manifest import parse_manifest, sign_manifest, write_manifest

    base = build("qwen2", tmp_path / "qwen2")
    owner = Identity.generate()
    owner.save(tmp_path / "owner.key")
    manifest = parse_manifest({
        "run": {"id": "qwen2", "owner_key_id": owner.key_id},
        "model": {"base": str(base), "sha256": base_digest(str(base))},
        "grpo": {"prompts_per_step": 4, "prompts_per_chunk": 2, "group_size": 2, "max_new_tokens": 8,
                 "steps": 4},
        "swarm": {"announce_period_s": 1.0, "trainer_keys": [owner.key_id]}})
    write_manifest(sign_manifest(manifest, owner), tmp_path / "run.toml")

    def start(name, key, role, engine, *peers):
        args = ["--run", str(tmp_path / "run.toml"), "--key", str(key), "--role", role, "--engine", engine,
                "--threads", "1", *(["--initial-peers", *peers] if peers else [])]
        launched.append(proc := NodeProcess(name, tmp_path / name, args).start())
        return proc

    trainer = start("trainer", tmp_path / "owner.key", "trainer", "transformers")
    maddr = trainer.wait_joined()
    rollouts = [start(engine, tmp_path / f"{engine}.key", "rollout", engine, maddr)
                for engine in ("llamacpp", "transformers")]
    nodes = [trainer, *rollouts]
    wait_for(lambda: any(e["kind"] == "done" for e in node_events(trainer, "done")), 300, "the run's 4 steps", nodes)
    accounting = node_events(trainer, "accounting")[-1]
    assert accounting["accepted"] >= 8 and "dishonest" not in accounting["rejected"], accounting
    for rollout in rollouts:
        engines = {e["engine"] for e in node_events(rollout, "chunk")}
        assert engines == {rollout.name}, engines
    sent = {r.name: sum(e["sent"] for e in node_events(r, "chunk")) for r in rollouts}
    assert all(n > 0 for n in sent.values()), sent
