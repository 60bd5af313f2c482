"""llama.cpp's own converters, from the llama-cpp-python release our engine is built from.

Our GGUF writer (gguf_export) covers the Llama architecture only. For every other one (Qwen2,
Qwen3, Mistral, Gemma, ...) a base and its LoRA adapters are converted the way llama.cpp itself
converts them: by `convert_hf_to_gguf.py` / `convert_lora_to_gguf.py` and their `conversion/`
and `gguf-py/` packages, taken from the sdist of the installed llama-cpp-python version (so the
converter and the engine agree on every tensor and tokenizer rule). `make` fetches them once
(`python -m nodes.engines.llamacpp_tools fetch`: PyPI, checked against the index's sha256) into
the echo-swarm cache; conversion runs in a subprocess.

One adjustment: llama.cpp names a BPE pre-tokenizer by hashing the token ids of a fixed text,
so a tokenizer trained locally (as our tests' models are) is "not recognized" even when its
pre-tokenizer is exactly Qwen's or Llama 3's. When the hash is unknown, the split regex of
tokenizer.json decides (PRE_TOKENIZERS); anything else stays refused.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from nodes.engines.base import EngineError
from nodes.models.tiny import cache_root

INDEX = "https://pypi.org/simple/llama-cpp-python/"
MEMBERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/")
PRE_TOKENIZERS = {
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""":
        "qwen2",
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""":
        "llama-bpe",
}
"""tokenizer.json split regex -> llama.cpp pre-tokenizer name, for tokenizers llama.cpp's hash misses."""
CONVERT_TIMEOUT_S = 1800


def version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def tools_dir() -> Path:
    return cache_root() / "llama.cpp-tools" / version()


def fetch(index: str = INDEX) -> Path:
    """The converters of the installed llama-cpp-python, downloaded and unpacked once."""
    out = tools_dir()
    if (out / "convert_hf_to_gguf.py").is_file():
        return out
    name = f"llama_cpp_python-{version()}.tar.gz"
    page = urllib.request.urlopen(index, timeout=60).read().decode()
    found = re.search(rf'href="([^"#]+/{re.escape(name)})#sha256=([0-9a-f]{{64}})"', page)
    if not found:
        raise EngineError(f"{name} is not on {index}: cannot fetch llama.cpp's converters")
    data = urllib.request.urlopen(found.group(1), timeout=600).read()
    if hashlib.sha256(data).hexdigest() != found.group(2):
        raise EngineError(f"{name}: sha256 differs from the index's; not unpacked")
    prefix = f"llama_cpp_python-{version()}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix=".llama-tools-", dir=out.parent if out.parent.exists() else None))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            rel = member.name[len(prefix):] if member.name.startswith(prefix) else ""
            if member.isfile() and rel.startswith(MEMBERS) and ".." not in Path(rel).parts:
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def convert_base(hf_dir: Path, out: Path) -> Path:
    """`hf_dir` as an f32 GGUF at `out`, by llama.cpp's convert_hf_to_gguf.py."""
    return _run("convert_hf_to_gguf.py", [str(hf_dir), "--outtype", "f32"], out)


def convert_lora(peft_dir: Path, hf_dir: Path, out: Path) -> Path:
    """A PEFT LoRA dir as a GGUF adapter for the base in `hf_dir`, by convert_lora_to_gguf.py."""
    return _run("convert_lora_to_gguf.py", ["--base", str(hf_dir), "--outtype", "f32", str(peft_dir)], out)


def _run(script: str, args: list[str], out: Path) -> Path:
    tools = tools_dir()
    if not (tools / script).is_file():
        raise EngineError(f"llama.cpp's {script} is not installed here (run `make`, or "
                          "`python -m nodes.engines.llamacpp_tools fetch`)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    result = subprocess.run([sys.executable, "-m", "nodes.engines.llamacpp_tools", "run", str(tools / script),
                             *args, "--outfile", str(tmp)], capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S,
                            stdin=subprocess.DEVNULL, check=False, cwd=Path(__file__).resolve().parents[2])
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"llama.cpp's {script} failed on {args[-1] if 'lora' in script else args[0]}: {last}")
    os.replace(tmp, out)
    return out


def _run_converter(script: Path, args: list[str]) -> None:
    """In the subprocess: llama.cpp's script with its own gguf-py, pre-tokenizer names as above."""
    import runpy

    sys.argv = [str(script), *args]
    sys.path[:0] = [str(script.parent), str(script.parent / "gguf-py")]
    from conversion import base

    recognise = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return recognise(self, tokenizer)
        except NotImplementedError:
            pre = json.loads((Path(self.dir_model) / "tokenizer.json").read_text())["pre_tokenizer"] or {}
            splits = [p["pattern"].get("Regex") for p in pre.get("pretokenizers", [pre]) if p.get("type") == "Split"]
            if splits and splits[0] in PRE_TOKENIZERS:
                return PRE_TOKENIZERS[splits[0]]
            raise

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1:2] == ["fetch"]:
        print(f"llama.cpp converters of llama-cpp-python {version()}: {fetch()}")
    elif sys.argv[1:2] == ["run"]:
        _run_converter(Path(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit("usage: python -m nodes.engines.llamacpp_tools fetch | run SCRIPT ARGS...")
