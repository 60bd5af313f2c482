"""Trainer checkpoints: adapter + optimizer (safetensors) and accounting (JSON), atomically.

Written into a fresh directory that replaces the old one by rename, so a kill at any moment
leaves the last good checkpoint. Chunks still buffered at checkpoint time are not counted as
accepted: after a restart their producers' copies are gone, so they are simply absent.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def save_checkpoint(path: Path, tensors: dict, meta: dict) -> None:
    """Raises OSError (a full disk: ENOSPC) with nothing changed and no partial files left."""
    from safetensors.torch import save

    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:  # serialised here and written by Python: a failed write is an OSError, not a SafetensorError
        (tmp / "state.safetensors").write_bytes(save({k: v.contiguous() for k, v in tensors.items()}))
        (tmp / "meta.json").write_text(json.dumps(meta))
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path) -> tuple[dict, dict] | None:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "meta.json").exists():
        old = path.with_name(path.name + ".old")  # killed between the two renames
        if not (old / "meta.json").exists():
            return None
        path = old
    return load_file(str(path / "state.safetensors")), json.loads((path / "meta.json").read_text())
