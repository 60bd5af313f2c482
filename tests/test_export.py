"""Adapter versions load the way people load adapters, and `swarm export` writes one as a directory
PEFT, transformers and llama.cpp load, with the same logits as the trainer's own policy.

A small real run, no swarm: a TrainerWorker in process (a node that never joins) publishes v0, v2
and v4 into a `swarm simulate`-shaped out dir; `swarm export` runs as a user runs it (subprocess).
Everything loads offline (HF_HUB_OFFLINE=1): the test fails rather than reach a model hub.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from test_trainer_restart import _trainer_in_process

from scenarios.scenario import NodeSpec, Scenario, Settings
from scenarios.simulate import prepare

pytestmark = pytest.mark.slow  # ~40 s of training, exports and model loads in subprocesses

IDS = [[1, 7, 5, 6, 42, 5, 6, 7]]  # "<bos>312>123", as the sort-digits task writes it
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory, offline):
    """out/: run.toml, keys/, nodes/trainer (v0, v2, v4, step events), nodes/roll (a copy of v0)."""
    from crypto.identity import Identity
    from nodes.metrics import StepEvent
    from swarm.manifest import load_manifest

    out = tmp_path_factory.mktemp("export") / "run"
    scenario = Scenario(Settings(name="export", steps=4, publish_every=2),
                        (NodeSpec("trainer", role="trainer", engine="transformers"),))
    run_toml, _ = prepare(scenario, out)
    signed, identity = load_manifest(run_toml), Identity.load(out / "keys" / "trainer.key")
    workdir = out / "nodes" / "trainer"
    workdir.mkdir(parents=True)
    worker = _trainer_in_process(workdir, signed, identity)
    samples, old = [((1, 7, 5, 6, 42), (5, 6, 7, 2)), ((1, 7, 5, 6, 42), (7, 6, 5, 2))], [[-1.0] * 4] * 2
    ids = torch.tensor([IDS[0]])
    logits = {0: worker.policy.logits(ids)}
    for v in (2, 4):
        for _ in range(2):
            worker.policy.train_step(samples, [[1.0, 0.0]], old)
        worker._publish()
        worker.metrics.write(StepEvent(step=v, version=v, reward_mean=0.5, lags={"0": 1}, samples=2, step_s=0.1,
                                       wait_s=0.0, loss=0.0))
        logits[v] = worker.policy.logits(ids)
    assert sorted(p.name for p in (workdir / "adapters").iterdir()) == ["v0", "v2", "v4"]
    roll = out / "nodes" / "roll" / "adapters"  # a rollout's copy, no step events: not preferred
    roll.mkdir(parents=True)
    shutil.copytree(workdir / "adapters" / "v0", roll / "v0")
    base = worker.base_dir
    del worker
    return {"out": out, "workdir": workdir, "logits": logits, "base": Path(base), "ids": ids}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_a_published_version_loads_with_auto_peft_and_names_its_base(run):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    v4 = run["workdir"] / "adapters" / "v4"
    config = json.loads((v4 / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(run["base"].resolve())  # the tiny base, absolute
    assert "revision" not in config  # PEFT would fetch that revision of the base
    text = (v4 / "adapter_config.json").read_text()
    assert text == json.dumps(config, sort_keys=True, indent=2)  # deterministic bytes (a digest covers them)

    auto = AutoPeftModelForCausalLM.from_pretrained(str(v4)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(run["base"]), dtype=torch.float32)
    manual = PeftModel.from_pretrained(base, str(v4)).eval()
    with torch.no_grad():
        got, want = auto(input_ids=run["ids"]).logits, manual(input_ids=run["ids"]).logits
    assert max_diff(got, want) < 1e-6
    assert max_diff(got, run["logits"][4]) < TOL
    assert max_diff(got, run["logits"][0]) > 1e-3, "training did not change the adapter: the test proves nothing"


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    dest = tmp_path_factory.mktemp("dest") / "v4-export"
    result = run_cli("export", str(run["out"]), "--out", str(dest), "--merge", "--gguf", timeout=180)
    assert result.returncode == 0, result.stderr
    return dest, result.stdout


def test_export_layout_and_output(run, exported):
    dest, stdout = exported
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "adapter", "adapter.gguf", "base", "base.gguf",
                                                    "merged", "provenance"]
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in
                                                                                   (dest / "adapter").iterdir()}
    src = run["workdir"] / "adapters" / "v4"  # the trainer's copy, preferred over the rollout's
    assert f"v4 from {src}" in stdout
    assert (dest / "adapter" / "adapter_model.safetensors").read_bytes() == (src / "adapter_model.safetensors").read_bytes()
    assert (dest / "provenance" / "version.dsse").read_bytes() == (src / "version.dsse").read_bytes()
    assert (dest / "provenance" / "adapter_config.json").read_bytes() == (src / "adapter_config.json").read_bytes()
    assert (dest / "provenance" / "manifest.toml").read_bytes() == (run["out"] / "run.toml").read_bytes()
    config = json.loads((dest / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(dest / "base")
    signed = json.loads((src / "adapter_config.json").read_text())
    assert {k: v for k, v in config.items() if k != "base_model_name_or_path"} == \
        {k: v for k, v in signed.items() if k != "base_model_name_or_path"}
    assert (dest / "base" / "model.safetensors").read_bytes() == (run["base"] / "model.safetensors").read_bytes()
    assert not (dest / "base" / "gguf").exists()
    # the bytes a trainer publishes for llama.cpp nodes
    assert (dest / "adapter.gguf").read_bytes() == (src / "gguf" / "adapter-f32.gguf").read_bytes()
    readme = (dest / "README.md").read_text()
    assert str(dest / "adapter") in readme and "absolute path" in readme
    assert "load with:" in stdout and "AutoPeftModelForCausalLM.from_pretrained" in stdout


def test_the_export_carries_its_provenance_and_audits_alone(exported):
    """The hook (swarm.provenance.export) adds the run's log and the inclusion proof; `swarm audit
    DIR` then verifies the exported adapter against its signed entry from DIR alone."""
    pytest.importorskip("swarm.provenance.export")
    dest, _ = exported
    assert {"inclusion.json", "entries.log", "manifest.toml", "version.dsse"} <= \
        {p.name for p in (dest / "provenance").iterdir()}
    result = run_cli("audit", str(dest))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VERIFIED" in result.stdout and str(dest / "adapter") in result.stdout


def test_exported_adapter_and_merged_model_reproduce_the_trainer(run, exported):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest, _ = exported
    auto = AutoPeftModelForCausalLM.from_pretrained(str(dest / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(dest / "merged")).eval()
    with torch.no_grad():
        a, m = auto(input_ids=run["ids"]).logits, merged(input_ids=run["ids"]).logits
    print(f"|auto-peft - trainer| {max_diff(a, run['logits'][4]):.2e}, |merged - trainer| "
          f"{max_diff(m, run['logits'][4]):.2e}")
    assert max_diff(a, run["logits"][4]) < TOL
    assert max_diff(m, run["logits"][4]) < TOL
    assert AutoTokenizer.from_pretrained(str(dest / "merged")).encode("31>") == \
        AutoTokenizer.from_pretrained(str(run["base"])).encode("31>")


def test_exported_gguf_loads_in_llama_cpp_with_the_lora(run, exported):
    import llama_cpp

    dest, _ = exported
    ids = IDS[0]

    def llama_logprobs(lora: Path | None) -> torch.Tensor:
        llm = llama_cpp.Llama(model_path=str(dest / "base.gguf"), lora_path=str(lora) if lora else None,
                              n_ctx=64, n_threads=1, logits_all=True, verbose=False,
                              type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)  # f32 KV, as our engine
        try:
            llm.eval(ids)
            return torch.log_softmax(torch.tensor(llm.scores[: len(ids)], dtype=torch.float32), -1)
        finally:
            llm.close()

    want = torch.log_softmax(run["logits"][4][0], -1)
    with_lora, bare = llama_logprobs(dest / "adapter.gguf"), llama_logprobs(None)
    print(f"llama.cpp |with lora - trainer| {max_diff(with_lora, want):.2e}, |bare - trainer| "
          f"{max_diff(bare, want):.2e}")
    assert max_diff(with_lora, want) < 1e-3
    assert max_diff(bare, want) > 1e-2


def test_export_from_a_workdir_picks_a_version_and_finds_the_base_without_a_manifest(run, tmp_path):
    """A workdir copied away from its run.toml: the base comes from the version's config (the tiny
    model's directory), the export still carries the base and loads."""
    from peft import AutoPeftModelForCausalLM

    lone = tmp_path / "lone"
    shutil.copytree(run["workdir"], lone)
    result = run_cli("export", str(lone), "--version", "2", "--out", str(tmp_path / "v2"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "v2").iterdir()) == ["README.md", "adapter", "base", "provenance"]
    assert not (tmp_path / "v2" / "provenance" / "manifest.toml").exists() or \
        (tmp_path / "v2" / "provenance" / "manifest.toml").read_bytes() == \
        (run["workdir"] / "provenance" / "manifest.toml").read_bytes()  # only the log's own copy
    auto = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "v2" / "adapter")).eval()
    with torch.no_grad():
        assert max_diff(auto(input_ids=run["ids"]).logits, run["logits"][2]) < TOL


def test_export_against_a_local_dir_or_a_hub_id_names_that_base(run, tmp_path):
    """--base DIR: the adapter names DIR's absolute path (not copied); --base ORG/NAME: the id as is
    (nothing fetched without --merge/--gguf)."""
    from peft import AutoPeftModelForCausalLM

    mine = tmp_path / "my-base"
    shutil.copytree(run["base"], mine, ignore=shutil.ignore_patterns("gguf"))
    result = run_cli("export", str(run["out"]), "--base", str(mine), "--out", str(tmp_path / "local"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["README.md", "adapter", "provenance"]
    config = json.loads((tmp_path / "local" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(mine.resolve())
    auto = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "local" / "adapter")).eval()
    with torch.no_grad():
        assert max_diff(auto(input_ids=run["ids"]).logits, run["logits"][4]) < TOL

    result = run_cli("export", str(run["out"]), "--base", "some-org/some-model", "--out", str(tmp_path / "hub"))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "hub" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "some-org/some-model"
    assert "Hugging Face" in (tmp_path / "hub" / "README.md").read_text()


@pytest.mark.parametrize("case", ["no_versions", "unknown_version", "bad_version", "not_a_dir", "out_not_empty",
                                  "hub_base_offline"])
def test_export_errors_are_one_line_exit_2(run, tmp_path, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    args, expect = {
        "no_versions": ([str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "no adapter versions"),
        "unknown_version": ([str(run["out"]), "--version", "3", "--out", str(tmp_path / "o")], "held: 0, 2, 4"),
        "bad_version": ([str(run["out"]), "--version", "newest", "--out", str(tmp_path / "o")], "'latest'"),
        "not_a_dir": ([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "is not a directory"),
        "out_not_empty": ([str(run["out"]), "--out", str(tmp_path / "full")], "not empty"),
        "hub_base_offline": ([str(run["out"]), "--base", "some-org/some-model", "--merge", "--out", str(tmp_path / "o")],
                             "cannot load base model some-org/some-model"),
    }[case]
    result = run_cli("export", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("swarm export: error: ") and expect in lines[0], lines[0]
    assert not (tmp_path / "o").exists()
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]
