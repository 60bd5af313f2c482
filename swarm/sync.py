"""The sync rules of ECHO's two modes, as pure functions (DESIGN §3): no I/O, no clock.

Versions count trainer steps: after k steps the trainer holds adapter version k, so at step t a
chunk made with version x has *lag* t - x.

- `sequential` (on-policy): a chunk is usable only at lag 0; the trainer asks for exactly one
  step's groups and none while that step's batch trains.
- `async` (streaming): usable while 0 <= lag <= S; the trainer asks for this step's groups plus
  `ASYNC_LOOKAHEAD_STEPS` more, so the learner never waits on a round trip.

Every caller uses `lag_rejection` (the trainer's door and its batch assembly, the co-located
baseline, the version retention, the rollout's sequential gate): there is one staleness rule.
"""
from __future__ import annotations

from swarm.rejections import Reason

SEQUENTIAL, ASYNC = "sequential", "async"
SYNC_MODES = (SEQUENTIAL, ASYNC)
ASYNC_LOOKAHEAD_STEPS = 1
"""Extra steps of groups an async trainer asks for: buffered data stays at most a step old."""


def max_lag(mode: str, staleness: int) -> int:
    """The largest usable lag: 0 in sequential mode, S in async mode."""
    return 0 if mode == SEQUENTIAL else staleness


def lag_rejection(version: int, step: int, mode: str, staleness: int) -> Reason | None:
    """Why a chunk of adapter `version` is unusable at trainer `step`, or None if it is usable."""
    if version > step:
        return Reason.FUTURE_VERSION  # cannot exist honestly
    if version < 0 or step - version > max_lag(mode, staleness):
        return Reason.STALE
    return None


def oldest_usable(step: int, mode: str, staleness: int) -> int:
    """The oldest version whose chunks are still usable at `step`: what a trainer must keep to
    check honesty, and older versions may be dropped."""
    return max(0, step - max_lag(mode, staleness))


SPARE_VERSIONS = 3
"""Versions kept beyond the usable window: peers a few versions behind still get a delta."""


def versions_kept(mode: str, staleness: int) -> int:
    """How many versions a node keeps on disk: every version whose chunks are still usable, plus
    `SPARE_VERSIONS` older ones to serve deltas to peers catching up."""
    return max_lag(mode, staleness) + 1 + SPARE_VERSIONS


def groups_needed(mode: str, prompts_per_step: int, buffered_groups: int, training: bool) -> int:
    """How many prompt groups a trainer still wants, given what it has buffered.

    Sequential: this step's groups, and none while a batch trains (its chunks would arrive made
    with a version about to be replaced). Async: this step's and the lookahead's.
    """
    if mode == SEQUENTIAL:
        if training:
            return 0
        steps = 1
    else:
        steps = 1 + ASYNC_LOOKAHEAD_STEPS
    return max(0, steps * prompts_per_step - buffered_groups)


def may_generate(held_version: int, trainer_version: int, need: int, mode: str, staleness: int) -> bool:
    """The rollout's gate: generate only when the trainer wants groups and with a version whose
    chunk can still be used when it arrives. Sequential: only the very version the trainer trains.
    Async: a lag under S now (the trainer moves on while the chunk is made and sent; a newer
    version is being fetched meanwhile), or no lag when S is 0."""
    if need <= 0:
        return False
    lag = trainer_version - held_version
    if mode == SEQUENTIAL or staleness == 0:
        return lag == 0
    return lag < staleness


def rollout_version(step: int, publish_every: int, lag: int) -> int:
    """The newest published version (multiples of kappa, and 0) no newer than `step - lag`: the
    version a rollout lagging `lag` versions uses at `step` (the co-located baseline's model)."""
    target = max(0, step - lag)
    return target - target % publish_every
