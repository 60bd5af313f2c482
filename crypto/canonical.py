"""Canonical JSON out, strict JSON in.

Signatures and associated data are computed over bytes, so whatever we sign must have exactly one
encoding: sorted keys, no whitespace, UTF-8 (``ensure_ascii=False``), finite numbers only, string
keys only. The parser is the mirror image for untrusted input: size checked before anything else,
strict UTF-8, duplicate keys and NaN/Infinity refused, every failure a :class:`CanonicalError`.

Floats are written as Python's shortest round-trip repr (not RFC 8785's ECMAScript form); formats
we sign should prefer integers and strings.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import CanonicalError

_MAX_DEPTH = 200

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=True
)


def _check_tree(obj: Any, depth: int = 0) -> None:
    """Refuse non-str keys (json.dumps would silently stringify them) and non-finite floats."""
    if depth > _MAX_DEPTH:
        raise CanonicalError(f"JSON nested deeper than {_MAX_DEPTH} levels (or cyclic)")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise CanonicalError(f"JSON object key {key!r} is not a string")
            _check_tree(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_tree(value, depth + 1)
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise CanonicalError(f"non-finite number {obj!r} has no JSON encoding")


def canonical_json(obj: Any) -> bytes:
    """The one byte encoding of ``obj`` (dict/list/str/int/finite float/bool/None)."""
    _check_tree(obj)
    try:
        return _ENCODER.encode(obj).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # unsupported type, cycle, lone surrogate
        raise CanonicalError(f"cannot encode as canonical JSON: {exc}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise CanonicalError(f"duplicate JSON object key {dup!r}")
    return result


def _no_constant(name: str) -> Any:
    raise CanonicalError(f"non-finite number {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999" parses to inf
        raise CanonicalError(f"number {text[:40]} overflows to a non-finite float")
    return value


def parse_json(data: bytes, *, max_size: int) -> Any:
    """Parse untrusted JSON bytes strictly; raise :class:`CanonicalError` on anything doubtful."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_json takes bytes, not {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_size:
        raise CanonicalError(f"JSON document is {size} bytes, over the limit of {max_size}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalError(f"JSON is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with too many digits, deep nesting
        raise CanonicalError(f"malformed JSON: {exc}") from None
