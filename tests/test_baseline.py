"""The co-located baseline learns: a short real run (engine + policy + verifier) beats the warm-up.

Margin chosen from measurements (32 prompts x 8): mean reward of steps 0-2 is 0.05-0.08, of
steps 20-24 is 0.23-0.27 (seeds 0, 1, 2, 300-step warm-up model; seed 0 with today's 1000-step
warm-up: 0.05 and 0.23; step-to-step noise ~0.03). Requiring +0.10 leaves room
for noise and float differences across machines; a loop that does not learn (lr ~0, advantages
of the wrong sign, log-probs of the wrong tokens) stays at or below the warm-up level and fails.
"""
from __future__ import annotations

import json

import pytest

from nodes.colocated import run_baseline

pytestmark = pytest.mark.slow  # real training runs: over a minute each on 2 cores

# which version a lagging rollout uses (swarm.sync.rollout_version) is tested in test_sync.py


def test_stale_rollouts_are_tagged_with_their_version(tmp_path):
    out = tmp_path / "curve.jsonl"
    recs = run_baseline(4, seed=1, prompts_per_step=8, group_size=8, kappa=2, staleness=1, out=out)
    assert [r["version"] for r in recs] == [0, 0, 0, 2]
    assert [r["lag"] for r in recs] == [0, 1, 2, 1]
    assert [json.loads(line) for line in out.read_text().splitlines()] == recs
    # off-policy: the trainer's policy has moved away from the sampler's, so the ratio is live
    assert any(r["kl_behaviour"] > 1e-7 for r in recs if r["lag"] > 0)
    assert recs[0]["kl_behaviour"] == pytest.approx(0.0, abs=1e-6)


def test_short_run_learns():
    recs = run_baseline(25, seed=0)
    rewards = [r["reward"] for r in recs]
    warm = sum(rewards[:3]) / 3
    late = sum(rewards[-5:]) / 5
    assert warm < 0.2, f"warm-up model already solves the task? {warm:.3f}"
    assert late > warm + 0.10, f"no learning: warm-up {warm:.3f}, steps 20-24 {late:.3f}"
    assert all(r["clip_frac"] == 0.0 for r in recs)  # on-policy, one step per batch: ratio is 1
