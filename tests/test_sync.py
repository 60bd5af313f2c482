"""The sync rules of ECHO's two modes (swarm.sync), against hand-computed cases.

Versions count trainer steps: at step t the trainer holds version t, and a chunk of version x
has lag t - x. Sequential mode uses lag 0 only; async mode any lag in 0..S.
"""
from __future__ import annotations

import pytest

from swarm.rejections import Reason
from swarm.sync import (
    ASYNC,
    ASYNC_LOOKAHEAD_STEPS,
    SEQUENTIAL,
    SYNC_MODES,
    groups_needed,
    lag_rejection,
    max_lag,
    may_generate,
    oldest_usable,
    rollout_version,
)


def test_the_two_modes():
    assert SYNC_MODES == ("sequential", "async") and (SEQUENTIAL, ASYNC) == SYNC_MODES
    assert ASYNC_LOOKAHEAD_STEPS == 1  # the hand-computed cases below assume one step of lookahead


@pytest.mark.parametrize("mode, staleness, expected", [
    (SEQUENTIAL, 0, 0), (SEQUENTIAL, 5, 0),  # S means nothing on-policy
    (ASYNC, 0, 0), (ASYNC, 2, 2), (ASYNC, 5, 5),
])
def test_max_lag(mode, staleness, expected):
    assert max_lag(mode, staleness) == expected


@pytest.mark.parametrize("version, step, mode, staleness, expected", [
    # async, S = 2: lags 0, 1, 2 are usable at step 10; lag 3 is stale
    (10, 10, ASYNC, 2, None), (9, 10, ASYNC, 2, None), (8, 10, ASYNC, 2, None),
    (7, 10, ASYNC, 2, Reason.STALE),
    (0, 2, ASYNC, 2, None), (0, 3, ASYNC, 2, Reason.STALE),
    # async, S = 0 behaves like sequential
    (10, 10, ASYNC, 0, None), (9, 10, ASYNC, 0, Reason.STALE),
    # sequential: lag 0 only, whatever S says
    (10, 10, SEQUENTIAL, 2, None), (9, 10, SEQUENTIAL, 2, Reason.STALE), (0, 0, SEQUENTIAL, 0, None),
    # a version newer than the trainer's cannot exist honestly, in either mode
    (11, 10, ASYNC, 2, Reason.FUTURE_VERSION), (11, 10, SEQUENTIAL, 0, Reason.FUTURE_VERSION),
    (1, 0, ASYNC, 5, Reason.FUTURE_VERSION),
    # versions are never negative
    (-1, 0, ASYNC, 2, Reason.STALE), (-1, -1, ASYNC, 2, Reason.STALE),
])
def test_lag_rejection(version, step, mode, staleness, expected):
    assert lag_rejection(version, step, mode, staleness) is expected


@pytest.mark.parametrize("step, mode, staleness, expected", [
    (10, ASYNC, 2, 8), (10, ASYNC, 0, 10), (1, ASYNC, 2, 0), (0, ASYNC, 3, 0),
    (10, SEQUENTIAL, 2, 10), (0, SEQUENTIAL, 0, 0),
])
def test_oldest_usable(step, mode, staleness, expected):
    assert oldest_usable(step, mode, staleness) == expected
    # it is the boundary of lag_rejection: usable at the oldest, stale one version before it
    assert lag_rejection(expected, step, mode, staleness) is None
    if expected > 0:
        assert lag_rejection(expected - 1, step, mode, staleness) is Reason.STALE


@pytest.mark.parametrize("mode, prompts_per_step, buffered, training, expected", [
    # sequential: one step's groups, minus what is buffered; none while a batch trains
    (SEQUENTIAL, 32, 0, False, 32), (SEQUENTIAL, 32, 10, False, 22), (SEQUENTIAL, 32, 32, False, 0),
    (SEQUENTIAL, 32, 40, False, 0), (SEQUENTIAL, 32, 0, True, 0),
    # async: this step's and one lookahead step's (2 x 32 = 64), training or not
    (ASYNC, 32, 0, False, 64), (ASYNC, 32, 10, False, 54), (ASYNC, 32, 10, True, 54),
    (ASYNC, 32, 64, False, 0), (ASYNC, 32, 100, True, 0), (ASYNC, 1, 0, False, 2),
])
def test_groups_needed(mode, prompts_per_step, buffered, training, expected):
    assert groups_needed(mode, prompts_per_step, buffered, training) == expected


@pytest.mark.parametrize("held, trainer, need, mode, staleness, expected", [
    # nothing wanted: never generate
    (4, 4, 0, SEQUENTIAL, 0, False), (4, 4, 0, ASYNC, 2, False), (4, 4, -3, ASYNC, 2, False),
    # sequential: only with the very version the trainer trains
    (4, 4, 8, SEQUENTIAL, 0, True), (3, 4, 8, SEQUENTIAL, 0, False), (5, 4, 8, SEQUENTIAL, 0, False),
    # async: while the lag is under S (the chunk ages on its way); a newer version is on its way
    (3, 4, 8, ASYNC, 2, True), (4, 4, 1, ASYNC, 2, True), (2, 4, 8, ASYNC, 2, False),
    (0, 100, 1, ASYNC, 2, False), (3, 4, 8, ASYNC, 0, False), (4, 4, 8, ASYNC, 0, True),
    # a trainer behind us (a restart from an older checkpoint): its door decides
    (5, 4, 8, ASYNC, 2, True),
])
def test_may_generate(held, trainer, need, mode, staleness, expected):
    assert may_generate(held, trainer, need, mode, staleness) is expected


@pytest.mark.parametrize("publish_every, lag, steps, expected", [
    (1, 0, 4, [0, 1, 2, 3]),
    (1, 2, 5, [0, 0, 0, 1, 2]),
    (2, 0, 5, [0, 0, 2, 2, 4]),
    (2, 1, 6, [0, 0, 0, 2, 2, 4]),
    (3, 2, 11, [0, 0, 0, 0, 0, 3, 3, 3, 6, 6, 6]),
])
def test_rollout_version(publish_every, lag, steps, expected):
    assert [rollout_version(t, publish_every, lag) for t in range(steps)] == expected


@pytest.mark.parametrize("publish_every", [1, 2, 3, 5])
@pytest.mark.parametrize("lag", [0, 1, 2, 4])
def test_rollout_versions_are_usable_within_lag_plus_publication_gap(publish_every, lag):
    """The co-located baseline's invariant: its rollouts' lag is the fixed lag plus at most
    publish_every - 1 steps between publications, and that bound is reached."""
    bound = lag + publish_every - 1
    lags = []
    for step in range(40):
        version = rollout_version(step, publish_every, lag)
        assert version % publish_every == 0 and 0 <= version <= step
        assert lag_rejection(version, step, ASYNC, bound) is None
        lags.append(step - version)
    assert max(lags) == bound
