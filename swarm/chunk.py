"""The trajectory chunk: what a rollout node sends a trainer (DESIGN.md §4).

Wire form: one safetensors file (never pickle). Token ids and behaviour log-probs travel as flat
tensors cut by offset tensors; the scalar fields travel as canonical JSON in the safetensors
``__metadata__`` under the key ``"chunk"``. The decoder trusts nothing: it reads the safetensors
header itself (so every structural oddity is seen, not smoothed over), checks every field, dtype,
shape, offset, token id and log-prob, and raises only :class:`ChunkRejected` with a
`Reason` that the node can count (DESIGN.md §5).

Layout (G groups, N samples, all samples of a group share the group's prompt)::

    prompt_ids          int32 [sum of prompt lengths]
    prompt_offsets      int64 [G + 1]   prompt g = prompt_ids[prompt_offsets[g]:prompt_offsets[g+1]]
    group_offsets       int64 [G + 1]   group g holds samples group_offsets[g] .. group_offsets[g+1]-1
    completion_ids      int32 [sum of completion lengths]
    completion_offsets  int64 [N + 1]   sample i = completion_ids[completion_offsets[i]:...[i+1]]
    logprobs            float32, same shape as completion_ids: log p of each sampled token under
                        the distribution it was actually drawn from (after temperature)
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crypto.canonical import canonical_json, parse_json
from crypto.errors import CanonicalError
from swarm.rejections import ChunkRejected, Reason

CHUNK_TYPE = "application/vnd.echo-swarm.trajectory-chunk"
"""DSSE payload type of a signed chunk."""
ENVELOPE_ALLOWANCE = 16 << 10
"""Bytes a signed envelope may add to a chunk (binary DSSE: type, key ids, signatures)."""
SEAL_ALLOWANCE = 64 << 10
"""Bytes sealing may add to a signed chunk (HPKE header, one wrapped key per trainer)."""
SCHEMA = "echo-swarm/trajectory-chunk"
SCHEMA_VERSION = 1
META_KEY = "chunk"

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}")  # run ids and task ids: printable, short

# name -> (safetensors dtype, numpy little-endian dtype)
_TENSORS = {
    "prompt_ids": ("I32", "<i4"),
    "prompt_offsets": ("I64", "<i8"),
    "group_offsets": ("I64", "<i8"),
    "completion_ids": ("I32", "<i4"),
    "completion_offsets": ("I64", "<i8"),
    "logprobs": ("F32", "<f4"),
}
_META_FIELDS = {
    "schema", "version", "run_id", "chunk_id", "producer_key_id", "policy_version", "task",
    "sampling", "created_at",
}
_SAMPLING_FIELDS = {"temperature", "max_new_tokens"}
BASE_FORMATS = ("f32", "f16", "bf16", "q8_0", "q4_k_m")
"""`sampling.weights`: the format of the base the samples were drawn from (absent: f32). The
trainer judges the claimed log-probs with that format's measured tolerance."""




@dataclass(frozen=True)
class ChunkLimits:
    """What a trainer accepts. ``vocab_size`` has no default: token ids must be checked against
    the model actually being trained."""

    vocab_size: int
    max_bytes: int = 8 << 20
    max_groups: int = 1024
    max_group_size: int = 64
    max_samples: int = 8192
    max_prompt_tokens: int = 4096
    max_completion_tokens: int = 4096
    stop_ids: frozenset[int] = frozenset()
    """The model's EOS/stop ids: a completion may hold one only as its last token (a sampler stops
    there), so tokens after an EOS, which the verifier would never see but the trainer would
    train on, are refused."""

    @classmethod
    def for_run(cls, grpo, vocab_size: int, stop_ids: frozenset[int] = frozenset()) -> ChunkLimits:
        """The shape a chunk of this run may have, from the manifest's `[grpo]` table: a chunk is
        at most `prompts_per_chunk` groups of `group_size` samples of `max_new_tokens` each. These
        bound the trainer's work per chunk before any of it starts (decoding, scoring)."""
        groups, n = grpo.prompts_per_chunk, grpo.group_size
        limits = cls(vocab_size=vocab_size, max_groups=groups, max_group_size=n, max_samples=groups * n,
                     max_prompt_tokens=grpo.max_prompt_tokens, max_completion_tokens=grpo.max_new_tokens,
                     stop_ids=frozenset(stop_ids))
        return dataclasses.replace(limits, max_bytes=limits.wire_bytes())

    def wire_bytes(self) -> int:
        """An upper bound of the encoded size of a chunk within these limits (plus 16 KiB of
        safetensors header and metadata)."""
        tokens = self.max_groups * self.max_prompt_tokens + self.max_samples * self.max_completion_tokens
        offsets = 8 * (2 * (self.max_groups + 1) + self.max_samples + 1)
        return 4 * tokens + 4 * self.max_samples * self.max_completion_tokens + offsets + (16 << 10)

    @property
    def signed_bytes(self) -> int:
        """The largest signed envelope of a chunk (binary DSSE adds a few hundred bytes)."""
        return self.max_bytes + ENVELOPE_ALLOWANCE

    @property
    def sealed_bytes(self) -> int:
        """The largest sealed chunk: what the trainer's `chunks` protocol reads at most."""
        return self.signed_bytes + SEAL_ALLOWANCE


@dataclass(frozen=True)
class TrajectoryGroup:
    """Samples of one prompt: ``completions[i]`` was drawn with per-token ``logprobs[i]``.

    Log-probs are rounded to float32 on construction so that a chunk equals its own round trip.
    """

    prompt_ids: tuple[int, ...]
    completions: tuple[tuple[int, ...], ...]
    logprobs: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        prompt = _int_tuple(self.prompt_ids, "prompt_ids")
        comps = tuple(_int_tuple(c, "completion_ids") for c in _seq(self.completions, "completions"))
        lps = tuple(_f32_tuple(lp) for lp in _seq(self.logprobs, "logprobs"))
        if not prompt:
            raise ChunkRejected(Reason.SHAPE, "empty prompt")
        if not comps:
            raise ChunkRejected(Reason.SHAPE, "group without samples")
        if len(comps) != len(lps):
            raise ChunkRejected(Reason.SHAPE, "completions and logprobs differ in count")
        for c, lp in zip(comps, lps):
            if not c:
                raise ChunkRejected(Reason.SHAPE, "empty completion")
            if len(c) != len(lp):
                raise ChunkRejected(Reason.SHAPE, "a completion and its logprobs differ in length")
            if not all(math.isfinite(x) and x <= 0.0 for x in lp):
                raise ChunkRejected(Reason.LOGPROBS, "log-probs must be finite and <= 0")
        object.__setattr__(self, "prompt_ids", prompt)
        object.__setattr__(self, "completions", comps)
        object.__setattr__(self, "logprobs", lps)

    @classmethod
    def from_samples(cls, samples: Sequence[Any]) -> TrajectoryGroup:
        """Build from engine samples (anything with prompt_ids, completion_ids, logprobs)."""
        if not samples:
            raise ChunkRejected(Reason.SHAPE, "group without samples")
        prompt = tuple(samples[0].prompt_ids)
        if any(tuple(s.prompt_ids) != prompt for s in samples):
            raise ChunkRejected(Reason.SHAPE, "samples of a group must share the prompt")
        return cls(prompt, tuple(tuple(s.completion_ids) for s in samples),
                   tuple(tuple(s.logprobs) for s in samples))

    @classmethod
    def _checked(cls, prompt: tuple, completions: tuple, logprobs: tuple) -> TrajectoryGroup:
        """Skip `__post_init__`: for `decode_chunk`, which checked every invariant above with numpy
        (re-checking each token in Python cost 10x the transfer of a 1 MiB chunk)."""
        group = object.__new__(cls)
        for name, value in (("prompt_ids", prompt), ("completions", completions), ("logprobs", logprobs)):
            object.__setattr__(group, name, value)
        return group

    def __len__(self) -> int:
        return len(self.completions)


@dataclass(frozen=True)
class TrajectoryChunk:
    run_id: str
    chunk_id: str  # random 128-bit, lowercase hex
    producer_key_id: str  # sha256 of the producer's public key, lowercase hex
    policy_version: int
    task: str
    sampling: dict  # {"temperature": float > 0, "max_new_tokens": int >= 1}
    created_at: float  # unix seconds
    groups: tuple[TrajectoryGroup, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not _NAME.fullmatch(self.run_id):
            raise ChunkRejected(Reason.SCHEMA, "run_id must be a short printable name")
        if not isinstance(self.task, str) or not _NAME.fullmatch(self.task):
            raise ChunkRejected(Reason.SCHEMA, "task must be a short printable name")
        if not isinstance(self.chunk_id, str) or not _HEX32.fullmatch(self.chunk_id):
            raise ChunkRejected(Reason.ID, "chunk_id must be 32 lowercase hex digits")
        if not isinstance(self.producer_key_id, str) or not _HEX64.fullmatch(self.producer_key_id):
            raise ChunkRejected(Reason.ID, "producer_key_id must be 64 lowercase hex digits")
        if type(self.policy_version) is not int or not 0 <= self.policy_version < 2**62:
            raise ChunkRejected(Reason.SCHEMA, "policy_version must be a non-negative int")
        created = self.created_at
        if type(created) is int:
            created = float(created)
        if type(created) is not float or not math.isfinite(created) or created < 0:
            raise ChunkRejected(Reason.SCHEMA, "created_at must be a finite non-negative float")
        object.__setattr__(self, "created_at", created)
        object.__setattr__(self, "sampling", _check_sampling(self.sampling))
        groups = tuple(_seq(self.groups, "groups"))
        if not groups:
            raise ChunkRejected(Reason.SHAPE, "chunk without groups")
        if not all(isinstance(g, TrajectoryGroup) for g in groups):
            raise ChunkRejected(Reason.SCHEMA, "groups must be TrajectoryGroup")
        cap = self.sampling["max_new_tokens"]
        if any(len(c) > cap for g in groups for c in g.completions):
            raise ChunkRejected(Reason.SHAPE, "a completion is longer than sampling.max_new_tokens")
        object.__setattr__(self, "groups", groups)

    @property
    def num_samples(self) -> int:
        return sum(len(g) for g in self.groups)


def _seq(value: Any, what: str) -> Iterable:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ChunkRejected(Reason.SCHEMA, f"{what} must be a sequence")
    return value


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    out = tuple(int(x) if isinstance(x, np.integer) else x for x in _seq(value, what))
    if not all(type(x) is int for x in out):
        raise ChunkRejected(Reason.SCHEMA, f"{what} must hold ints")
    if any(not 0 <= x < 2**31 for x in out):
        raise ChunkRejected(Reason.VOCAB, f"{what} out of int32 range")
    return out


def _f32_tuple(value: Any) -> tuple[float, ...]:
    try:
        arr = np.asarray(list(_seq(value, "logprobs")), dtype=np.float64)
    except (TypeError, ValueError):
        raise ChunkRejected(Reason.SCHEMA, "logprobs must hold numbers") from None
    if arr.ndim != 1:
        raise ChunkRejected(Reason.SCHEMA, "logprobs must be flat")
    with np.errstate(over="ignore"):
        return tuple(float(x) for x in arr.astype(np.float32))


def _check_sampling(value: Any) -> dict:
    if not isinstance(value, dict) or set(value) - {"weights"} != _SAMPLING_FIELDS:
        raise ChunkRejected(Reason.SCHEMA, f"sampling must have exactly {sorted(_SAMPLING_FIELDS)} "
                                           "and optionally weights")
    weights = value.get("weights", "f32")
    if weights not in BASE_FORMATS:
        raise ChunkRejected(Reason.SCHEMA, f"sampling.weights must be one of {BASE_FORMATS}")
    temp, max_new = value["temperature"], value["max_new_tokens"]
    if type(temp) is int:
        temp = float(temp)
    if type(temp) is not float or not math.isfinite(temp) or not 0.0 < temp <= 100.0:
        raise ChunkRejected(Reason.SCHEMA, "sampling.temperature must be a float in (0, 100]")
    if type(max_new) is not int or not 1 <= max_new <= 1 << 20:
        raise ChunkRejected(Reason.SCHEMA, "sampling.max_new_tokens must be a positive int")
    checked = {"temperature": temp, "max_new_tokens": max_new}
    return checked if "weights" not in value else {**checked, "weights": weights}


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype("<i8")


def encode_chunk(chunk: TrajectoryChunk) -> bytes:
    """The wire bytes of ``chunk`` (safetensors with canonical-JSON metadata)."""
    from safetensors.numpy import save

    if not isinstance(chunk, TrajectoryChunk):
        raise ChunkRejected(Reason.SCHEMA, "encode_chunk takes a TrajectoryChunk")
    comps = [c for g in chunk.groups for c in g.completions]
    lps = [lp for g in chunk.groups for lp in g.logprobs]
    tensors = {
        "prompt_ids": np.asarray([t for g in chunk.groups for t in g.prompt_ids], dtype="<i4"),
        "prompt_offsets": _offsets([len(g.prompt_ids) for g in chunk.groups]),
        "group_offsets": _offsets([len(g) for g in chunk.groups]),
        "completion_ids": np.asarray([t for c in comps for t in c], dtype="<i4"),
        "completion_offsets": _offsets([len(c) for c in comps]),
        "logprobs": np.asarray([x for lp in lps for x in lp], dtype="<f4"),
    }
    meta = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "run_id": chunk.run_id,
        "chunk_id": chunk.chunk_id,
        "producer_key_id": chunk.producer_key_id,
        "policy_version": chunk.policy_version,
        "task": chunk.task,
        "sampling": chunk.sampling,
        "created_at": chunk.created_at,
    }
    return save(tensors, metadata={META_KEY: canonical_json(meta).decode("utf-8")})


def chunk_digest(data: bytes) -> str:
    """sha256 (hex) of the wire bytes: what provenance entries name and replay checks key on."""
    return hashlib.sha256(bytes(data)).hexdigest()


def decode_chunk(data: bytes, *, limits: ChunkLimits) -> TrajectoryChunk:
    """Parse untrusted wire bytes; every failure is a :class:`ChunkRejected`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ChunkRejected(Reason.SCHEMA, f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_bytes:
        raise ChunkRejected(Reason.OVERSIZE, f"{len(data)} bytes > {limits.max_bytes}")
    meta, arrays = _read_safetensors(data)
    fields = _parse_meta(meta)
    return _build(fields, arrays, limits)


def _read_safetensors(data: bytes) -> tuple[str, dict[str, np.ndarray]]:
    """Strict safetensors reader: exact tensor set, dtypes, 1-D shapes, contiguous coverage."""
    if len(data) < 8:
        raise ChunkRejected(Reason.FORMAT, "shorter than the safetensors header length")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ChunkRejected(Reason.FORMAT, "header length past the end")
    try:
        header = parse_json(data[8 : 8 + n].rstrip(b" "), max_size=n)
    except CanonicalError as exc:
        raise ChunkRejected(Reason.FORMAT, f"header: {exc}") from None
    if not isinstance(header, dict):
        raise ChunkRejected(Reason.FORMAT, "header is not an object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or set(meta) != {META_KEY} or not isinstance(meta[META_KEY], str):
        raise ChunkRejected(Reason.SCHEMA, f"__metadata__ must hold exactly {META_KEY!r}")
    if set(header) != set(_TENSORS):
        raise ChunkRejected(Reason.SCHEMA, f"tensors must be exactly {sorted(_TENSORS)}")
    body = memoryview(data)[8 + n :]
    spans = []
    arrays = {}
    for name, (st_dtype, np_dtype) in _TENSORS.items():
        info = header[name]
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ChunkRejected(Reason.FORMAT, f"{name}: bad tensor entry")
        if info["dtype"] != st_dtype:
            raise ChunkRejected(Reason.DTYPE, f"{name} must be {st_dtype}")
        shape, offs = info["shape"], info["data_offsets"]
        if not (isinstance(shape, list) and len(shape) == 1 and type(shape[0]) is int and shape[0] >= 0):
            raise ChunkRejected(Reason.SHAPE, f"{name} must be 1-D")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)):
            raise ChunkRejected(Reason.FORMAT, f"{name}: bad data_offsets")
        begin, end = offs
        itemsize = np.dtype(np_dtype).itemsize
        if not 0 <= begin <= end <= len(body) or end - begin != shape[0] * itemsize:
            raise ChunkRejected(Reason.FORMAT, f"{name}: data_offsets do not match shape")
        spans.append((begin, end))
        arrays[name] = np.frombuffer(body[begin:end], dtype=np_dtype)
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise ChunkRejected(Reason.FORMAT, "tensor data overlaps or leaves gaps")
        pos = end
    if pos != len(body):
        raise ChunkRejected(Reason.FORMAT, "trailing bytes after tensor data")
    return meta[META_KEY], arrays


def _parse_meta(text: str) -> dict:
    raw = text.encode("utf-8", errors="surrogatepass")
    try:
        meta = parse_json(raw, max_size=64 << 10)
    except CanonicalError as exc:
        raise ChunkRejected(Reason.SCHEMA, f"metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise ChunkRejected(Reason.SCHEMA, "metadata is not an object")
    if meta.get("schema") != SCHEMA:
        raise ChunkRejected(Reason.SCHEMA, "not a trajectory chunk")
    if meta.get("version") != SCHEMA_VERSION or type(meta.get("version")) is not int:
        raise ChunkRejected(Reason.UNSUPPORTED, f"unsupported chunk version {str(meta.get('version'))[:20]}")
    if set(meta) != _META_FIELDS:
        raise ChunkRejected(Reason.SCHEMA, "unexpected or missing metadata fields")
    try:
        canonical = canonical_json(meta)
    except CanonicalError as exc:
        raise ChunkRejected(Reason.SCHEMA, f"metadata: {exc}") from None
    if canonical != raw:
        raise ChunkRejected(Reason.SCHEMA, "metadata is not canonical JSON")
    return meta


def _check_offsets(off: np.ndarray, total: int, name: str) -> np.ndarray:
    """Offsets start at 0, strictly increase (no empty pieces) and end at ``total``."""
    if len(off) < 2 or off[0] != 0 or off[-1] != total or off.min() < 0 or off.max() > total:
        raise ChunkRejected(Reason.SHAPE, f"{name} inconsistent")
    if not np.all(np.diff(off) > 0):
        raise ChunkRejected(Reason.SHAPE, f"{name} inconsistent")
    return np.diff(off)


def _build(meta: dict, a: dict[str, np.ndarray], limits: ChunkLimits) -> TrajectoryChunk:
    sampling = _check_sampling(meta["sampling"])
    n_groups = len(a["group_offsets"]) - 1
    n_samples = len(a["completion_offsets"]) - 1
    if n_groups > limits.max_groups or n_samples > limits.max_samples:
        raise ChunkRejected(Reason.LIMIT, "too many groups or samples")
    if len(a["prompt_offsets"]) != n_groups + 1:
        raise ChunkRejected(Reason.SHAPE, "prompt_offsets and group_offsets differ in length")
    if len(a["logprobs"]) != len(a["completion_ids"]):
        raise ChunkRejected(Reason.SHAPE, "logprobs and completion_ids differ in length")
    group_sizes = _check_offsets(a["group_offsets"], n_samples, "group_offsets")
    prompt_lens = _check_offsets(a["prompt_offsets"], len(a["prompt_ids"]), "prompt_offsets")
    comp_lens = _check_offsets(a["completion_offsets"], len(a["completion_ids"]), "completion_offsets")
    if group_sizes.max() > limits.max_group_size:
        raise ChunkRejected(Reason.LIMIT, "group too large")
    if prompt_lens.max() > limits.max_prompt_tokens:
        raise ChunkRejected(Reason.LIMIT, "prompt too long")
    if comp_lens.max() > min(limits.max_completion_tokens, sampling["max_new_tokens"]):
        raise ChunkRejected(Reason.LIMIT, "completion too long")
    for name in ("prompt_ids", "completion_ids"):
        ids = a[name]
        if ids.min() < 0 or ids.max() >= limits.vocab_size:
            raise ChunkRejected(Reason.VOCAB, f"{name} outside [0, {limits.vocab_size})")
    if limits.stop_ids:
        comp = a["completion_ids"]
        last = np.zeros(len(comp), dtype=bool)
        last[a["completion_offsets"][1:] - 1] = True
        if np.any(np.isin(comp, np.fromiter(limits.stop_ids, dtype=np.int64)) & ~last):
            raise ChunkRejected(Reason.EOS, "tokens after a stop token")
    lp = a["logprobs"]
    if not np.all(np.isfinite(lp)) or np.any(lp > 0):
        raise ChunkRejected(Reason.LOGPROBS, "log-probs must be finite and <= 0")
    prompts = a["prompt_ids"].tolist()
    comps = a["completion_ids"].tolist()
    lps = lp.tolist()
    po, go, co = a["prompt_offsets"].tolist(), a["group_offsets"].tolist(), a["completion_offsets"].tolist()
    groups = []
    for g in range(n_groups):
        idx = range(go[g], go[g + 1])
        groups.append(TrajectoryGroup._checked(
            tuple(prompts[po[g] : po[g + 1]]),
            tuple(tuple(comps[co[i] : co[i + 1]]) for i in idx),
            tuple(tuple(lps[co[i] : co[i + 1]]) for i in idx),
        ))
    return TrajectoryChunk(
        run_id=meta["run_id"], chunk_id=meta["chunk_id"], producer_key_id=meta["producer_key_id"],
        policy_version=meta["policy_version"], task=meta["task"], sampling=sampling,
        created_at=meta["created_at"], groups=tuple(groups),
    )


def new_chunk_id() -> str:
    """A fresh random 128-bit chunk id."""
    import secrets

    return secrets.token_hex(16)
