"""crypto.canonical: one byte encoding out, strict parsing in."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.canonical import canonical_json, parse_json
from crypto.errors import CanonicalError

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8), children, max_size=4),
    max_leaves=20,
)


def test_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": "é", "c": [1, {"z": None, "y": True}]}) == (
        '{"a":"é","b":1,"c":[1,{"y":true,"z":null}]}'.encode()
    )


def test_tuple_is_a_list() -> None:
    assert canonical_json({"k": (1, 2)}) == b'{"k":[1,2]}'


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"a": [1, math.nan]}])
def test_non_finite_numbers_refused(value) -> None:
    with pytest.raises(CanonicalError, match="non-finite"):
        canonical_json(value)


@pytest.mark.parametrize("key", [1, True, None, 1.5, (1, 2)])
def test_non_string_keys_refused(key) -> None:
    with pytest.raises(CanonicalError, match="not a string"):
        canonical_json({"nested": {key: 1}})


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object(), "lone \ud800 surrogate"])
def test_unencodable_values_refused(value) -> None:
    with pytest.raises(CanonicalError):
        canonical_json({"v": value})


def test_cycle_refused() -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(CanonicalError):
        canonical_json(loop)


@pytest.mark.parametrize(
    "text",
    [b'{"a":1,"a":2}', b'{"x":{"a":1,"b":2,"a":3}}', b'[{"k":1},{"k":1,"k":1}]'],
)
def test_duplicate_keys_refused(text: bytes) -> None:
    with pytest.raises(CanonicalError, match="duplicate"):
        parse_json(text, max_size=100)


@pytest.mark.parametrize("text", [b"NaN", b"[Infinity]", b'{"a":-Infinity}', b"1e999", b"[-1e400]"])
def test_non_finite_refused_on_parse(text: bytes) -> None:
    with pytest.raises(CanonicalError, match="non-finite"):
        parse_json(text, max_size=100)


def test_size_checked_before_anything() -> None:
    with pytest.raises(CanonicalError, match="over the limit of 10"):
        parse_json(b"\xff" * 11, max_size=10)  # invalid UTF-8 too, but the size is reported
    assert parse_json(b"[1,2,3,4]", max_size=9) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b'{"a":"\xff"}', "UTF-8"),
        (b'{"a":1', "malformed"),
        (b"", "malformed"),
        (b'{"a":1} x', "malformed"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed"),
        (b"1" * 5000, "malformed"),
        (b'"ctrl \x01 char"', "malformed"),
    ],
)
def test_malformed_refused(text: bytes, match: str) -> None:
    with pytest.raises(CanonicalError, match=match):
        parse_json(text, max_size=1_000_000)


def test_accepts_memoryview_and_refuses_str() -> None:
    assert parse_json(memoryview(b'{"a":[1]}'), max_size=100) == {"a": [1]}
    with pytest.raises(TypeError):
        parse_json('{"a":1}', max_size=100)  # type: ignore[arg-type]


@settings(deadline=None)
@given(JSON_VALUES)
def test_round_trip_and_idempotent(value) -> None:
    encoded = canonical_json(value)
    decoded = parse_json(encoded, max_size=len(encoded))
    assert decoded == value
    assert canonical_json(decoded) == encoded


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_raises_only_canonical_error(data: bytes) -> None:
    try:
        value = parse_json(data, max_size=150)
    except CanonicalError:
        return
    assert len(data) <= 150
    canonical_json(value)  # whatever parses strictly re-encodes (or raises CanonicalError)


@settings(deadline=None)
@given(st.text(alphabet='{}[]:,"\\0123456789.eE+-truefalsn \t\n', max_size=60))
def test_fuzz_parse_json_like_text(text: str) -> None:
    try:
        parse_json(text.encode(), max_size=1000)
    except CanonicalError:
        pass
