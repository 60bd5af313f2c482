"""The signed run manifest: `swarm init` output verifies; any edit or schema error is named."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_manifest

from swarm.manifest import ManifestError, load_manifest, parse_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_init_writes_a_manifest_that_verifies(tmp_path, owner):
    identity, key = owner
    run = make_manifest(tmp_path, key, "--mode", "sequential", "--trainer-slots", "2", "--trainer-key", "b" * 64)
    signed = load_manifest(run)
    m = signed.manifest
    assert (m.sync.mode, m.swarm.trainer_slots, m.swarm.trainer_keys) == ("sequential", 2, ("b" * 64,))
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
