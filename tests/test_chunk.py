"""The trajectory chunk wire type: round trip, one test per rejection, and fuzzing of the parser."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm.chunk import (
    ChunkLimits,
    TrajectoryChunk,
    TrajectoryGroup,
    chunk_digest,
    decode_chunk,
    encode_chunk,
    new_chunk_id,
)
from swarm.rejections import ChunkRejected

LIMITS = ChunkLimits(vocab_size=48)


def make_chunk(n_groups: int = 3, group_size: int = 4, seed: int = 0, **overrides) -> TrajectoryChunk:
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n_groups):
        prompt = tuple(int(x) for x in rng.integers(0, 48, rng.integers(2, 7)))
        comps = tuple(tuple(int(x) for x in rng.integers(0, 48, rng.integers(1, 8))) for _ in range(group_size))
        lps = tuple(tuple(float(-x) for x in rng.exponential(1.0, len(c))) for c in comps)
        groups.append(TrajectoryGroup(prompt, comps, lps))
    fields = {
        "run_id": "run-1", "chunk_id": new_chunk_id(), "producer_key_id": "ab" * 32, "policy_version": 5,
        "task": "sort-digits", "sampling": {"temperature": 1.0, "max_new_tokens": 7}, "created_at": 1.7e9,
        "groups": tuple(groups),
    }
    fields.update(overrides)
    return TrajectoryChunk(**fields)


def split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict, body: bytes) -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + body


def with_meta(data: bytes, **changes) -> bytes:
    header, body = split(data)
    meta = json.loads(header["__metadata__"]["chunk"])
    meta.update(changes)
    header["__metadata__"]["chunk"] = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    return join(header, body)


def reason(data, limits=LIMITS) -> str:
    with pytest.raises(ChunkRejected) as exc:
        decode_chunk(data, limits=limits)
    return exc.value.reason


def test_round_trip_is_exact_and_digest_stable():
    chunk = make_chunk()
    data = encode_chunk(chunk)
    back = decode_chunk(data, limits=LIMITS)
    assert back == chunk
    assert encode_chunk(back) == data
    assert chunk_digest(data) == chunk_digest(encode_chunk(back))
    assert len(chunk_digest(data)) == 64
    assert back.num_samples == 12


def test_logprobs_are_float32_on_construction():
    g = TrajectoryGroup((1, 2), ((3,),), ((-0.1,),))
    assert g.logprobs[0][0] == float(np.float32(-0.1))


def test_from_samples_requires_a_shared_prompt():
    class S:
        def __init__(self, p, c, lp):
            self.prompt_ids, self.completion_ids, self.logprobs = p, c, lp

    g = TrajectoryGroup.from_samples([S([1, 2], [3, 4], [-0.5, -0.2]), S([1, 2], [5], [-1.0])])
    assert g.prompt_ids == (1, 2) and len(g) == 2
    with pytest.raises(ChunkRejected):
        TrajectoryGroup.from_samples([S([1, 2], [3], [-0.5]), S([1, 3], [5], [-1.0])])


def test_oversize_is_checked_first():
    data = encode_chunk(make_chunk())
    assert reason(data, ChunkLimits(vocab_size=48, max_bytes=len(data) - 1)) == "oversize"
    assert reason(b"\xff" * 100, ChunkLimits(vocab_size=48, max_bytes=99)) == "oversize"


def test_not_bytes():
    assert reason("a string") == "schema"


def test_truncated():
    data = encode_chunk(make_chunk())
    assert reason(data[:-4]) == "format"
    assert reason(data[:5]) == "format"


def test_trailing_bytes():
    assert reason(encode_chunk(make_chunk()) + b"\0\0\0\0") == "format"


def test_unknown_schema_version():
    assert reason(with_meta(encode_chunk(make_chunk()), version=2)) == "unsupported"
    assert reason(with_meta(encode_chunk(make_chunk()), version=True)) == "unsupported"


def test_not_a_chunk():
    assert reason(with_meta(encode_chunk(make_chunk()), schema="something-else")) == "schema"


def test_extra_metadata_field():
    assert reason(with_meta(encode_chunk(make_chunk()), reward=1.0)) == "schema"


def test_noncanonical_metadata():
    header, body = split(encode_chunk(make_chunk()))
    meta = json.loads(header["__metadata__"]["chunk"])
    header["__metadata__"]["chunk"] = json.dumps(meta)  # spaces, unsorted
    assert reason(join(header, body)) == "schema"


@pytest.mark.parametrize("field,value,why", [
    ("chunk_id", "AB" * 16, "id"),
    ("chunk_id", "ab" * 15, "id"),
    ("producer_key_id", "zz" * 32, "id"),
    ("policy_version", -1, "schema"),
    ("policy_version", 1.5, "schema"),
    ("run_id", "", "schema"),
    ("run_id", 7, "schema"),
    ("task", "x" * 500, "schema"),
    ("created_at", "yesterday", "schema"),
    ("sampling", {"temperature": 1.0}, "schema"),
    ("sampling", {"temperature": -1.0, "max_new_tokens": 7}, "schema"),
    ("sampling", {"temperature": 1.0, "max_new_tokens": 0}, "schema"),
])
def test_bad_fields(field, value, why):
    assert reason(with_meta(encode_chunk(make_chunk()), **{field: value})) == why


def test_completion_longer_than_max_new_tokens():
    data = with_meta(encode_chunk(make_chunk()), sampling={"temperature": 1.0, "max_new_tokens": 1})
    assert reason(data) == "limit"


def test_wrong_dtype():
    header, body = split(encode_chunk(make_chunk()))
    header["logprobs"]["dtype"] = "I32"
    assert reason(join(header, body)) == "dtype"


def test_missing_and_extra_tensor():
    header, body = split(encode_chunk(make_chunk()))
    del header["logprobs"]
    assert reason(join(header, body)) == "schema"
    header, body = split(encode_chunk(make_chunk()))
    header["rewards"] = {"dtype": "F32", "shape": [0], "data_offsets": [len(body), len(body)]}
    assert reason(join(header, body)) == "schema"


def test_two_dimensional_tensor():
    header, body = split(encode_chunk(make_chunk()))
    n = header["logprobs"]["shape"][0]
    header["logprobs"]["shape"] = [1, n]
    assert reason(join(header, body)) == "shape"


def test_overlapping_tensors():
    header, body = split(encode_chunk(make_chunk()))
    a, b = header["prompt_offsets"], header["group_offsets"]  # same dtype and shape
    b["data_offsets"] = list(a["data_offsets"])
    assert reason(join(header, body)) == "format"


def _rewrite(data: bytes, name: str, fn) -> bytes:
    """Change tensor `name` in place (same dtype and size) to test the semantic checks."""
    header, body = split(data)
    begin, end = header[name]["data_offsets"]
    dtype = {"I32": "<i4", "I64": "<i8", "F32": "<f4"}[header[name]["dtype"]]
    arr = np.frombuffer(body[begin:end], dtype=dtype).copy()
    fn(arr)
    return join(header, body[:begin] + arr.tobytes() + body[end:])


def test_offsets_inconsistent_with_shapes():
    data = encode_chunk(make_chunk())
    assert reason(_rewrite(data, "completion_offsets", lambda a: a.__setitem__(-1, a[-1] - 1))) == "shape"
    assert reason(_rewrite(data, "group_offsets", lambda a: a.__setitem__(1, 0))) == "shape"  # empty group
    assert reason(_rewrite(data, "prompt_offsets", lambda a: a.__setitem__(1, -5))) == "shape"
    big = 2**63 - 1
    assert reason(_rewrite(data, "completion_offsets", lambda a: a.__setitem__(1, big))) == "shape"


def test_token_id_outside_vocab():
    data = encode_chunk(make_chunk())
    assert reason(_rewrite(data, "completion_ids", lambda a: a.__setitem__(0, 48))) == "vocab"
    assert reason(_rewrite(data, "prompt_ids", lambda a: a.__setitem__(0, -1))) == "vocab"


def test_tokens_after_eos():
    g = TrajectoryGroup((1, 5), ((7, 2), (7, 2, 9), (2,)), ((-0.1, -0.2), (-0.1, -0.2, -0.3), (-0.5,)))
    data = encode_chunk(make_chunk(groups=(g,)))
    assert decode_chunk(data, limits=LIMITS).groups == (g,)  # no stop ids given: not checked
    assert reason(data, ChunkLimits(vocab_size=48, stop_ids=frozenset({2}))) == "eos"
    ok = encode_chunk(make_chunk(groups=(TrajectoryGroup((1, 5), ((7, 2), (2,)), ((-0.1, -0.2), (-0.5,))),)))
    assert decode_chunk(ok, limits=ChunkLimits(vocab_size=48, stop_ids=frozenset({2}))).num_samples == 2


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf"), float("-inf")])
def test_bad_logprobs(bad):
    data = encode_chunk(make_chunk())
    assert reason(_rewrite(data, "logprobs", lambda a: a.__setitem__(2, bad))) == "logprobs"


def test_limits_on_counts_and_lengths():
    data = encode_chunk(make_chunk(n_groups=3, group_size=4))
    assert reason(data, ChunkLimits(vocab_size=48, max_groups=2)) == "limit"
    assert reason(data, ChunkLimits(vocab_size=48, max_group_size=3)) == "limit"
    assert reason(data, ChunkLimits(vocab_size=48, max_samples=11)) == "limit"
    assert reason(data, ChunkLimits(vocab_size=48, max_prompt_tokens=1)) == "limit"
    assert reason(data, ChunkLimits(vocab_size=48, max_completion_tokens=1)) == "limit"


def test_constructor_rejects_bad_chunks():
    with pytest.raises(ChunkRejected):
        make_chunk(groups=())
    with pytest.raises(ChunkRejected):
        TrajectoryGroup((1,), ((2, 3),), ((-0.1,),))
    with pytest.raises(ChunkRejected):
        TrajectoryGroup((1,), ((2,),), ((0.1,),))
    with pytest.raises(ChunkRejected):
        TrajectoryGroup((), ((2,),), ((-0.1,),))
    with pytest.raises(ChunkRejected):
        TrajectoryGroup((1,), ((True,),), ((-0.1,),))


def test_duplicate_header_key():
    data = encode_chunk(make_chunk())
    n = struct.unpack("<Q", data[:8])[0]
    text = data[8 : 8 + n].rstrip(b" ")
    dup = text[:-1] + b',"__metadata__":{"chunk":"{}"}}'
    dup += b" " * (-len(dup) % 8)
    assert reason(struct.pack("<Q", len(dup)) + dup + data[8 + n :]) == "format"


# -- fuzzing: whatever the bytes, only ChunkRejected comes out -------------------------------------

VALID = encode_chunk(make_chunk(n_groups=2, group_size=3))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_chunk_error(data: bytes) -> None:
    try:
        decode_chunk(data, limits=ChunkLimits(vocab_size=48, stop_ids=frozenset({2, 3})))
    except ChunkRejected as exc:
        assert exc.reason


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    _decode_or_chunk_error(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(VALID)))
def test_fuzz_mutated_encoding(flips, cut):
    data = bytearray(VALID)
    for pos, val in flips:
        data[pos] = val
    _decode_or_chunk_error(bytes(data[:cut]) if cut < 16 else bytes(data))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(st.sampled_from(["prompt_ids", "prompt_offsets", "group_offsets", "completion_ids",
                        "completion_offsets", "logprobs", "__metadata__"]),
       st.sampled_from(["dtype", "shape", "data_offsets", None]), JSON)
def test_fuzz_mutated_header(name, key, value):
    header, body = split(VALID)
    if key is None or name == "__metadata__":
        header[name] = value
    else:
        header[name][key] = value
    _decode_or_chunk_error(join(header, body))


@FUZZ
@given(st.sampled_from(sorted(json.loads(split(VALID)[0]["__metadata__"]["chunk"]))), JSON)
def test_fuzz_mutated_metadata(field, value):
    _decode_or_chunk_error(with_meta(VALID, **{field: value}))


@FUZZ
@given(st.sampled_from(["prompt_ids", "prompt_offsets", "group_offsets", "completion_ids",
                        "completion_offsets", "logprobs"]),
       st.integers(0, 40), st.integers(-(2**31), 2**31 - 1))
def test_fuzz_mutated_tensor_values(name, index, value):
    def poke(a):
        if index < len(a):
            a[index] = value
    _decode_or_chunk_error(_rewrite(VALID, name, poke))
