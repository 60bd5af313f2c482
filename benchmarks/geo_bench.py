"""P5 under emulated geography and churn, and the capacity rule against the measured learner.

For each scenario (default: geo-3 and churn), `swarm simulate SCENARIO --baseline`: the scenario,
then its co-located copy (same nodes and settings on 127.0.0.1, no links, device limits or
timeline), one after the other on this machine. Prints one JSON object with, per scenario:
  p5_reward_ratio: mean reward of the last `tail` common steps, scenario / co-located (goal >= 0.95
    in async mode with S = 2), and over all common steps;
  capacity: the rule's predicted learner busy fraction beside the measured one (goal: within 10 %,
    i.e. |predicted - measured| <= 0.1 * measured), for the scenario and for its baseline;
  emulator_cpu_s and its share of the run's wall time x cores (the link emulator's own cost);
  wall_s of both runs, chunk flow reconciliation, assertions.
Single runs of a stochastic process: read ratios with `tail_halves` (the tail's two halves) in mind.

    python benchmarks/geo_bench.py [--scenarios geo-3 churn] [--steps N] [--tail 20] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"p5_async_S2": 0.95, "capacity_within": 0.10}


def run(scenario: str, steps: int | None, out: Path) -> tuple[dict, dict]:
    cmd = [sys.executable, "-m", "nodes", "simulate", str(ROOT / "scenarios" / f"{scenario}.toml"), "--baseline",
           "--quiet", "--out", str(out), *(["--steps", str(steps)] if steps else [])]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    runs = sorted(p for p in out.iterdir() if p.name != "compare")
    if len(runs) != 2:
        raise SystemExit(f"{scenario}: expected two runs in {out}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    summaries = {p.name.endswith("-colocated"): json.loads((p / "report" / "summary.json").read_text()) for p in runs}
    ours, base = summaries[False], summaries[True]
    return ours, base


def ratio(ours: dict, base: dict, tail: int) -> dict:
    at = dict(zip(base["reward_steps"], base["reward_per_step"]))
    common = [(s, r) for s, r in zip(ours["reward_steps"], ours["reward_per_step"]) if s in at]
    if not common:
        return {"tail": None}
    last = common[-tail:]
    half = len(last) // 2
    return {"tail": round(fmean(r for _, r in last) / fmean(at[s] for s, _ in last), 4),
            "all_steps": round(fmean(r for _, r in common) / fmean(at[s] for s, _ in common), 4),
            "tail_halves": [round(fmean(r for _, r in part) / fmean(at[s] for s, _ in part), 4)
                            for part in (last[:half], last[half:]) if part],
            "steps_compared": len(common)}


def capacity(summary: dict) -> dict:
    c = summary["capacity"]
    predicted, measured = c.get("predicted_busy_fraction"), c.get("measured_busy_fraction")
    agree = (None if predicted is None or measured is None
             else abs(predicted - measured) <= GOALS["capacity_within"] * measured)
    return {"predicted_busy": predicted, "measured_busy": measured, "within_10pct": agree,
            "predicted_wait_s": c.get("predicted_wait_s"), "measured_wait_s": summary["learner"]["wait_s_mean"],
            "verdict": c.get("verdict")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", nargs="+", default=["geo-3", "churn"])
    ap.add_argument("--steps", type=int, default=None, help="override the scenarios' steps")
    ap.add_argument("--tail", type=int, default=20)
    ap.add_argument("--keep", default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="geo-bench-"))
    results = {}
    for name in args.scenarios:
        ours, base = run(name, args.steps, root / name)
        network = ours.get("network") or {}
        cpu = network.get("emulator_cpu_s")
        results[name] = {
            "mode": ours["mode"], "S": ours["S"], "steps": [ours["steps_done"], base["steps_done"]],
            "wall_s": [ours["wall_s"], base["wall_s"]],
            "reward_last10": [ours["reward_last10_mean"], base["reward_last10_mean"]],
            "p5_reward_ratio": ratio(ours, base, args.tail),
            "capacity": capacity(ours), "capacity_baseline": capacity(base),
            "emulator_cpu_s": cpu,
            "emulator_cpu_share": round(cpu / (ours["wall_s"] * (os.cpu_count() or 1)), 4) if cpu else None,
            "chunk_flow": {k: ours["chunk_flow"].get(k) for k in ("produced", "lost", "reconciled", "explanation")},
            "assertions": ours["assertions"],
        }
        p5 = results[name]["p5_reward_ratio"]["tail"]
        results[name]["p5_goal_met"] = (None if p5 is None or ours["mode"] != "async" or ours["S"] != 2
                                        else p5 >= GOALS["p5_async_S2"])
    print(json.dumps({"goals": GOALS, "runs_in": str(root), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
