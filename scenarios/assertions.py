"""A scenario's `[[assert]]` entries: what the run must meet, checked against its summary.

    [[assert]]
    metric = "reward"     # one of METRICS
    at_least = 0.6        # and/or at_most = ...
    by_step = 100         # reward only: the 10 steps up to this one (default: the run's last 10)

A run whose assertions fail exits 1 and says which, in the terminal and in the report.
"""
from __future__ import annotations

from itertools import pairwise
from statistics import fmean

METRICS = {
    "reward": "mean reward of the 10 steps up to by_step (default: the last 10 steps)",
    "steps_done": "trainer steps done",
    "chunks_lost": ("chunks that never reached a trainer that used them or refused them for a reason: pushed "
                    "out of a full spool, buffered at a killed trainer, in flight at a kill"),
    "chunks_rejected": "chunks refused for good (not the 'retry later' refusals)",
    "busy_fraction": "learner busy fraction (steady-state steps)",
    "max_lag": "largest policy lag of a chunk the trainer used",
    "max_step_gap_s": "longest wall-clock gap between two trainer steps (a failover's or a partition's stall)",
    "links_off": "measured round trips and bandwidths more than 15 % off their configuration",
}


def measure(metric: str, summary: dict, by_step: int = 0) -> float | None:
    """The metric's value in a run's summary; None when the run did not get that far."""
    if metric == "reward":
        steps = summary["reward_steps"]
        if not steps or (by_step and steps[-1] < by_step):
            return None  # the run did not get there
        rewards = [r for s, r in zip(steps, summary["reward_per_step"]) if not by_step or s <= by_step]
        return round(fmean(rewards[-10:]), 4)
    if metric == "steps_done":
        return float(summary["steps_done"])
    flow = summary.get("chunk_flow") or {}
    if metric == "chunks_lost":
        return None if flow.get("produced") is None else float(flow["lost"])
    if metric == "chunks_rejected":
        return None if flow.get("produced") is None else float(sum(flow["rejected"].values()))
    if metric == "busy_fraction":
        return summary["learner"]["busy_fraction"]
    if metric == "max_lag":
        lags = [int(k) for k in summary["staleness_histogram"]]
        return float(max(lags)) if lags else None
    if metric == "max_step_gap_s":
        times = summary.get("reward_wall_s") or []
        return round(max((b - a for a, b in pairwise(times)), default=0.0), 2) if times else None
    if metric == "links_off":
        network = summary.get("network") or {}
        checks = (network.get("links") or []) + (network.get("bandwidth") or [])
        return float(sum(not c["within_15pct"] for c in checks))
    raise ValueError(f"unknown metric {metric!r}")


def check(assertions, summary: dict) -> list[dict]:
    """One result per assertion: what was asked, what was measured, whether it passed."""
    results = []
    for a in assertions:
        value = measure(a.metric, summary, a.by_step)
        passed = value is not None and a.at_least <= value <= a.at_most
        bounds = " and ".join(text for text in (f">= {a.at_least:g}" if a.at_least > float("-inf") else "",
                                                  f"<= {a.at_most:g}" if a.at_most < float("inf") else "") if text)
        asked = f"{a.metric}{f' by step {a.by_step}' if a.by_step else ''} {bounds}"
        results.append({"assertion": asked, "measured": value, "passed": passed})
    return results
