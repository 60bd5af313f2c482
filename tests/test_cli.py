"""The `swarm` CLI as a user meets it: fast help, one-line errors that name the fix."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, make_manifest, run_cli


def test_help_does_not_import_heavy_dependencies():
    code = ("import sys; from nodes.cli import build_parser; build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'hivemind', 'transformers') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    result = run_cli("--help")
    assert result.returncode == 0 and "keygen" in result.stdout and "node" in result.stdout


def test_keygen_writes_a_private_key_file(tmp_path):
    result = run_cli("keygen", "--out", str(tmp_path / "k.key"))
    assert result.returncode == 0, result.stderr
    assert os.stat(tmp_path / "k.key").st_mode & 0o777 == 0o600
    again = run_cli("keygen", "--out", str(tmp_path / "k.key"))
    assert again.returncode == 2 and "--force" in again.stderr


def test_insecure_key_file_is_refused_with_the_fix(tmp_path):
    assert run_cli("keygen", "--out", str(tmp_path / "k.key")).returncode == 0
    os.chmod(tmp_path / "k.key", 0o644)
    result = run_cli("init", "--out", str(tmp_path / "run.toml"), "--owner-key", str(tmp_path / "k.key"))
    assert result.returncode == 2
    assert "chmod 600" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_node_refuses_a_tampered_manifest_without_traceback(tmp_path, owner):
    run = make_manifest(tmp_path, owner[1])
    run.write_text(run.read_text().replace('mode = "async"', 'mode = "sequential"'))
    result = run_cli("node", "--run", str(run), "--key", str(tmp_path / "n.key"), "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2
    assert "signature does not verify" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_node_refuses_a_trainer_role_its_key_is_not_allowed(tmp_path, owner):
    run = make_manifest(tmp_path, owner[1], "--trainer-key", "c" * 64)
    result = run_cli("node", "--run", str(run), "--key", str(tmp_path / "n.key"), "--role", "trainer",
                     "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2 and "trainer_keys" in result.stderr


@pytest.mark.slow
def test_unreachable_initial_peer_is_a_clear_error_not_a_hang(tmp_path, owner):
    run = make_manifest(tmp_path, owner[1])
    bogus = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWN9BxXTgjNkv8K4D4fihtTew6QaNzxsKc8UWgYJu2NivH"
    result = run_cli("peers", "--run", str(run), "--initial-peers", bogus, "--timeout", "5", timeout=90)
    assert result.returncode == 2
    assert "could not join the swarm" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_baseline_runs_a_manifests_settings_in_one_process(tmp_path, owner):
    run = make_manifest(tmp_path, owner[1], "--steps", "2", "--seed", "3")
    out = tmp_path / "curve.jsonl"
    result = run_cli("baseline", "--run", str(run), "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1] and all(0 <= r["reward"] <= 1 for r in records)
    assert "seed 3" in result.stdout and f"per-step records: {out}" in result.stdout
    assert "Loading weights" not in result.stderr  # our progress lines, not the libraries'


def test_baseline_errors_name_the_fix(tmp_path):
    missing = run_cli("baseline", "--run", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "swarm init" in missing.stderr and "Traceback" not in missing.stderr
    both = run_cli("baseline", "x.toml", "--run", "y.toml")
    assert both.returncode == 2 and "not both" in both.stderr


def test_init_refuses_more_than_one_trainer_slot(tmp_path, owner):
    result = run_cli("init", "--out", str(tmp_path / "run.toml"), "--owner-key", str(owner[1]), "--trainer-slots", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("swarm init: error: swarm.trainer_slots must be 1: trainers cannot yet "
                                     "train together (two would publish competing adapter chains)")
    assert not (tmp_path / "run.toml").exists()


def test_init_says_who_may_train_and_warns_loudly_of_open_training(tmp_path, owner):
    identity, key = owner
    default = run_cli("init", "--out", str(tmp_path / "a.toml"), "--owner-key", str(key))
    assert default.returncode == 0, default.stderr
    assert (f"trainers owner key {identity.key_id[:16]}... only (add --trainer-key KEYID to authorise others)"
            in default.stdout) and "WARNING" not in default.stderr
    listed = run_cli("init", "--out", str(tmp_path / "b.toml"), "--owner-key", str(key), "--trainer-key", "c" * 64,
                     "--trainer-key", identity.key_id)
    assert listed.returncode == 0, listed.stderr
    assert f"trainers 2 key(s) in priority order: {'c' * 16}..., {identity.key_id[:16]}... (owner)" in listed.stdout
    opened = run_cli("init", "--out", str(tmp_path / "c.toml"), "--owner-key", str(key), "--open-training-UNSAFE")
    assert opened.returncode == 0, opened.stderr
    assert "trainers ANY member may train" in opened.stdout
    assert "swarm init: WARNING: open training" in opened.stderr
    assert "receives every trajectory chunk" in opened.stderr and "--trainer-key" in opened.stderr


def test_init_refuses_open_training_with_listed_trainer_keys(tmp_path, owner):
    result = run_cli("init", "--out", str(tmp_path / "run.toml"), "--owner-key", str(owner[1]),
                     "--open-training-UNSAFE", "--trainer-key", "c" * 64)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "swarm.open_training and swarm.trainer_keys exclude each other" in result.stderr
    assert not (tmp_path / "run.toml").exists()


@pytest.mark.parametrize("flags, message", [
    (["--task", "nope"], "task: unknown task 'nope'"),
    (["--task-option", "colour=red"], "task.options: task 'sort-digits' does not take option 'colour'"),
    (["--task-option", "oops"], "--task-option 'oops' must look like KEY=VALUE"),
    (["--mode", "eventually"], "invalid choice: 'eventually'"),
    (["--prompts-per-step", "4", "--prompts-per-chunk", "8"], "grpo.prompts_per_chunk must be in 1..grpo.prompts_per_step"),
    (["--group-size", "1"], "grpo.group_size must be >= 2"),
    (["--lora-targets", "q_proj,mlp"], "lora.targets must be within"),
    (["--max-new-tokens", "lots"], "--max-new-tokens: invalid int value"),
])
def test_init_names_a_bad_setting_without_traceback(tmp_path, owner, flags, message):
    result = run_cli("init", "--out", str(tmp_path / "run.toml"), "--owner-key", str(owner[1]), *flags)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


# -- layering: crypto <- swarm <- nodes <- scenarios; nodes/commands may also import scenarios ---------
def _imports(path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _importers(package: str, *forbidden: str) -> list[str]:
    return sorted(f"{path.relative_to(ROOT)} imports {name}"
                  for path in (ROOT / package).rglob("*.py") for name in _imports(path)
                  if any(name == f or name.startswith(f + ".") for f in forbidden))


def test_scenarios_do_not_import_the_cli():
    assert _importers("scenarios", "nodes.cli", "nodes.commands") == []


def test_lower_layers_do_not_import_higher_ones():
    assert _importers("crypto", "swarm", "nodes", "scenarios") == []
    assert _importers("swarm", "nodes", "scenarios") == []
    outside_commands = [line for line in _importers("nodes", "scenarios") if not line.startswith("nodes/commands/")]
    assert outside_commands == []


def test_a_node_terminal_on_a_full_disk_loses_the_line_not_the_node():
    """`swarm node ... > node.out` on a disk that fills: the join line is lost, the node goes on;
    any other write error still surfaces."""
    import errno

    from nodes.commands.node import say

    class Stream:
        def __init__(self, err: int):
            self.err = err

        def write(self, _text: str) -> int:
            raise OSError(self.err, os.strerror(self.err))

        def flush(self) -> None:
            pass

    say("join with: --initial-peers /ip4/127.0.0.1/tcp/1", Stream(errno.ENOSPC))
    with pytest.raises(OSError):
        say("join with: --initial-peers /ip4/127.0.0.1/tcp/1", Stream(errno.EBADF))
