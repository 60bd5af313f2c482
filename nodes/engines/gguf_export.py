"""Write a Llama with a character-level tokenizer (the embedded tiny model) and its PEFT LoRA
adapters as GGUF for llama.cpp.

Every other base (Llama with a BPE or SentencePiece tokenizer, Qwen2/3, Mistral, Gemma, ...) is
converted by llama.cpp's own scripts (`llamacpp_tools`), which know each family's tokenizer:
`ensure_base_gguf` and `ensure_lora_gguf` pick the converter.

Our own writer (the `gguf` package's GGUFWriter), not llama.cpp's converter script, so that:
- the output is deterministic (no paths, dates or tool versions in it): every node that converts
  the same HF base gets the same bytes, hence the same sha256;
- the GGUF records the digest of the HF weights it came from (`echo_swarm.base_sha256`) and the
  vocabulary, so a node can say clearly when a GGUF is not the run's base;
- it embeds the HF tokenizer files, so an engine pointed at a bare .gguf still encodes prompts
  with the same ids as the transformers engine (llama.cpp's own tokenizer is never used).

The character vocabulary is written as a byte-level BPE ("gpt2") vocabulary without merges, its
token strings in GPT-2's byte-to-unicode form (a space is "Ġ"), so llama.cpp's own tools tokenize
text exactly as the HF tokenizer does (we feed token ids ourselves, but a GGUF that crashes
`llama-cli` on its first prompt is not a GGUF). Typed as SentencePiece, as it once was, llama.cpp
looked for byte tokens the vocabulary lacks and aborted on any tokenize call.

Q and K projections are permuted as llama.cpp's convert_hf_to_gguf.py does for the llama arch:
HF rotates halves of each head (rotate_half, pairs (i, i + d/2)), ggml's normal RoPE rotates
adjacent pairs (2i, 2i+1). A LoRA's B factor (the output side) gets the same row permutation.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from nodes.engines.base import EngineError
from nodes.models.pinning import file_sha256

FORMAT = "echo-swarm-gguf/2"  # 2: the vocabulary is "gpt2"-typed (see the module docstring)
KEY_FORMAT = "echo_swarm.format"
KEY_BASE_SHA = "echo_swarm.base_sha256"
KEY_VOCAB_SHA = "echo_swarm.vocab_sha256"
KEY_ADAPTER_SHA = "echo_swarm.adapter_sha256"
KEY_TOKENIZER = "echo_swarm.hf_tokenizer."  # + file name: the HF tokenizer files, verbatim
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json")
LLAMA_MODEL_TYPES = ("llama",)


class GGUFMismatchError(EngineError):
    """A GGUF file is not the base model (or the vocabulary) the run names."""


def gguf_sha256(path: Path | str) -> str:
    """sha256 of a GGUF file's bytes: what a manifest pins for llama.cpp nodes."""
    return file_sha256(path)


def hf_base_sha256(hf_dir: Path | str) -> str:
    """The pinned digest of an HF base directory (the manifest's `model.sha256`, nodes.models.pinning)."""
    from nodes.models.pinning import base_digest

    return base_digest(str(hf_dir))


# -- vocabulary ---------------------------------------------------------------------------------
def hf_vocab(tokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
    """One unique token string and a GGUF token type per embedding row (holes padded)."""
    from gguf import TokenType
    from gguf.vocab import bytes_to_unicode  # GPT-2's byte -> printable character map

    to_char = bytes_to_unicode()
    by_id: dict[int, str] = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.get_added_vocab().values()) if hasattr(tokenizer, "get_added_vocab") else set()
    tokens, types = [], []
    for i in range(n_vocab):
        tok = by_id.get(i)
        if tok is None or tok == "":
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
            continue
        tokens.append(tok)
        if i == tokenizer.unk_token_id:
            types.append(int(TokenType.UNKNOWN))
        elif i in special:
            types.append(int(TokenType.CONTROL))
        elif i in added:
            types.append(int(TokenType.USER_DEFINED))
        else:
            types.append(int(TokenType.NORMAL))
            tokens[-1] = "".join(to_char[b] for b in tok.encode("utf-8"))
    if len(set(tokens)) != len(tokens):
        raise EngineError("tokenizer vocabulary has duplicate token strings; llama.cpp cannot load it")
    if max(by_id, default=-1) >= n_vocab:
        raise EngineError(f"tokenizer has ids up to {max(by_id)} but the model embeds only {n_vocab} rows")
    return tokens, types


def vocab_sha256(tokens: list[str]) -> str:
    return hashlib.sha256("\n".join(tokens).encode("utf-8", "surrogatepass")).hexdigest()


# -- config ---------------------------------------------------------------------------------------
def _llama_hparams(config: dict) -> dict:
    if config.get("model_type") not in LLAMA_MODEL_TYPES:
        raise EngineError(f"GGUF export supports Llama-architecture models only, not {config.get('model_type')!r}")
    n_head = config["num_attention_heads"]
    hp = {
        "n_vocab": config["vocab_size"], "n_embd": config["hidden_size"], "n_layer": config["num_hidden_layers"],
        "n_ff": config["intermediate_size"], "n_head": n_head,
        "n_head_kv": config.get("num_key_value_heads") or n_head,
        "head_dim": config.get("head_dim") or config["hidden_size"] // n_head,
        "n_ctx": config.get("max_position_embeddings", 2048), "eps": config.get("rms_norm_eps", 1e-6),
        "tied": bool(config.get("tie_word_embeddings", False)),
    }
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    hp["rope_theta"] = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    hp["rope_type"] = rope.get("rope_type", rope.get("type", "default")) or "default"
    hp["rope"] = rope
    if hp["rope_type"] not in ("default", "linear", "llama3"):
        raise EngineError(f"RoPE type {hp['rope_type']!r} is not supported by our GGUF writer")
    if config.get("hidden_act", "silu") != "silu":
        raise EngineError(f"activation {config.get('hidden_act')!r} is not llama.cpp's llama (silu)")
    return hp


def _llama3_rope_factors(hp: dict) -> np.ndarray:
    """The per-frequency divisors llama.cpp reads from `rope_freqs.weight` (as its converter writes)."""
    rope, dim, base = hp["rope"], hp["head_dim"], hp["rope_theta"]
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for k in range(0, dim, 2):
        freq = 1.0 / (base ** (k / dim))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of each head reordered from HF's half-split RoPE layout to ggml's interleaved one."""
    return np.ascontiguousarray(
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


_LAYER_MAP = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_tensor_name(hf_name: str) -> str | None:
    """HF parameter name -> llama.cpp tensor name (None for what llama.cpp does not load)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers":
        module, kind = ".".join(parts[3:-1]), parts[-1]
        if module in _LAYER_MAP:
            return f"blk.{int(parts[2])}.{_LAYER_MAP[module]}.{kind}"
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    raise EngineError(f"no llama.cpp tensor for HF parameter {hf_name!r}")


def _weight_files(hf_dir: Path) -> list[Path]:
    single = hf_dir / "model.safetensors"
    return [single] if single.is_file() else sorted(hf_dir.glob("model-*.safetensors"))


def _write_atomically(out: Path, write) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# -- base ------------------------------------------------------------------------------------------
def export_base_gguf(hf_dir: Path | str, out: Path | str) -> Path:
    """Write the HF Llama in `hf_dir` as an f32 GGUF at `out` (tmp-then-rename); deterministic."""
    import gguf
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    hf_dir, out = Path(hf_dir), Path(out)
    config = json.loads((hf_dir / "config.json").read_text())
    hp = _llama_hparams(config)
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    tokens, types = hf_vocab(tokenizer, hp["n_vocab"])

    # Plan the tensors (name -> (file, hf name, permute heads)) so data streams one at a time.
    plan: list[tuple[str, Path | None, str, int]] = []
    for path in _weight_files(hf_dir):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not iterable
                gname = gguf_tensor_name(name)
                if gname is None or (gname == "output.weight" and hp["tied"]):
                    continue
                heads = hp["n_head"] if ".attn_q." in gname else hp["n_head_kv"] if ".attn_k." in gname else 0
                plan.append((gname, path, name, heads))
    order = {"token_embd.weight": 0, "output_norm.weight": 2, "output.weight": 3}
    plan.sort(key=lambda p: (order.get(p[0], 1), _block_key(p[0])))
    if hp["rope_type"] == "llama3":
        plan.insert(0, ("rope_freqs.weight", None, "", 0))

    def load(path: Path | None, name: str, heads: int) -> np.ndarray:
        if path is None:
            return _llama3_rope_factors(hp)
        with safe_open(str(path), framework="pt") as f:
            t = f.get_tensor(name).to(torch.float32).numpy()
        return permute_qk(t, heads) if heads else np.ascontiguousarray(t)

    def write(tmp: Path) -> None:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_type("model")
        w.add_name("echo-swarm-base")
        w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
        w.add_vocab_size(hp["n_vocab"])
        w.add_context_length(hp["n_ctx"])
        w.add_embedding_length(hp["n_embd"])
        w.add_block_count(hp["n_layer"])
        w.add_feed_forward_length(hp["n_ff"])
        w.add_head_count(hp["n_head"])
        w.add_head_count_kv(hp["n_head_kv"])
        if hp["head_dim"] * hp["n_head"] != hp["n_embd"]:
            w.add_key_length(hp["head_dim"])
            w.add_value_length(hp["head_dim"])
        w.add_rope_dimension_count(hp["head_dim"])
        w.add_rope_freq_base(hp["rope_theta"])
        if hp["rope_type"] == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(hp["rope"]["factor"]))
        w.add_layer_norm_rms_eps(float(hp["eps"]))
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types(types)
        # One character per token: nothing to merge; llama.cpp wants the key, and writers drop an
        # empty array, so one merge of two NUL bytes ("Ā"), which text never holds.
        w.add_token_merges(["\u0100 \u0100"])
        for tid, add in ((tokenizer.bos_token_id, w.add_bos_token_id), (tokenizer.eos_token_id, w.add_eos_token_id),
                         (tokenizer.unk_token_id, w.add_unk_token_id), (tokenizer.pad_token_id, w.add_pad_token_id)):
            if tid is not None:
                add(int(tid))
        w.add_add_bos_token(tokenizer.bos_token_id is not None)  # matches base.encode_prompt
        if isinstance(getattr(tokenizer, "chat_template", None), str):
            w.add_chat_template(tokenizer.chat_template)
        w.add_string(KEY_FORMAT, FORMAT)
        w.add_string(KEY_BASE_SHA, hf_base_sha256(hf_dir))
        w.add_string(KEY_VOCAB_SHA, vocab_sha256(tokens))
        for fname in TOKENIZER_FILES:
            if (hf_dir / fname).is_file():
                w.add_string(KEY_TOKENIZER + fname, (hf_dir / fname).read_text())
        shapes = {}
        for gname, path, name, heads in plan:
            if path is None:
                shape = (hp["head_dim"] // 2,)
            else:
                with safe_open(str(path), framework="pt") as f:
                    shape = tuple(f.get_slice(name).get_shape())
            shapes[gname] = shape
            w.add_tensor_info(gname, shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for gname, path, name, heads in plan:
            arr = load(path, name, heads)
            assert arr.shape == shapes[gname], (gname, arr.shape)
            w.write_tensor_data(arr)
        w.close()

    return _write_atomically(out, write)


def _block_key(gname: str) -> tuple:
    parts = gname.split(".")
    return (int(parts[1]), parts[2], parts[3]) if parts[0] == "blk" else (-1, gname, "")


def default_gguf_path(hf_dir: Path | str) -> Path:
    """Where the GGUF of an HF base is cached: in the echo-swarm cache, never in the user's model
    directory (which may be read-only, shared, or a hub snapshot)."""
    from nodes.models.tiny import cache_root

    key = hashlib.sha256(str(Path(hf_dir).resolve()).encode()).hexdigest()[:16]
    return cache_root() / "gguf" / key / "model-f32.gguf"


def written_by_us(hf_dir: Path | str) -> bool:
    """Whether our own writer converts this base: a Llama with a character-level (WordLevel)
    tokenizer, which llama.cpp's converter cannot express; every other base is llama.cpp's."""
    hf_dir = Path(hf_dir)
    if json.loads((hf_dir / "config.json").read_text()).get("model_type") not in LLAMA_MODEL_TYPES:
        return False
    try:
        kind = json.loads((hf_dir / "tokenizer.json").read_text())["model"]["type"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return kind == "WordLevel"


def ensure_base_gguf(hf_dir: Path | str, out: Path | str | None = None) -> Path:
    """The GGUF of an HF base, converted once and cached (re-made if the HF weights changed):
    by our writer for Llama, by llama.cpp's converter (llamacpp_tools) for every other architecture,
    whose output names its base in a `.base-sha256` file beside it."""
    hf_dir = Path(hf_dir)
    out = Path(out) if out else default_gguf_path(hf_dir)
    pin = out.with_name(out.name + ".base-sha256")
    digest = hf_base_sha256(hf_dir)
    if out.is_file():
        try:
            if pin.is_file() and pin.read_text() == digest:
                return out
            meta = {} if pin.is_file() else read_gguf_meta(out)
            if meta.get(KEY_BASE_SHA) == digest and meta.get(KEY_FORMAT) == FORMAT:
                return out
        except (ValueError, OSError):
            pass  # unreadable cache: write it again
    if written_by_us(hf_dir):
        pin.unlink(missing_ok=True)
        return export_base_gguf(hf_dir, out)
    from nodes.engines import llamacpp_tools

    llamacpp_tools.convert_base(hf_dir, out)
    pin.write_text(digest)
    return out


# -- reading and checking ------------------------------------------------------------------------
def read_gguf_meta(path: Path | str, keys_prefix: tuple[str, ...] = ()) -> dict:
    """Scalar/string metadata of a GGUF (arrays skipped except the token list under "tokens")."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    meta: dict = {}
    for field in reader.fields.values():
        if keys_prefix and not field.name.startswith(keys_prefix):
            continue
        if not field.types:
            continue
        if field.types[0] == GGUFValueType.STRING:
            meta[field.name] = bytes(field.parts[field.data[0]]).decode("utf-8")
        elif field.types[0] == GGUFValueType.ARRAY:
            if field.name == "tokenizer.ggml.tokens":
                meta["tokens"] = [bytes(field.parts[i]).decode("utf-8", "surrogatepass") for i in field.data]
        else:
            meta[field.name] = field.parts[field.data[0]].tolist()[0]
    return meta


def check_gguf_base(gguf_path: Path | str, hf_dir: Path | str | None = None, *,
                    base_sha256: str | None = None, tokenizer=None) -> dict:
    """Raise GGUFMismatchError unless the GGUF was written from the run's base; returns its metadata.

    The base is named by an HF dir (digest of its weights + its vocabulary) or by `base_sha256`
    (the manifest's digest of model.safetensors) plus optionally a `tokenizer` to compare ids.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise GGUFMismatchError(f"GGUF file {gguf_path} does not exist")
    try:
        meta = read_gguf_meta(gguf_path)
    except (ValueError, OSError, IndexError) as e:
        raise GGUFMismatchError(f"{gguf_path} is not a readable GGUF file: {e}") from e
    if hf_dir is not None:
        base_sha256 = base_sha256 or hf_base_sha256(hf_dir)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    recorded = meta.get(KEY_BASE_SHA)
    if base_sha256 is not None:
        if recorded is None:
            raise GGUFMismatchError(
                f"{gguf_path} records no base digest ({KEY_BASE_SHA}): it was not written by echo-swarm's "
                f"converter, so it cannot be tied to base {base_sha256[:12]}; convert the HF base with "
                "nodes.engines.gguf_export.export_base_gguf")
        if recorded != base_sha256:
            raise GGUFMismatchError(
                f"{gguf_path} was converted from base {recorded[:12]}, not the run's base {base_sha256[:12]}")
    if tokenizer is not None:
        tokens = meta.get("tokens") or []
        want, _ = hf_vocab(tokenizer, len(tokens)) if tokens else ([], [])
        if not tokens or tokens != want:
            diff = next((i for i, (a, b) in enumerate(zip(tokens, want)) if a != b), min(len(tokens), len(want)))
            raise GGUFMismatchError(f"{gguf_path} vocabulary differs from the run's tokenizer (first at id {diff})")
    return meta


def tokenizer_from_gguf(gguf_path: Path | str):
    """The HF tokenizer embedded by export_base_gguf, or None for a GGUF without one."""
    import tempfile

    from transformers import AutoTokenizer

    meta = read_gguf_meta(gguf_path, (KEY_TOKENIZER,))
    files = {k[len(KEY_TOKENIZER):]: v for k, v in meta.items()}
    if "tokenizer.json" not in files:
        return None
    with tempfile.TemporaryDirectory(prefix="echo-tok-") as tmp:
        for name, text in files.items():
            if name in TOKENIZER_FILES:  # never a path from the file: only the names we write
                Path(tmp, name).write_text(text)
        return AutoTokenizer.from_pretrained(tmp)


# -- LoRA adapters -------------------------------------------------------------------------------
def export_lora_gguf(peft_dir: Path | str, out: Path | str, n_head: int, n_head_kv: int) -> Path:
    """Write a PEFT LoRA dir as a GGUF LoRA adapter llama.cpp loads onto our base (deterministic).

    Shapes are PEFT's own: lora_a (r, in), lora_b (out, r) = ggml ne {in, r} / {r, out}. llama.cpp
    scales by alpha / r with r read per tensor, which is PEFT's rule; rsLoRA (alpha / sqrt r) is
    folded into B.
    """
    import gguf
    from safetensors.numpy import load_file

    peft_dir, out = Path(peft_dir), Path(out)
    cfg = json.loads((peft_dir / "adapter_config.json").read_text())
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora"):
        raise EngineError(f"{peft_dir}: only plain LoRA adapters convert to GGUF (not DoRA or {cfg.get('peft_type')})")
    if cfg.get("alpha_pattern") or cfg.get("modules_to_save") or cfg.get("bias", "none") != "none":
        raise EngineError(f"{peft_dir}: alpha_pattern, modules_to_save and LoRA biases are not supported in GGUF")
    alpha = float(cfg["lora_alpha"])
    weights = peft_dir / "adapter_model.safetensors"
    state = load_file(str(weights))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, t in state.items():
        if t.dtype != np.float32:
            t = t.astype(np.float32)
        name = key.removeprefix("base_model.model.")
        for hf_part, g_part in ((".lora_A.weight", "lora_a"), (".lora_B.weight", "lora_b")):
            if name.endswith(hf_part):
                module = name[: -len(hf_part)] + ".weight"
                gname = gguf_tensor_name(module)
                if gname is None or not gname.startswith("blk."):
                    raise EngineError(f"{peft_dir}: LoRA on {module} is not supported in GGUF")
                pairs.setdefault(gname, {})[g_part] = t
                break
        else:
            raise EngineError(f"{peft_dir}: unexpected adapter tensor {key!r}")

    def write(tmp: Path) -> None:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_type("adapter")
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_string(KEY_FORMAT, FORMAT)
        w.add_string(KEY_ADAPTER_SHA, file_sha256(weights))
        for gname in sorted(pairs, key=_block_key):
            ab = pairs[gname]
            if set(ab) != {"lora_a", "lora_b"}:
                raise EngineError(f"{peft_dir}: {gname} lacks lora_A or lora_B")
            a, b = ab["lora_a"], ab["lora_b"]
            r = a.shape[0]
            if cfg.get("use_rslora"):
                b = b * np.float32(math.sqrt(r))
            if ".attn_q." in gname:
                b = permute_qk(b, n_head)
            elif ".attn_k." in gname:
                b = permute_qk(b, n_head_kv)
            stem = gname.removesuffix(".weight")
            w.add_tensor(f"{stem}.weight.lora_a", np.ascontiguousarray(a))
            w.add_tensor(f"{stem}.weight.lora_b", np.ascontiguousarray(b))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    return _write_atomically(out, write)


def ensure_lora_gguf(peft_dir: Path | str, n_head: int, n_head_kv: int, out: Path | str | None = None,
                     hf_dir: Path | str | None = None) -> Path:
    """The adapter's GGUF, converted once next to it (re-made if the safetensors changed). For a
    base that is not a Llama (`hf_dir` says), by llama.cpp's convert_lora_to_gguf.py."""
    peft_dir = Path(peft_dir)
    out = Path(out) if out else peft_dir / "gguf" / "adapter-f32.gguf"
    weights = file_sha256(peft_dir / "adapter_model.safetensors")
    pin = out.with_name(out.name + ".adapter-sha256")
    if out.is_file():
        try:
            if (pin.read_text() if pin.is_file() else read_gguf_meta(out, (KEY_ADAPTER_SHA,)).get(KEY_ADAPTER_SHA)) \
                    == weights:
                return out
        except (ValueError, OSError):
            pass
    if hf_dir is None or written_by_us(hf_dir):
        return export_lora_gguf(peft_dir, out, n_head, n_head_kv)
    from nodes.engines import llamacpp_tools

    llamacpp_tools.convert_lora(peft_dir, Path(hf_dir), out)
    pin.write_text(weights)
    return out


def lora_gguf_bytes(config_json: bytes, weights: bytes, hf_base_dir: Path | str) -> bytes:
    """The GGUF LoRA file of an adapter given as PEFT config + weights, for an HF base dir (what a
    trainer publishes alongside each version, so llama.cpp nodes need not convert it)."""
    import tempfile

    base = json.loads((Path(hf_base_dir) / "config.json").read_text())
    n_head = int(base["num_attention_heads"])
    with tempfile.TemporaryDirectory(prefix="echo-lora-") as tmp:
        (Path(tmp) / "adapter_config.json").write_bytes(config_json)
        (Path(tmp) / "adapter_model.safetensors").write_bytes(weights)
        out = ensure_lora_gguf(tmp, n_head, int(base.get("num_key_value_heads", n_head)), Path(tmp) / "adapter.gguf",
                               hf_dir=hf_base_dir)
        return out.read_bytes()
