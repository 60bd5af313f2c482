"""`swarm export`: one adapter version of a run, as a directory people load with the usual tools.

RUN_DIR is a `swarm simulate` out dir (versions in nodes/*/adapters/vN) or a node workdir
(adapters/vN). The trainer's copy is preferred (the workdir whose metrics.jsonl has `step`
events), any other holder's otherwise. DIR must not exist or be empty; it gets:

    README.md           what is here and the lines that load it
    adapter/            the PEFT LoRA dir: adapter_model.safetensors (the version's bytes,
                        unchanged), adapter_config.json (as signed, except that
                        base_model_name_or_path names the base as seen from DIR), the tokenizer
    base/               the base model's files, when the run's base is the embedded "tiny" model
    merged/             --merge: the adapter merged into the base (AutoModelForCausalLM)
    adapter.gguf        --gguf: the LoRA for llama.cpp (the bytes a trainer publishes)
    base.gguf           --gguf, tiny base: the base for llama.cpp
    provenance/         version.dsse (the trainer's signed entry), adapter_config.json exactly as
                        signed, manifest.toml (the signed run manifest, when found); and what
                        `swarm.provenance.export.write_export_provenance` adds (the run's log,
                        inclusion proof, checkpoint, cosignatures) where that module exists

PEFT resolves a relative base_model_name_or_path against the current directory, not against the
adapter's, so a tiny base is named by the absolute path of DIR/base at export time: moving DIR
means editing that one field (README.md says so).
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nodes.cli import CliError

CONFIG, WEIGHTS, RECORD, GGUF = "adapter_config.json", "adapter_model.safetensors", "version.dsse", "gguf/adapter-f32.gguf"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")
OUR_REVISION = re.compile(r"^v\d+$")
"""What versions written before PEFT's `revision` was left alone put there (our version number)."""


@dataclass(frozen=True)
class Base:
    kind: str
    """"tiny" (the embedded model, copied into DIR/base), "local" (a directory) or "hub" (an HF id)."""
    name: str
    """The directory (tiny, local) or the HF id (hub)."""


# -- finding the version ----------------------------------------------------------------------------
def versions_in(workdir: Path) -> dict[int, Path]:
    """The complete version dirs of a node workdir (PEFT files and the signed entry), by number."""
    out = {}
    for p in (workdir / "adapters").glob("v*"):
        if re.fullmatch(r"v\d+", p.name) and all((p / f).is_file() for f in (CONFIG, WEIGHTS, RECORD)):
            out[int(p.name[1:])] = p
    return out


def trained_in(workdir: Path) -> bool:
    """Did a trainer run in this workdir (a `step` event in its metrics.jsonl)?"""
    try:
        with open(workdir / "metrics.jsonl", errors="replace") as f:
            return any('"kind":"step"' in line.replace(" ", "") for line in f)
    except OSError:
        return False


def find_versions(run_dir: Path) -> dict[int, Path]:
    """Every version held under RUN_DIR, each from the first holder in order: trainers' workdirs
    first, then the others (RUN_DIR itself, then nodes/* by name)."""
    if not run_dir.is_dir():
        raise CliError(f"{run_dir} is not a directory; pass a `swarm simulate` out dir or a node's --workdir")
    nodes = run_dir / "nodes"
    workdirs = [run_dir] + (sorted(p for p in nodes.iterdir() if p.is_dir()) if nodes.is_dir() else [])
    found: dict[int, Path] = {}
    for workdir in sorted(workdirs, key=lambda w: not trained_in(w)):  # stable: trainers first
        for version, path in versions_in(workdir).items():
            found.setdefault(version, path)
    if not found:
        raise CliError(f"no adapter versions under {run_dir} (looked for adapters/vN and nodes/*/adapters/vN); "
                       "pass a `swarm simulate` out dir or a node's --workdir")
    return found


def pick_version(found: dict[int, Path], wanted: str) -> int:
    if wanted == "latest":
        return max(found)
    if not re.fullmatch(r"\d+", wanted):
        raise CliError(f"--version must be a version number or 'latest', not {wanted!r}")
    if int(wanted) not in found:
        held = ", ".join(str(v) for v in sorted(found))
        raise CliError(f"version {int(wanted)} is not held here (held: {held}); pass --version with one of "
                       "those, or latest")
    return int(wanted)


def find_manifest(run_dir: Path, version_dir: Path):
    """The run's signed manifest (run.toml) in RUN_DIR or above the version's workdir, or None."""
    from crypto.errors import CryptoError
    from swarm.manifest import ManifestError, load_manifest

    workdir = version_dir.parent.parent
    for d in (run_dir, workdir, workdir.parent, workdir.parent.parent):
        if (d / "run.toml").is_file():
            try:
                return load_manifest(d / "run.toml"), d / "run.toml"
            except (ManifestError, CryptoError, OSError, ValueError):
                continue
    return None, None


# -- the base model -----------------------------------------------------------------------------
def tiny_seed(path: str) -> int | None:
    """The seed of a path that names the embedded tiny model's cache dir (on any machine)."""
    from nodes.models.tiny import FORMAT_VERSION

    m = re.fullmatch(re.escape(FORMAT_VERSION) + r"-seed(\d+)", Path(path).name)
    return int(m.group(1)) if m else None


def resolve_base(given: str | None, manifest, config: dict) -> Base:
    """The base to export against: --base; else the manifest's, or the version config's when only
    that one is on this machine. A local base must match the manifest's pinned digest."""
    sha256 = manifest.manifest.model.sha256 if manifest is not None else ""
    if given:
        names = [given]
    else:
        names = [manifest.manifest.model.base] if manifest is not None else []
        names += [config["base_model_name_or_path"]] if config.get("base_model_name_or_path") else []
    if not names:
        raise CliError("cannot tell this version's base model (no run.toml found, none in its adapter config); "
                       "pass --base tiny|HF_ID|DIR")
    for name in names:
        base = local_base(name, sha256)
        if base is not None:
            return base
    hub = [n for n in names if not n.startswith(("/", ".", "~")) and n.count("/") <= 1]
    if not hub:
        raise CliError(f"base model {names[0]} is not a directory on this machine; pass --base tiny|HF_ID|DIR")
    return Base("hub", hub[0])


def local_base(name: str, sha256: str) -> Base | None:
    """`name` as a base on this machine: the tiny model (by name, or by its cache dir's name on any
    machine: it is rebuilt here the same), or an existing directory; None if neither."""
    from nodes.models import resolve_base as resolve_manifest_base
    from nodes.models.tiny import tiny_model_dir

    try:
        if name == "tiny":
            return Base("tiny", resolve_manifest_base("tiny", sha256))
        seed = tiny_seed(name)
        if seed is not None:
            path = tiny_model_dir(seed)
            return Base("tiny", resolve_manifest_base(str(path), sha256))
        if Path(name).is_dir():
            return Base("local", str(Path(resolve_manifest_base(name, sha256)).resolve()))
    except ValueError as e:
        raise CliError(str(e)) from None
    return None


# -- writing ------------------------------------------------------------------------------------
def write_adapter(version_dir: Path, out: Path, base_ref: str, base_dir: Path | None) -> None:
    """The PEFT dir: weights byte for byte, the config naming `base_ref`, the base's tokenizer."""
    out.mkdir()
    shutil.copyfile(version_dir / WEIGHTS, out / WEIGHTS)
    config = json.loads((version_dir / CONFIG).read_text())
    config["base_model_name_or_path"] = base_ref
    if config.get("revision") is None or OUR_REVISION.match(str(config["revision"])):
        config.pop("revision", None)  # PEFT's `revision` is the base's: never our version number
    (out / CONFIG).write_text(json.dumps(config, sort_keys=True, indent=2))
    if base_dir is not None:
        for name in TOKENIZER_FILES:
            if (base_dir / name).is_file():
                shutil.copyfile(base_dir / name, out / name)


def copy_base(src: Path, out: Path) -> None:
    """The base model's own files (not the GGUF cache kept beside them)."""
    out.mkdir()
    for p in sorted(src.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            shutil.copyfile(p, out / p.name)


def write_merged(adapter: Path, base_ref: str, out: Path) -> None:
    """The adapter folded into the base weights: a plain model for AutoModelForCausalLM."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_ref, dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    tok_src = adapter if (adapter / "tokenizer_config.json").is_file() else base_ref
    AutoTokenizer.from_pretrained(str(tok_src)).save_pretrained(out)


def write_gguf(adapter: Path, base_ref: str, out: Path, base_out: Path | None) -> None:
    """The LoRA as GGUF (what a trainer publishes for llama.cpp nodes) and, when given, the base."""
    from transformers import AutoConfig

    from nodes.engines.base import EngineError
    from nodes.engines.gguf_export import export_base_gguf, export_lora_gguf

    cfg = AutoConfig.from_pretrained(base_ref)
    n_head = int(cfg.num_attention_heads)
    try:
        export_lora_gguf(adapter, out, n_head, int(getattr(cfg, "num_key_value_heads", None) or n_head))
        if base_out is not None:
            export_base_gguf(base_ref, base_out)
    except EngineError as e:
        raise CliError(f"--gguf: {e}; export without --gguf") from None


def write_provenance(run_dir: Path, version: int, version_dir: Path, manifest_path: Path | None, out: Path) -> bool:
    """The signed entry and config as signed (+ the manifest); then the provenance hook, if any."""
    out.mkdir()
    shutil.copyfile(version_dir / RECORD, out / RECORD)
    shutil.copyfile(version_dir / CONFIG, out / CONFIG)
    if manifest_path is not None:  # the trust root, named as in a node's provenance log dir
        shutil.copyfile(manifest_path, out / "manifest.toml")
    # The hook: swarm.provenance.export (the provenance log's module) adds the run's log, the
    # version's inclusion proof, the checkpoint and the witnesses' cosignatures to provenance/
    # (`out`, which holds version.dsse). Without that module the export carries the signed entry alone.
    try:
        from swarm.provenance.export import write_export_provenance
    except ModuleNotFoundError as e:
        if e.name not in ("swarm.provenance", "swarm.provenance.export"):
            raise  # the module exists but is broken: a bug to see, not to skip
        return False
    try:
        write_export_provenance(run_dir, version, out)
    except (OSError, ValueError) as e:
        raise CliError(f"provenance of v{version}: {e}; export from the run's out dir or the trainer's workdir, "
                       "which keep the provenance log") from None
    return True


README = """# Adapter version v{version} of run {run}

Exported by `swarm export` from {source}.

{listing}
## Load it

```python
{load}
```

{base_note}
The adapter weights (`adapter/adapter_model.safetensors`) are byte for byte the version the trainer
signed. `adapter/adapter_config.json` differs from the signed config
(`provenance/adapter_config.json`) only in `base_model_name_or_path` (and no `revision`, which PEFT
would read as the base model's revision). `provenance/version.dsse` is the trainer's signed entry
(DSSE envelope) naming the sha256 of every file of the version.
{audit}"""


def load_snippet(out: Path, merged: bool, gguf: bool, tiny: bool) -> str:
    lines = ["from peft import AutoPeftModelForCausalLM",
             f"model = AutoPeftModelForCausalLM.from_pretrained({str(out / 'adapter')!r})"]
    if merged:
        lines += ["", "from transformers import AutoModelForCausalLM",
                  f"merged = AutoModelForCausalLM.from_pretrained({str(out / 'merged')!r})"]
    if gguf:
        base = repr(str(out / "base.gguf")) if tiny else "'BASE.gguf'  # the base converted to GGUF"
        lines += ["", "import llama_cpp",
                  f"llm = llama_cpp.Llama(model_path={base}, lora_path={str(out / 'adapter.gguf')!r})"]
    return "\n".join(lines)


def run(args) -> int:
    run_dir, out = Path(args.run_dir), Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"{out} already exists and is not empty; pass a new --out directory (export never overwrites)")
    found = find_versions(run_dir)
    version = pick_version(found, args.version)
    version_dir = found[version]
    try:  # light checks first: the rest imports torch
        config = json.loads((version_dir / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CliError(f"{version_dir / CONFIG} is unreadable ({e}); export another --version") from None
    signed, manifest_path = find_manifest(run_dir, version_dir)
    base = resolve_base(args.base, signed, config)

    out = out.resolve()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        try:
            wrote = export(run_dir, version, version_dir, base, signed, manifest_path, out, args.merge, args.gguf)
        except OSError as e:  # a hub base that cannot be fetched (offline, unknown id, no access)
            if base.kind != "hub":
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CliError(f"cannot load base model {base.name}: {first}; export without --merge/--gguf, "
                           "or pass --base DIR with a local copy") from None
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for p in out.iterdir():
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        raise
    print(f"version  v{version} from {version_dir}")
    for path, what in wrote:
        print(f"wrote    {path}  ({what})")
    print("load with: python -c \"from peft import AutoPeftModelForCausalLM; "
          f"AutoPeftModelForCausalLM.from_pretrained('{out / 'adapter'}')\"   (more in {out / 'README.md'})")
    return 0


def export(run_dir: Path, version: int, version_dir: Path, base: Base, signed, manifest_path: Path | None,
           out: Path, merge: bool, gguf: bool) -> list[tuple[Path, str]]:
    wrote: list[tuple[Path, str]] = []
    if base.kind == "tiny":
        copy_base(Path(base.name), out / "base")
        base_ref, base_dir = str(out / "base"), out / "base"
    else:
        base_ref, base_dir = base.name, Path(base.name) if base.kind == "local" else None
    write_adapter(version_dir, out / "adapter", base_ref, base_dir)
    wrote.append((out / "adapter", f"PEFT LoRA on {base_ref}"))
    if base.kind == "tiny":
        wrote.append((out / "base", "the embedded tiny base model"))
    if merge:
        write_merged(out / "adapter", base_ref, out / "merged")
        wrote.append((out / "merged", "adapter merged into the base"))
    if gguf:
        base_gguf = out / "base.gguf" if base.kind == "tiny" else None
        write_gguf(out / "adapter", base_ref, out / "adapter.gguf", base_gguf)
        wrote.append((out / "adapter.gguf", "GGUF LoRA for llama.cpp"))
        if base_gguf is not None:
            wrote.append((base_gguf, "the base as GGUF for llama.cpp"))
    hooked = write_provenance(run_dir.resolve(), version, version_dir, manifest_path, out / "provenance")
    wrote.append((out / "provenance", "signed entry" + (" + log proof" if hooked else "")))

    listing = "".join(f"- `{p.relative_to(out)}`: {what}\n" for p, what in wrote)
    if base.kind == "tiny":
        note = (f"`adapter/adapter_config.json` names the base by the absolute path `{base_ref}` (PEFT resolves "
                "a relative path against the current directory, not the adapter's): if you move this directory, "
                "set `base_model_name_or_path` there to the new path of `base/`.\n")
    elif base.kind == "local":
        note = f"The base is the local directory `{base_ref}` (not copied here).\n"
    else:
        note = f"The base is the Hugging Face model `{base_ref}`: loading fetches it unless it is cached.\n"
    run_id = signed.manifest.run.id if signed is not None else "(manifest not found)"
    (out / "README.md").write_text(README.format(
        version=version, run=run_id, source=version_dir, listing=listing,
        load=load_snippet(out, merge, gguf, base.kind == "tiny"), base_note=note,
        audit=f"\nVerify it from this directory alone: `swarm audit {out}`.\n" if hooked else ""))
    return wrote
