"""A run over time, from its metrics events: what the report's time plots show.

Times are seconds since the nodes were launched (`t0`). Definitions:
- tokens/s of a node over time: tokens of the chunks it finished in each `bin_s` window, / bin_s
  (what it delivered, idle time included: a node waiting for demand or cut off shows as a dip);
- learner busy fraction over time: per step, (step_s - wait_s) / step_s;
- policy lag over time: per step, the mean lag of the chunks it used;
- dissemination latency of version v to a node: from v's publication (the first step event
  carrying v) to the node's `adopt` event for v (its engine generating with v). A node that
  skips a version (it fetched a newer one first) has no latency for it.
"""
from __future__ import annotations

from statistics import median

BINS = 40


def over_time(events: dict[str, list[dict]], steps: list[dict], t0: float, wall_s: float) -> dict:
    bin_s = max(5.0, round(wall_s / BINS))
    n_bins = int(wall_s // bin_s) + 1
    tokens_per_s = {}
    for node, evs in events.items():
        chunks = [e for e in evs if e["kind"] == "chunk"]
        if not chunks:
            continue
        bins = [0] * n_bins
        for c in chunks:
            bins[min(n_bins - 1, max(0, int((c["t"] - t0) // bin_s)))] += int(c["tokens"])
        tokens_per_s[node] = [round(b / bin_s, 1) for b in bins]
    return {
        "bin_s": bin_s,
        "tokens_per_s": tokens_per_s,
        "busy_fraction": [[_at(e, t0), round(1 - float(e["wait_s"]) / float(e["step_s"]), 3)]
                          for e in steps if float(e["step_s"]) > 0],
        "lag_mean": [[_at(e, t0), round(_mean_lag(e["lags"]), 3)] for e in steps if e.get("lags")],
        "dissemination_s": dissemination(events, steps),
    }


def dissemination(events: dict[str, list[dict]], steps: list[dict]) -> dict:
    """node -> {version (str): seconds from publication to the node generating with it}."""
    published: dict[int, float] = {}
    for e in steps:
        published.setdefault(int(e["version"]), float(e["t"]))
    out = {}
    for node, evs in events.items():
        adopted = {int(e["version"]): float(e["t"]) for e in evs if e["kind"] == "adopt"}
        latency = {str(v): round(max(0.0, t - published[v]), 3) for v, t in sorted(adopted.items()) if v in published}
        if latency:
            out[node] = latency
    return out


def dissemination_summary(latency: dict) -> dict:
    """node -> versions adopted, median and worst latency."""
    return {node: {"versions": len(v), "median_s": round(median(v.values()), 3), "max_s": max(v.values())}
            for node, v in latency.items()}


def _at(e: dict, t0: float) -> float:
    return round(float(e["t"]) - t0, 2)


def _mean_lag(lags: dict) -> float:
    n = sum(int(c) for c in lags.values())
    return sum(int(k) * int(c) for k, c in lags.items()) / n if n else 0.0
