"""The reused per-thread buffer behind big messages: exclusive, per thread, bounded, and invisible."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from crypto._scratch import MAX_SIZE, MIN_SIZE, scratch
from crypto.envelope import sign_envelope, verify_envelope
from crypto.identity import Identity
from crypto.sealing import SealContext, open_sealed, seal

SENDER, RECIPIENT = Identity.from_seed(b"\x2a" * 32), Identity.from_seed(b"\x2b" * 32)
BIG = 3 * MIN_SIZE // 2


def _round_trip(payload: bytes, encoding: str = "binary") -> bytes:
    env = sign_envelope("big", payload, [SENDER], encoding=encoding)
    blob = seal(env, {RECIPIENT.key_id: RECIPIENT.hpke_public()}, SealContext("r", SENDER.key_id, "m"))
    opened = open_sealed(blob, RECIPIENT, run_id="r", max_size=4 * len(payload))
    return verify_envelope(opened.body, trusted_keys={SENDER.key_id: SENDER.public_key},
                           payload_types={"big"}, max_size=4 * len(payload)).payload


def test_big_messages_round_trip_and_do_not_alias() -> None:
    first, second = os.urandom(BIG), os.urandom(BIG + 7)
    assert _round_trip(first) == first
    assert _round_trip(second) == second
    assert _round_trip(first, encoding="json") == first


def test_threads_sealing_at_once_each_get_their_own_bytes() -> None:
    payloads = [os.urandom(BIG + i) for i in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(_round_trip, payloads)) == payloads


def test_nested_use_gets_a_separate_buffer() -> None:
    with scratch(MIN_SIZE) as outer:
        outer[:] = b"\x01" * MIN_SIZE
        with scratch(MIN_SIZE) as inner:
            inner[:] = b"\x02" * MIN_SIZE
        assert bytes(outer[:4]) == b"\x01" * 4
    with scratch(MIN_SIZE) as again:
        assert len(again) == MIN_SIZE


def test_sizes_outside_the_range_are_plain_buffers() -> None:
    for size in (0, 10, MIN_SIZE - 1, MAX_SIZE + 1):
        with scratch(size) as view:
            assert len(view) == size and not view.readonly
