"""The small wire messages: round trips, one strict decoder, and fuzzing (only RequestRejected out)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.messages import AdapterRequest, BundleHeader, StatusRequest, Verdict, decode
from swarm.rejections import Reason, RequestRejected

MESSAGES = (StatusRequest(), Verdict(ok=True, need=3, version=7), Verdict(ok=False, need=0, version=-1, reason="stale"),
            AdapterRequest(version=4, have=3, gguf=True), BundleHeader(body="delta", gguf=False))


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message):
    assert decode(type(message), message.encode()) == message


@pytest.mark.parametrize("cls, data, reason", [
    (Verdict, b'{"ok":true,"need":1,"version":0,"extra":1}', "schema"),        # unknown field
    (Verdict, b'{"ok":true,"need":1}', "schema"),                              # missing field
    (Verdict, b'{"ok":1,"need":1,"version":0}', "schema"),                     # an int is not a bool
    (Verdict, b'{"ok":true,"need":true,"version":0}', "schema"),               # a bool is not an int
    (Verdict, b'{"ok":true,"need":-5,"version":0}', "schema"),                 # out of range
    (Verdict, b'{"ok":false,"need":0,"version":0,"reason":"made-up"}', "schema"),  # not in the reason set
    (Verdict, b'{"ok":false,"need":0,"version":0}', "schema"),                 # a refusal without a reason
    (Verdict, b'{"ok":true,"ok":false,"need":0,"version":0}', "format"),       # duplicate key
    (Verdict, b'[1,2]', "schema"),
    (Verdict, b'\xff', "format"),
    (AdapterRequest, b'{"version":-1}', "schema"),
    (AdapterRequest, b'{"version":1e400}', "format"),
    (BundleHeader, b'{"body":"zip","gguf":false}', "schema"),
    (StatusRequest, b"x" * 65, "oversize"),
    (AdapterRequest, b'{"version":' + b"1" * 300 + b"}", "oversize"),
])
def test_each_malformed_message_is_refused_with_its_reason(cls, data, reason):
    with pytest.raises(RequestRejected) as err:
        decode(cls, data)
    assert err.value.reason == Reason(reason)


def test_every_reason_has_a_distinct_counter_name():
    values = [r.value for r in Reason]
    assert len(values) == len(set(values)) and all(v == v.lower() and " " not in v for v in values)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([StatusRequest, Verdict, AdapterRequest, BundleHeader]), st.binary(max_size=600))
def test_decoders_only_raise_request_rejected(cls, data):
    try:
        decode(cls, data)
    except RequestRejected:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["ok", "need", "version", "reason", "x"]),
                       st.one_of(st.booleans(), st.integers(), st.none(), st.text(max_size=12), st.floats())))
def test_verdict_decoder_on_json_objects(doc):
    import json
    import math

    if any(isinstance(v, float) and not math.isfinite(v) for v in doc.values()):
        return  # not JSON
    try:
        verdict = decode(Verdict, json.dumps(doc).encode())
    except RequestRejected:
        return
    assert verdict.check() is None and isinstance(verdict.ok, bool)
