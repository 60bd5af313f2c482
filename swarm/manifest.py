"""The run manifest: one signed TOML file that defines a swarm.

The owner writes it with `swarm init`; every node verifies it before joining. The signature is
Ed25519 over DSSE's PAE of the canonical JSON of every table except `[signature]`, and the
sha256 of that canonical JSON (the *digest*) names the swarm: it prefixes every DHT key and is
stamped into every record, so nodes of differently configured runs can never mix.

The section dataclasses below are the typed run config: each field's default and docstring are
the one declaration of that setting. `swarm init` takes its flags' defaults and help from them,
scenarios their `[scenario]` defaults, and `nodes.runconfig.build_manifest` builds a manifest
from sections for `swarm init`, `swarm simulate` and `swarm baseline` alike.
"""
from __future__ import annotations

import ast
import base64
import dataclasses
import functools
import hashlib
import itertools
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from crypto.canonical import canonical_json
from swarm.sync import SYNC_MODES

if TYPE_CHECKING:
    from crypto.identity import Identity

MANIFEST_TYPE = "application/vnd.echo-swarm.manifest+json"
MAX_MANIFEST_BYTES = 64 * 1024
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ManifestError(ValueError):
    """The manifest is unreadable, malformed, or its signature does not verify."""


@dataclass(frozen=True)
class RunSection:
    """`[run]`: what the run is and who owns it."""

    id: str
    """Human-chosen run name; letters, digits, '.', '_' and '-'."""
    owner_key_id: str
    """sha256 of the owner's Ed25519 public key; must match the signer."""
    seed: int = 0
    """Seeds prompts, sampling and initialisation: a run is reproducible from it."""


@dataclass(frozen=True)
class ModelSection:
    """`[model]`: the base model every node loads."""

    base: str = "tiny"
    """Base model: 'tiny' (the embedded model), a local Hugging Face directory, or the id of one in
    the local Hugging Face cache."""
    sha256: str = ""
    """Digest of the base: every weight shard, config and tokenizer file (nodes.models.pinning);
    `swarm init` fills it in and nodes refuse a base that differs."""
    probe: dict = field(default_factory=dict)
    """The base's own samples on fixed prompts (prompt_ids, completion_ids, logprobs; f32): a
    rollout given a GGUF copy of the base (`--base-gguf`, e.g. quantized) reproduces it within its
    format's tolerance before it generates (`nodes.models.probe`). `swarm init` fills it in."""


@dataclass(frozen=True)
class TaskSection:
    """`[task]`: what the swarm learns, and how rewards are verified."""

    name: str = "sort-digits"
    """Task: 'sort-digits' (the built-in demo) or 'jsonl' (prompts and answers from a file)."""
    options: dict = field(default_factory=dict)
    """The task's own settings, e.g. min_digits/max_digits (sort-digits), path/match/sha256 (jsonl)."""


@dataclass(frozen=True)
class LoraSection:
    """`[lora]`: the shape of the adapter that is trained and shared."""

    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA alpha: the adapter's update is scaled by alpha / r."""
    targets: tuple = LORA_TARGETS
    """Projection modules that get a LoRA adapter (a subset of q/k/v/o/gate/up/down_proj)."""


@dataclass(frozen=True)
class GrpoSection:
    """`[grpo]`: the trainer's batch and optimiser, and the rollouts' sampling."""

    prompts_per_step: int = 32
    """Prompt groups in one trainer step's batch."""
    group_size: int = 8
    """Completions sampled per prompt; advantages are relative to the group, so at least 2."""
    max_new_tokens: int = 7
    """Most tokens generated per completion."""
    prompts_per_chunk: int = 4
    """Prompt groups per trajectory chunk: with group_size and max_new_tokens, the largest chunk a
    trainer accepts (checked before any work on it); at most prompts_per_step."""
    max_prompt_tokens: int = 512
    """Longest prompt, in tokens, a trainer accepts in a chunk."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts; the trainer scores log-probs at the same temperature."""
    lr: float = 2e-3
    """Adam learning rate of the LoRA weights."""
    clip: float = 0.2
    """PPO clip range: the ratio new / behaviour policy is clipped to [1 - clip, 1 + clip]."""
    kl_coef: float = 0.0
    """Weight of the KL penalty (k3 estimator) to the base model; 0 turns it off."""
    grad_clip: float = 1.0
    """Largest global gradient norm of a step; larger gradients are scaled down to it."""
    steps: int = 100
    """Trainer steps in the run; the trainer stops publishing after the last one."""


@dataclass(frozen=True)
class SyncSection:
    """`[sync]`: ECHO's sync mode and its staleness bound (the rules are in swarm.sync)."""

    mode: str = "async"
    """'sequential' (on-policy, pull) or 'async' (streaming, staleness bounded by S)."""
    staleness: int = 2
    """S: in async mode a chunk made with version x is used at step t only if t - x <= S."""
    publish_every: int = 1
    """kappa: the trainer publishes a new adapter version every kappa steps."""


ONE_TRAINER = "trainers cannot yet train together (two would publish competing adapter chains)"
"""Why a run has exactly one trainer slot, for every message that refuses more."""


@dataclass(frozen=True)
class SwarmSection:
    """`[swarm]`: who may join and in which role, and how often nodes announce themselves."""

    trainer_slots: int = 1
    """Nodes that train at once. Must be 1 for now: trainers cannot yet train together (two would
    publish competing adapter chains)."""
    trainer_keys: tuple = ()
    """Key ids allowed to train, in priority order (the first wins when two claim the slot at
    once); `swarm init` writes the owner's key when none is given. Empty: nobody may train,
    unless open_training is set."""
    open_training: bool = False
    """UNSAFE opt-in: any member may train, and the trainer receives every chunk and signs the
    adapter every node runs. Only with trainer_keys empty; for throwaway test swarms."""
    rollout_keys: tuple = ()
    """Key ids allowed to roll out; empty means an open swarm."""
    min_trainer_memory_gb: float = 1.0
    """Least memory (GB) a node must have for training to be eligible as a trainer."""
    announce_period_s: float = 5.0
    """Seconds between a node's NodeInfo refreshes; records expire after max(2 x period, skew)."""
    clock_skew_s: float = 5.0
    """Clock difference tolerated between nodes, seconds: the shortest lifetime of a record."""


@dataclass(frozen=True)
class RunManifest:
    run: RunSection
    model: ModelSection = ModelSection()
    task: TaskSection = TaskSection()
    lora: LoraSection = LoraSection()
    grpo: GrpoSection = GrpoSection()
    sync: SyncSection = SyncSection()
    swarm: SwarmSection = SwarmSection()

    @property
    def record_ttl(self) -> float:
        return max(2 * self.swarm.announce_period_s, self.swarm.clock_skew_s)

    def trainer_allowed(self, key_id: str) -> bool:
        """Training is authorised, never claimed: a listed key, or any key only when the owner
        opted in to open training."""
        return self.swarm.open_training or key_id in self.swarm.trainer_keys

    def member_allowed(self, key_id: str) -> bool:
        """Closed swarms list their rollout keys; trainers are always members."""
        if not self.swarm.rollout_keys:
            return True
        return key_id in self.swarm.rollout_keys or key_id in self.swarm.trainer_keys

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


@dataclass(frozen=True)
class SignedManifest:
    manifest: RunManifest
    digest: str
    """sha256 hex of the canonical JSON body: the swarm's name."""
    owner_public_key: bytes

    @property
    def namespace(self) -> str:
        """Prefix of every DHT key of this run."""
        return f"echo-swarm/{self.manifest.run.id}/{self.digest[:16]}"


_SECTIONS = {
    "run": RunSection,
    "model": ModelSection,
    "task": TaskSection,
    "lora": LoraSection,
    "grpo": GrpoSection,
    "sync": SyncSection,
    "swarm": SwarmSection,
}


def field_docs(cls: type) -> dict[str, str]:
    """Each field of a dataclass to its docstring (the string under it), whitespace collapsed:
    the one description of a setting, also shown by `swarm init --help`."""
    return _attribute_docs(sys.modules[cls.__module__].__file__).get(cls.__qualname__, {})


@functools.cache
def _attribute_docs(path: str) -> dict[str, dict[str, str]]:
    """Class name -> {attribute: docstring} for every class of a source file (parsed once)."""
    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(Path(path).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef):
            docs[node.name] = {
                a.target.id: " ".join(b.value.value.split())
                for a, b in itertools.pairwise(node.body)
                if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)
            }
    return docs


def parse_manifest(body: dict[str, Any]) -> RunManifest:
    """Typed, validated manifest from a plain dict; errors name the offending field."""
    unknown = set(body) - set(_SECTIONS)
    if unknown:
        raise ManifestError(f"unknown table [{min(unknown)}]; known: {', '.join(_SECTIONS)}")
    if "run" not in body:
        raise ManifestError("missing table [run] (needs id and owner_key_id)")
    sections = {name: _section(name, cls, body.get(name, {})) for name, cls in _SECTIONS.items()}
    manifest = RunManifest(**sections)
    _check(manifest)
    return manifest


def _section(name: str, cls: type, raw: Any):
    if not isinstance(raw, dict):
        raise ManifestError(f"[{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ManifestError(f"unknown field {name}.{key}; known: {', '.join(fields)}")
    values = {}
    for key, value in raw.items():
        default = fields[key].default
        if default is dataclasses.MISSING and fields[key].default_factory is not dataclasses.MISSING:
            default = fields[key].default_factory()
        values[key] = _coerce(f"{name}.{key}", value, default)
    try:
        return cls(**values)
    except TypeError as e:
        raise ManifestError(f"[{name}]: {e}") from None


def _coerce(where: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool) or default is dataclasses.MISSING and isinstance(value, bool):
        if not isinstance(value, bool):
            raise ManifestError(f"{where} must be true or false")
        return value
    if isinstance(default, int) or (default is dataclasses.MISSING and isinstance(value, int)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(f"{where} must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ManifestError(f"{where} must be a number")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ManifestError(f"{where} must be a list of strings")
        return tuple(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ManifestError(f"{where} must be a table")
        return dict(value)
    if not isinstance(value, str):
        raise ManifestError(f"{where} must be a string")
    return value


def _probe_ok(probe: dict) -> bool:
    if not probe:
        return True
    if set(probe) != {"prompt_ids", "completion_ids", "logprobs"}:
        return False
    prompts, completions, logprobs = probe["prompt_ids"], probe["completion_ids"], probe["logprobs"]

    def ids(x) -> bool:
        return isinstance(x, list) and 1 <= len(x) <= 4096 and all(type(t) is int and t >= 0 for t in x)

    def lps(x, c) -> bool:
        return isinstance(x, list) and len(x) == len(c) and all(
            type(v) in (int, float) and math.isfinite(v) and v <= 0 for v in x)

    return (all(isinstance(x, list) and 1 <= len(x) <= 64 for x in (prompts, completions, logprobs))
            and len(prompts) == len(completions) == len(logprobs)
            and all(ids(p) and ids(c) and lps(lp, c) for p, c, lp in zip(prompts, completions, logprobs)))


def _check(m: RunManifest) -> None:
    rules = [
        (_RUN_ID.match(m.run.id), "run.id must be 1-64 letters, digits, '.', '_' or '-'"),
        (_HEX64.match(m.run.owner_key_id), "run.owner_key_id must be 64 hex characters"),
        (not m.model.sha256 or _HEX64.match(m.model.sha256), "model.sha256 must be 64 hex characters"),
        (_probe_ok(m.model.probe), ("model.probe must be empty or hold prompt_ids and completion_ids (lists of "
                                    "token id lists) and logprobs (a number <= 0 per completion token)")),
        (m.sync.mode in SYNC_MODES, f"sync.mode must be one of {SYNC_MODES}"),
        (m.sync.staleness >= 0, "sync.staleness must be >= 0"),
        (m.sync.publish_every >= 1, "sync.publish_every must be >= 1"),
        (m.swarm.trainer_slots == 1, f"swarm.trainer_slots must be 1: {ONE_TRAINER}"),
        (m.swarm.announce_period_s > 0, "swarm.announce_period_s must be > 0"),
        (all(_HEX64.match(k) for k in m.swarm.trainer_keys), "swarm.trainer_keys must be key ids (64 hex)"),
        (all(_HEX64.match(k) for k in m.swarm.rollout_keys), "swarm.rollout_keys must be key ids (64 hex)"),
        (not (m.swarm.open_training and m.swarm.trainer_keys),
         ("swarm.open_training and swarm.trainer_keys exclude each other: list the keys that may train, "
          "or open training to every member, not both")),
        (m.lora.r >= 1 and m.lora.alpha >= 1, "lora.r and lora.alpha must be >= 1"),
        (set(m.lora.targets) <= set(LORA_TARGETS) and m.lora.targets, f"lora.targets must be within {LORA_TARGETS}"),
        (m.grpo.group_size >= 2, "grpo.group_size must be >= 2 (advantages are relative to the group)"),
        (m.grpo.prompts_per_step >= 1, "grpo.prompts_per_step must be >= 1"),
        (1 <= m.grpo.max_new_tokens <= 4096, "grpo.max_new_tokens must be in 1..4096"),
        (1 <= m.grpo.prompts_per_chunk <= m.grpo.prompts_per_step,
         "grpo.prompts_per_chunk must be in 1..grpo.prompts_per_step"),
        (1 <= m.grpo.max_prompt_tokens <= 32768, "grpo.max_prompt_tokens must be in 1..32768"),
        (m.grpo.temperature > 0, "grpo.temperature must be > 0"),
        (m.grpo.lr > 0, "grpo.lr must be > 0"),
        (0 < m.grpo.clip < 1, "grpo.clip must be in (0, 1)"),
        (m.grpo.kl_coef >= 0, "grpo.kl_coef must be >= 0"),
        (m.grpo.grad_clip > 0, "grpo.grad_clip must be > 0"),
        (m.grpo.steps >= 1, "grpo.steps must be >= 1"),
    ]
    for ok, message in rules:
        if not ok:
            raise ManifestError(message)


def manifest_body(manifest: RunManifest) -> bytes:
    return canonical_json(manifest.to_dict())


def sign_manifest(manifest: RunManifest, owner: Identity) -> dict[str, Any]:
    """The manifest as a TOML-ready dict with its `[signature]` table."""
    from crypto.envelope import pae  # signing only: `swarm --help` reads this module's schema

    if owner.key_id != manifest.run.owner_key_id:
        raise ManifestError("run.owner_key_id does not match the signing key")
    signature = owner.sign(pae(MANIFEST_TYPE, manifest_body(manifest)))
    doc = manifest.to_dict()
    doc["signature"] = {
        "public_key": owner.public_key.hex(),
        "sig": base64.b64encode(signature).decode(),
    }
    return doc


def write_manifest(doc: dict[str, Any], path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_toml(doc))
    os.replace(tmp, path)


def load_manifest(path: str | Path) -> SignedManifest:
    """Read, verify and type a manifest file; any failure is a ManifestError naming the problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ManifestError(f"cannot read manifest {path}: {e.strerror}; create one with `swarm init`") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest {path} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ManifestError(f"manifest {path} is not valid TOML: {e}") from None
    return verify_manifest(doc)


def verify_manifest(doc: dict[str, Any]) -> SignedManifest:
    from crypto.envelope import pae
    from crypto.identity import key_id_of, verify_signature

    doc = dict(doc)
    sig = doc.pop("signature", None)
    if not isinstance(sig, dict) or not isinstance(sig.get("public_key"), str) or not isinstance(sig.get("sig"), str):
        raise ManifestError("manifest is not signed: missing [signature] public_key/sig (sign it with `swarm init`)")
    manifest = parse_manifest(doc)
    try:
        public_key = bytes.fromhex(sig["public_key"])
        signature = base64.b64decode(sig["sig"], validate=True)
    except ValueError:
        raise ManifestError("signature.public_key or signature.sig is not valid hex/base64") from None
    if key_id_of(public_key) != manifest.run.owner_key_id:
        raise ManifestError("signature.public_key is not the key named by run.owner_key_id")
    body = manifest_body(manifest)
    if not verify_signature(public_key, signature, pae(MANIFEST_TYPE, body)):
        swarm = doc.get("swarm")
        if isinstance(swarm, dict) and "open_training" not in swarm:
            raise ManifestError("manifest signature does not verify: the file was changed after `swarm init`, or "
                                "it predates swarm.open_training (signed without it); re-create it with `swarm init`")
        raise ManifestError("manifest signature does not verify: the file was changed after `swarm init`")
    return SignedManifest(manifest, hashlib.sha256(body).hexdigest(), public_key)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_toml(doc: dict[str, Any]) -> str:
    """Minimal TOML writer for our manifest shape (tables of scalars, lists, one nested table)."""
    lines: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in nested.items():
            emit(f"{prefix}.{k}", v)

    for name, table in doc.items():
        emit(name, table)
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return canonical_json(v).decode()  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
