"""The signed run manifest: `swarm init` output verifies; any edit or schema error is named."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import make_manifest

from swarm.manifest import (
    GrpoSection,
    LoraSection,
    ManifestError,
    ModelSection,
    RunManifest,
    RunSection,
    SwarmSection,
    SyncSection,
    TaskSection,
    field_docs,
    load_manifest,
    parse_manifest,
)

ROOT = Path(__file__).resolve().parents[1]


def test_init_writes_a_manifest_that_verifies(tmp_path, owner):
    identity, key = owner
    run = make_manifest(tmp_path, key, "--mode", "sequential", "--trainer-key", "b" * 64)
    signed = load_manifest(run)
    m = signed.manifest
    assert (m.sync.mode, m.swarm.trainer_slots, m.swarm.trainer_keys) == ("sequential", 1, ("b" * 64,))
    assert m.run.owner_key_id == identity.key_id and len(signed.digest) == 64
    assert signed.namespace.startswith("echo-swarm/test/")
    assert len(m.model.sha256) == 64  # the embedded base model's weights digest


def test_an_edited_manifest_is_refused(tmp_path, owner):
    run = make_manifest(tmp_path, owner[1])
    run.write_text(run.read_text().replace("staleness = 2", "staleness = 9"))
    with pytest.raises(ManifestError, match="signature does not verify"):
        load_manifest(run)


def test_an_unsigned_manifest_is_refused(tmp_path, owner):
    run = make_manifest(tmp_path, owner[1])
    run.write_text(run.read_text().split("[signature]")[0])
    with pytest.raises(ManifestError, match="not signed"):
        load_manifest(run)


def test_a_manifest_signed_by_another_key_is_refused(tmp_path, owner):
    from crypto.identity import Identity

    run = make_manifest(tmp_path, owner[1])
    other = Identity.generate()
    text = run.read_text()
    text = text.replace(text.split('public_key = "')[1].split('"')[0], other.public_key.hex())
    run.write_text(text)
    with pytest.raises(ManifestError, match="owner_key_id"):
        load_manifest(run)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "sync": {"mode": "eventually"}}, "sync.mode"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "sync": {"staleness": "two"}}, "sync.staleness"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "grpo": {"group_size": 1}}, "grpo.group_size"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "swarm": {"trainer_keys": ["nope"]}}, "swarm.trainer_keys"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "swarm": {"slots": 1}}, "swarm.slots"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "swarm": {"open_training": "yes"}}, "swarm.open_training"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "swarm": {"open_training": True, "trainer_keys": ["b" * 64]}},
         "swarm.open_training and swarm.trainer_keys exclude each other"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "grpo": {"clip": 1.5}}, "grpo.clip"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "grpo": {"kl_coef": -0.1}}, "grpo.kl_coef"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "grpo": {"grad_clip": 0}}, "grpo.grad_clip"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "grpo": {"prompts_per_chunk": 33}}, "grpo.prompts_per_chunk"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "grpo": {"max_prompt_tokens": 0}}, "grpo.max_prompt_tokens"),
        ({"run": {"id": "x", "owner_key_id": "short"}}, "run.owner_key_id"),
        ({"run": {"id": "bad id!", "owner_key_id": "a" * 64}}, "run.id"),
        ({"run": {"id": "x", "owner_key_id": "a" * 64}, "extra": {}}, "extra"),
        ({}, "[run]"),
    ],
)
def test_schema_errors_name_the_field(body, field):
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(body)


def test_every_shipped_toml_parses():
    import tomllib

    shipped = sorted((ROOT / "scenarios").glob("*.toml"))
    for path in shipped:
        tomllib.loads(path.read_text())  # scenario files; their schema is tested with the simulator


SECTIONS = (RunSection, ModelSection, TaskSection, LoraSection, GrpoSection, SyncSection, SwarmSection)
KEY = "a" * 64
SHA = "b" * 64


@pytest.mark.parametrize("slots", [0, 2, 3])
def test_more_than_one_trainer_slot_is_refused_with_the_reason(slots):
    with pytest.raises(ManifestError) as e:
        parse_manifest({"run": {"id": "x", "owner_key_id": KEY}, "swarm": {"trainer_slots": slots}})
    assert str(e.value) == ("swarm.trainer_slots must be 1: trainers cannot yet train together "
                            "(two would publish competing adapter chains)")


def test_chunk_limits_have_their_defaults_and_bounds():
    m = parse_manifest({"run": {"id": "x", "owner_key_id": KEY}})
    assert (m.grpo.prompts_per_chunk, m.grpo.max_prompt_tokens) == (4, 512)
    edge = parse_manifest({"run": {"id": "x", "owner_key_id": KEY}, "grpo": {"prompts_per_step": 4}})
    assert edge.grpo.prompts_per_chunk == edge.grpo.prompts_per_step  # at most a step's groups
    with pytest.raises(ManifestError, match="grpo.prompts_per_chunk"):
        parse_manifest({"run": {"id": "x", "owner_key_id": KEY}, "grpo": {"prompts_per_step": 3}})


@pytest.mark.parametrize("section", SECTIONS, ids=lambda c: c.__name__)
def test_every_setting_is_documented_where_it_is_declared(section):
    docs = field_docs(section)
    assert list(docs) == [f.name for f in dataclasses.fields(section)]
    assert all(len(doc) > 5 for doc in docs.values())


# -- nodes.runconfig.build_manifest: the one builder of swarm init, simulate and baseline ------------
@pytest.fixture
def digests(monkeypatch):
    """base_digest without building the tiny model: records the bases it was asked for."""
    from nodes import runconfig

    asked = []
    monkeypatch.setattr(runconfig, "base_digest", lambda base: asked.append(base) or SHA)
    return asked


def test_build_manifest_fills_in_the_section_defaults_and_pins_the_base(digests):
    from nodes.runconfig import build_manifest

    m = build_manifest(RunSection(id="x", owner_key_id=KEY))
    assert m == RunManifest(run=RunSection(id="x", owner_key_id=KEY), model=ModelSection(sha256=SHA, probe=m.model.probe))
    assert digests == ["tiny"]
    assert len(m.model.probe["prompt_ids"]) == 8  # the base's own samples, for GGUF rollouts (test_quantized)
    pinned = build_manifest(RunSection(id="x", owner_key_id=KEY), model=ModelSection(base="tiny", sha256="c" * 64))
    assert pinned.model.sha256 == "c" * 64 and digests == ["tiny"]  # a given digest is kept


def test_build_manifest_types_its_sections_like_a_loaded_file(digests):
    from nodes.runconfig import build_manifest

    m = build_manifest(RunSection(id="x", owner_key_id=KEY, seed=3),
                       sync=SyncSection(mode="sequential", staleness=0, publish_every=2),
                       swarm=SwarmSection(trainer_keys=["b" * 64], announce_period_s=1),
                       task=TaskSection(options={"max_digits": 4}))
    assert (m.run.seed, m.sync.mode, m.sync.publish_every) == (3, "sequential", 2)
    assert m.swarm.trainer_keys == ("b" * 64,) and m.swarm.announce_period_s == 1.0
    assert m.task.options == {"max_digits": 4}


@pytest.mark.parametrize("sections, message", [
    ({"swarm": SwarmSection(trainer_slots=2)}, "swarm.trainer_slots must be 1: trainers cannot yet train together"),
    ({"sync": SyncSection(mode="eventually")}, "sync.mode must be one of"),
    ({"task": TaskSection(name="nope")}, "task: unknown task 'nope'"),
    ({"task": TaskSection(options={"max_digits": 99})}, "task: sort-digits needs"),
    ({"task": TaskSection(options={"colour": "red"})}, "task.options: task 'sort-digits' does not take option 'colour'"),
])
def test_build_manifest_refuses_before_touching_the_base(digests, sections, message):
    from nodes.runconfig import build_manifest

    with pytest.raises(ManifestError) as e:
        build_manifest(RunSection(id="x", owner_key_id=KEY), **sections)
    assert message in str(e.value) and digests == []


def test_swarm_init_defaults_are_the_manifests(digests):
    from nodes.cli import build_parser
    from nodes.commands.init import manifest_of

    args = build_parser().parse_args(["init", "--out", "-", "--owner-key", "-", "--run-id", "x",
                                      "--task-option", "min_digits=2"])
    m = manifest_of(args, KEY)
    assert m.run == RunSection(id="x", owner_key_id=KEY) and m.model.base == ModelSection.base
    assert (m.sync, m.grpo, m.lora) == (SyncSection(), GrpoSection(), LoraSection())
    assert m.swarm == SwarmSection(trainer_keys=(KEY,))  # only the owner may train unless told otherwise
    assert m.task == TaskSection(options={"min_digits": 2}) and m.model.sha256 == SHA


def test_swarm_init_sizes_a_run_for_real_work(digests):
    """GRPO and LoRA settings from the command line, each flag declared by its manifest field."""
    from nodes.cli import build_parser
    from nodes.commands.init import manifest_of

    args = build_parser().parse_args([
        "init", "--out", "-", "--owner-key", "-", "--run-id", "x", "--max-new-tokens", "256", "--group-size", "16",
        "--prompts-per-step", "64", "--prompts-per-chunk", "8", "--max-prompt-tokens", "1024", "--temperature", "0.8",
        "--lr", "1e-5", "--clip", "0.28", "--kl-coef", "0.04", "--grad-clip", "0.5", "--lora-r", "32",
        "--lora-alpha", "64", "--lora-targets", "q_proj, v_proj"])
    m = manifest_of(args, KEY)
    assert m.grpo == GrpoSection(prompts_per_step=64, group_size=16, max_new_tokens=256, prompts_per_chunk=8,
                                 max_prompt_tokens=1024, temperature=0.8, lr=1e-5, clip=0.28, kl_coef=0.04,
                                 grad_clip=0.5)
    assert m.lora == LoraSection(r=32, alpha=64, targets=("q_proj", "v_proj"))


def test_swarm_init_help_is_the_manifests_documentation():
    from nodes.cli import build_parser

    init = build_parser()._subparsers._group_actions[0].choices["init"]
    helps = {a.dest: a.help % {"default": a.default} if a.help else "" for a in init._actions}
    assert helps["mode"] == f"{field_docs(SyncSection)['mode']} (default: async)"
    assert helps["staleness"].startswith("S: in async mode") and helps["announce_period"].endswith("(default: 5.0)")
    mode = next(a for a in init._actions if a.dest == "mode")
    assert tuple(mode.choices) == ("sequential", "async")


# -- who may train: authorised keys, or everyone only by an explicit, loud opt-in ----------------------
def test_training_is_authorised_by_the_manifest_not_claimed():
    listed = parse_manifest({"run": {"id": "x", "owner_key_id": KEY}, "swarm": {"trainer_keys": [SHA]}})
    assert listed.trainer_allowed(SHA) and not listed.trainer_allowed("c" * 64)
    nobody = parse_manifest({"run": {"id": "x", "owner_key_id": KEY}})  # fail-safe: nobody, not everybody
    assert nobody.swarm.open_training is False and not nobody.trainer_allowed(KEY)
    anyone = parse_manifest({"run": {"id": "x", "owner_key_id": KEY}, "swarm": {"open_training": True}})
    assert anyone.trainer_allowed("c" * 64) and anyone.trainer_allowed(KEY)


def _init_args(*flags):
    from nodes.cli import build_parser

    return build_parser().parse_args(["init", "--out", "-", "--owner-key", "-", "--run-id", "x", *flags])


def test_swarm_init_authorises_the_owner_the_listed_keys_or_everyone_only_when_asked(digests):
    from nodes.commands.init import manifest_of

    assert manifest_of(_init_args(), KEY).swarm.trainer_keys == (KEY,)
    listed = manifest_of(_init_args("--trainer-key", SHA, "--trainer-key", KEY), KEY).swarm
    assert (listed.trainer_keys, listed.open_training) == ((SHA, KEY), False)  # as given: the owner only if listed
    opened = manifest_of(_init_args("--open-training-UNSAFE"), KEY).swarm
    assert (opened.trainer_keys, opened.open_training) == ((), True)
    with pytest.raises(ManifestError, match="exclude each other"):
        manifest_of(_init_args("--open-training-UNSAFE", "--trainer-key", SHA), KEY)


def test_swarm_init_writes_the_owner_as_the_only_trainer(tmp_path, owner):
    identity, key = owner
    m = load_manifest(make_manifest(tmp_path, key)).manifest
    assert (m.swarm.trainer_keys, m.swarm.open_training) == ((identity.key_id,), False)
    assert m.trainer_allowed(identity.key_id) and not m.trainer_allowed("c" * 64)


def test_a_manifest_signed_before_open_training_existed_is_refused_with_the_fix(tmp_path, owner):
    """Its signature covers a body without the field, which now reads as `open_training = false`."""
    import base64

    from crypto.canonical import canonical_json
    from crypto.envelope import pae
    from swarm.manifest import MANIFEST_TYPE, to_toml

    identity, _ = owner
    doc = parse_manifest({"run": {"id": "old", "owner_key_id": identity.key_id}}).to_dict()
    del doc["swarm"]["open_training"]
    doc["signature"] = {"public_key": identity.public_key.hex(),
                        "sig": base64.b64encode(identity.sign(pae(MANIFEST_TYPE, canonical_json(doc)))).decode()}
    (tmp_path / "old.toml").write_text(to_toml(doc))
    with pytest.raises(ManifestError, match="predates swarm.open_training.*re-create it with `swarm init`"):
        load_manifest(tmp_path / "old.toml")


def test_a_simulated_run_authorises_exactly_its_trainer_and_auto_nodes(digests, tmp_path):
    """`swarm simulate` runs nodes with their own keys: the manifest it signs names those of its
    role = "trainer" and "auto" nodes (in that order), never a "rollout" node's or the owner's."""
    from crypto.identity import Identity
    from scenarios.scenario import parse_scenario
    from scenarios.simulate import prepare

    scenario = parse_scenario({"scenario": {"name": "t"}, "node": [
        {"name": "a", "role": "auto"}, {"name": "r", "role": "rollout"}, {"name": "t", "role": "trainer"}]})
    run, _ = prepare(scenario, tmp_path / "out")
    m = load_manifest(run).manifest
    key = {n: Identity.load(tmp_path / "out" / "keys" / f"{n}.key").key_id for n in ("a", "r", "t", "owner")}
    assert (m.swarm.trainer_keys, m.swarm.open_training) == ((key["t"], key["a"]), False)
