"""Rollouts on quantized GGUF copies of the base: llama.cpp's own quantizer, the probe that proves a
GGUF is the manifest's base, and the honesty check's per-format tolerance (honest quantized chunks
pass, forged ones claiming the loosest format do not)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import make_manifest, run_cli, save_lora

from nodes.engines import SamplingParams, make_engine
from nodes.engines import gguf_export as G
from nodes.engines.formats import gguf_format
from nodes.engines.quantize import FORMATS, quantize_gguf
from nodes.models import BaseError
from nodes.models.probe import check_probe
from nodes.models.tiny import tiny_model_dir
from nodes.trainer.intake import check_honesty
from swarm.chunk import TrajectoryChunk, TrajectoryGroup, decode_chunk, encode_chunk
from swarm.rejections import ChunkRejected


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, Path]:
    """The tiny base in every format, plus the tiny model of another seed in Q8_0."""
    out = tmp_path_factory.mktemp("ggufs")
    f32 = G.ensure_base_gguf(tiny_model_dir(0))
    made = {fmt: f32 if fmt == "f32" else quantize_gguf(f32, out / f"tiny-{fmt}.gguf", fmt) for fmt in FORMATS}
    made["other"] = quantize_gguf(G.ensure_base_gguf(tiny_model_dir(1)), out / "other-q8_0.gguf", "q8_0")
    return made


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    from nodes.runconfig import base_probe, build_manifest
    from swarm.manifest import RunSection

    return base_probe(build_manifest(RunSection(id="probe", owner_key_id="0" * 64)))


def test_quantized_copies_are_smaller_and_say_their_format(ggufs):
    for fmt in FORMATS:
        assert gguf_format(ggufs[fmt]) == fmt
    assert ggufs["q4_k_m"].stat().st_size < ggufs["q8_0"].stat().st_size < ggufs["f16"].stat().st_size \
        < ggufs["f32"].stat().st_size


def test_the_probe_accepts_the_base_in_every_format_and_refuses_another_model(ggufs, probe):
    for fmt in FORMATS:
        engine = make_engine("llamacpp", str(ggufs[fmt]), threads=1, tokenizer=str(tiny_model_dir(0)))
        mean, worst = check_probe(engine, probe, fmt, fmt)
        assert mean < 0.05, (fmt, mean, worst)
        engine.close()
    other = make_engine("llamacpp", str(ggufs["other"]), threads=1, tokenizer=str(tiny_model_dir(1)))
    with pytest.raises(BaseError, match=r"\(q8_0\) is not the manifest's base: on the probe"):
        check_probe(other, probe, "q8_0", "other")
    with pytest.raises(BaseError, match="no model.probe"):
        check_probe(other, {}, "q8_0", "other")


def sampled_chunk(engine, fmt: str, seed: int) -> TrajectoryChunk:
    from nodes.tasks import make_task

    prompts = [p.text for p, _ in zip(make_task("sort-digits").prompts(seed), range(4))]
    groups = engine.generate(prompts, 8, SamplingParams(max_new_tokens=7), seed=seed)
    return TrajectoryChunk(
        run_id="r", chunk_id="0" * 32, producer_key_id="0" * 64, policy_version=1, task="sort-digits",
        sampling={"temperature": 1.0, "max_new_tokens": 7, "weights": fmt}, created_at=0.0,
        groups=tuple(TrajectoryGroup(g[0].prompt_ids, tuple(s.completion_ids for s in g),
                                     tuple(s.logprobs for s in g)) for g in groups))


def recompute(policy, chunk: TrajectoryChunk) -> list[list[float]]:
    rows = [(g.prompt_ids, c) for g in chunk.groups for c in g.completions]
    return policy.score([p for p, _ in rows], [c for _, c in rows])


def test_honest_q4_chunks_pass_with_their_tolerance_and_forgeries_do_not(ggufs, tmp_path):
    lora = save_lora(tiny_model_dir(0), tmp_path / "lora", seed=3)
    policy = make_engine("transformers", str(tiny_model_dir(0)), threads=1)  # the trainer's f32 policy
    policy.set_adapter(1, lora)
    rollout = make_engine("llamacpp", str(ggufs["q4_k_m"]), threads=1, tokenizer=str(tiny_model_dir(0)))
    rollout.set_adapter(1, lora)
    honest = [sampled_chunk(rollout, "q4_k_m", seed) for seed in range(3)]
    for chunk in honest:
        check_honesty(chunk, recompute(policy, chunk))
    # The same samples claimed as f32 are judged by f32's tolerance: quantization shows.
    claimed_f32 = [dataclasses.replace(c, sampling={**c.sampling, "weights": "f32"}) for c in honest]
    assert sum(_rejected(c, recompute(policy, c)) for c in claimed_f32) >= 1
    # Forged log-probs claiming the loosest format: raised by 0.3, or those of another version.
    for chunk in honest:
        raised = tuple(dataclasses.replace(g, logprobs=tuple(tuple(min(0.0, v + 0.3) for v in lp) for lp in g.logprobs))
                       for g in chunk.groups)
        assert _rejected(dataclasses.replace(chunk, groups=raised), recompute(policy, chunk))
    rollout.set_adapter(None, None)
    stale = sampled_chunk(rollout, "q4_k_m", 7)  # sampled without the adapter, claimed as version 1
    assert _rejected(stale, recompute(policy, stale))


def _rejected(chunk, recomputed) -> bool:
    try:
        check_honesty(chunk, recomputed)
    except ChunkRejected as e:
        assert e.reason.value == "dishonest" and "(" in str(e)
        return True
    return False


def test_the_weights_field_is_checked_on_the_wire():
    from test_chunk import LIMITS, make_chunk

    chunk = make_chunk(sampling={"temperature": 1.0, "max_new_tokens": 7, "weights": "q8_0"})
    assert decode_chunk(encode_chunk(chunk), limits=LIMITS).sampling["weights"] == "q8_0"
    assert "weights" not in decode_chunk(encode_chunk(make_chunk()), limits=LIMITS).sampling  # absent: f32
    with pytest.raises(ChunkRejected, match="sampling.weights"):
        make_chunk(sampling={"temperature": 1.0, "max_new_tokens": 7, "weights": "q2_k"})


def test_a_malformed_probe_is_refused_by_the_manifest(tmp_path, owner):
    from swarm.manifest import ManifestError, parse_manifest

    run = make_manifest(tmp_path, owner[1])
    import tomllib

    doc = tomllib.loads(run.read_text())
    doc.pop("signature")
    good = doc["model"]["probe"]
    assert len(good["prompt_ids"]) == 8 and all(v <= 0 for lp in good["logprobs"] for v in lp)
    for bad in ({**good, "logprobs": good["logprobs"][:-1]}, {**good, "extra": []},
                {**good, "logprobs": [[0.5] * len(c) for c in good["completion_ids"]]},
                {**good, "prompt_ids": [[-1]] * 8}):
        with pytest.raises(ManifestError, match="model.probe"):
            parse_manifest({**doc, "model": {**doc["model"], "probe": bad}})


def test_base_gguf_cli_errors_are_one_line(tmp_path, owner):
    run = make_manifest(tmp_path, owner[1])
    key = tmp_path / "n.key"
    cases = [
        (["--base-gguf", str(tmp_path / "missing.gguf")], "is not a file"),
        (["--base-gguf", str(run), "--role", "trainer"], "is for rollout nodes"),
        (["--base-gguf", str(run), "--engine", "transformers"], "runs on llama.cpp"),
    ]
    for extra, message in cases:
        result = run_cli("node", "--run", str(run), "--key", str(key), "--workdir", str(tmp_path / "w"), *extra)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
