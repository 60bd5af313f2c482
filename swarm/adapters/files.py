"""An adapter version on disk: a PEFT directory whose identity is the sha256 of its weights.

A version is ``adapter_config.json`` + ``adapter_model.safetensors``, loadable with
``PeftModel.from_pretrained(base, dir)``. Its identity is the sha256 of the safetensors file, so
the bytes must be a pure function of the tensors: :func:`adapter_bytes` is the one serialiser,
used when saving, publishing and rebuilding a version from a delta (`swarm.adapters.delta`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarm.rejections import Reason, VersionRejected

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


class AdapterError(VersionRejected):
    """An adapter directory or delta is malformed or does not match its expected digest."""

    def __init__(self, detail: str, reason: Reason = Reason.DIGEST):
        super().__init__(reason, detail)


def adapter_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """The canonical safetensors bytes of an adapter (sorted names, fixed metadata)."""
    from safetensors.torch import save

    return save({k: tensors[k].detach().contiguous() for k in sorted(tensors)}, metadata={"format": "pt"})


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_version(tensors: dict[str, torch.Tensor], config: dict[str, Any], out_dir: str | Path) -> str:
    """Write a PEFT dir atomically (tmp dir, fsync, rename) and return the weights' sha256."""
    out = Path(out_dir)
    if out.exists():
        raise AdapterError(f"{out} already exists: versions are immutable")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = adapter_bytes(tensors)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, payload in ((WEIGHTS_NAME, data),
                              (CONFIG_NAME, json.dumps(config, sort_keys=True, indent=2).encode())):
            with open(tmp / name, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:  # make the rename durable
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return sha256_hex(data)


def save_version(policy, out_dir: str | Path, version: int) -> str:
    """Write ``policy``'s adapter as version ``version`` into ``out_dir``; return its sha256.

    ``out_dir`` is the version's own directory (it must not exist yet). The config is the
    policy's (`Policy.peft_config_dict`: its base named so `AutoPeftModelForCausalLM` loads the
    dir); the version number is not in it (PEFT reads ``revision`` as the *base model's*
    revision): the signed record and the provenance log are what bind it.
    """
    if type(version) is not int or version < 0:
        raise AdapterError("version must be a non-negative int")
    return write_version(policy.adapter_tensors(), policy.peft_config_dict(), out_dir)


def load_version(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a version's tensors (safetensors, never pickle); check the digest when given."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    if not (p / CONFIG_NAME).is_file() or not (p / WEIGHTS_NAME).is_file():
        raise AdapterError(f"{p} is not a PEFT adapter dir")
    data = (p / WEIGHTS_NAME).read_bytes()
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256:
        raise AdapterError(f"{p}: sha256 mismatch")
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise AdapterError(f"{p}: unreadable adapter weights: {exc}") from None
