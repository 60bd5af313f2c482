"""Pinning the base model: one digest over everything that makes a model what it is.

A base is a local Hugging Face directory (or 'tiny', the embedded model, built locally; or a
Hugging Face id already in the local cache, resolved offline to its snapshot). Its digest is the
sha256 of the sorted lines "<relative path>\\t<sha256>\\n" of every file that decides the model's
outputs: weights (every shard), configs, tokenizer and chat template files. Another shard, a
changed tokenizer or a renamed file changes it. `swarm init` writes the digest into the manifest
(`model.sha256`) and every node checks it before it loads the base.

Hashing a big checkpoint takes a while, so file digests are cached by (path, size, mtime).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nodes.models.tiny import cache_root, tiny_model_dir

PINNED = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "config.json",
          "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
          "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
          "chat_template.json")
"""The files of a base directory that decide its outputs (weights, configs, tokenizer, template)."""


class BaseError(ValueError):
    """The manifest's base cannot be found, or is not the one the manifest pins."""


def base_dir(base: str) -> Path:
    """The local directory of a base: 'tiny' (built on first use), a directory, or a Hugging Face
    id already downloaded (looked up offline; we never download a model for you)."""
    if base == "tiny":
        return tiny_model_dir()
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BaseError(f"base {base} has no config.json: point --base at a Hugging Face model directory")
        return path
    if path.suffix == ".gguf":
        raise BaseError(f"base {base} is a GGUF file: the trainer needs the Hugging Face weights; pass their "
                        "directory as --base (llama.cpp nodes convert it themselves)")
    if path.exists() or base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise BaseError(f"base {base} is not a directory: pass a Hugging Face model directory, 'tiny', or the "
                        "id of a model already downloaded (huggingface-cli download ID)")
    return _hub_snapshot(base)


def _hub_snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or no hub library): say how to get it
        raise BaseError(f"base {repo_id} is not in the local Hugging Face cache: download it first "
                        f"(huggingface-cli download {repo_id}) or pass its directory") from None


def pinned_files(directory: Path) -> list[Path]:
    files = {p for pattern in PINNED for p in directory.glob(pattern) if p.is_file()}
    return sorted(files, key=lambda p: p.relative_to(directory).as_posix())


def base_digest(base: str) -> str:
    """The digest a manifest pins for `base` (see the module docstring)."""
    directory = base_dir(base)
    files = pinned_files(directory)
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise BaseError(f"base {base} has no weights (*.safetensors or *.bin) in {directory}")
    lines = "".join(f"{p.relative_to(directory).as_posix()}\t{file_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def resolve_base(base: str, sha256: str = "") -> str:
    """The local directory of the manifest's base, checked against its pinned digest."""
    directory = base_dir(base)
    if sha256 and base_digest(base) != sha256:
        raise BaseError(f"base {base} ({directory}) is not the model the manifest pins (model.sha256 "
                        f"{sha256[:16]}): its weights, config or tokenizer differ; use the owner's base")
    return str(directory)


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (absolute path, size, mtime) in the echo-swarm cache."""
    path = Path(path).resolve()
    stat = path.stat()
    cached = stat.st_size >= 1 << 20  # small files are quicker to hash than to look up
    key, cache = f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}", cache_root() / "digests.json"
    if cached:
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        if isinstance(known, dict) and isinstance(known.get(key), str):
            return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if cached:
        _remember(cache, key, digest)
    return digest


def _remember(cache: Path, key: str, digest: str) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        known = {k: v for k, v in known.items() if Path(k.split("\t")[0]).exists()} if len(known) > 4096 else known
        known[key] = digest
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache we cannot write only costs time
