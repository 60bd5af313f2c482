"""The provenance an exported adapter carries, so `swarm audit DIR` verifies it from DIR alone.

`swarm export` writes the adapter and `provenance/version.dsse` (its entry); this adds the run's
log (entries, keys, the signed checkpoint with its cosignatures, the manifest and the owner's
updates to it)
and `inclusion.json`: the entry's RFC 6962 inclusion proof in the checkpointed tree, for
verifiers that do not replay the whole log.
"""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from crypto.merkle import inclusion_proof, leaf_hash, root_of
from swarm.provenance.audit import find_log_dirs

LOG_FILES = ("entries.log", "keys.json", "checkpoint.note", "manifest.toml", "updates.jsonl")


def write_export_provenance(run_dir: Path, version: int, out: Path) -> bool:
    """Copy the run's most complete log into `out` and prove `out/version.dsse` is in it; False
    when the run has no provenance log (made before there was one)."""
    from swarm.provenance.audit import _read_entries

    dirs = find_log_dirs(Path(run_dir))
    if not dirs:
        return False
    source = max(dirs, key=_completeness)
    for name in LOG_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    entries, _ = _read_entries(out)
    envelope = (out / "version.dsse").read_bytes()
    if envelope not in entries:
        raise ValueError(f"v{version}'s entry is not in the run's log at {source}")
    leaves = [leaf_hash(e) for e in entries]
    index = entries.index(envelope)
    (out / "inclusion.json").write_text(json.dumps({
        "version": version, "index": index, "tree_size": len(leaves),
        "leaf_hash": base64.b64encode(leaves[index]).decode(), "root": base64.b64encode(root_of(leaves)).decode(),
        "hashes": [base64.b64encode(h).decode() for h in inclusion_proof(leaves, index)],
    }, indent=1))
    return True


def _completeness(log_dir: Path) -> tuple[int, int]:
    """Longest log first, then the checkpoint with the most signatures (the trainer's gathers every
    witness's cosignature; a witness's copy has its own)."""
    try:
        signatures = (log_dir / "checkpoint.note").read_bytes().count("\n\u2014 ".encode())
    except OSError:
        signatures = 0
    return (log_dir / "entries.log").stat().st_size, signatures
