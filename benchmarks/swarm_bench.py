"""P4 + P5: the swarm against the co-located baseline, same task, model, seed and settings.

Runs, one after the other on this machine (never concurrently: they would share 2 cores):
  1. `swarm simulate` of the default scenario in async mode (S = 2),
  2. the same in sequential mode,
  3. `swarm baseline --run <the async run's manifest>`: the whole loop in one process, on-policy.
Prints one JSON object:
  P4 learner_busy_fraction (async): training time / step time, goal >= 0.9 when the rollouts
     can keep up (the report's capacity verdict says whether they can);
  P5 reward ratio swarm / baseline at equal trainer steps, over the last `tail` steps (and over
     all steps): goal >= 0.98 sequential, >= 0.95 async.
Single runs of a stochastic process: read the ratios with the spread between the first and
second half of the tail in mind (reported as `tail_halves`).

    python benchmarks/swarm_bench.py [--steps 100] [--tail 20] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"async": 0.95, "sequential": 0.98, "busy_fraction": 0.9}


def swarm(*args: str, timeout: float) -> None:
    cmd = [sys.executable, "-m", "nodes", *args]
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def simulate(scenario: str, steps: int, out: Path) -> dict:
    started = time.perf_counter()
    swarm("simulate", str(ROOT / "scenarios" / scenario), "--steps", str(steps), "--quiet", "--out", str(out),
          timeout=1800)
    summary = json.loads((out / "report" / "summary.json").read_text())
    summary["bench_wall_s"] = time.perf_counter() - started
    return summary


def curve_stats(rewards: list[float], tail: int) -> dict:
    last = rewards[-tail:]
    half = len(last) // 2
    return {"tail_mean": round(fmean(last), 4), "all_mean": round(fmean(rewards), 4),
            "tail_halves": [round(fmean(last[:half]), 4), round(fmean(last[half:]), 4)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--tail", type=int, default=20, help="compare the mean reward of the last N steps")
    ap.add_argument("--keep", default=None, help="keep the runs' out dirs here (default: a temp dir)")
    args = ap.parse_args()
    tail = min(args.tail, args.steps)
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        work = Path(args.keep or tmp)
        runs = {"async": simulate("default.toml", args.steps, work / "async"),
                "sequential": simulate("sequential.toml", args.steps, work / "sequential")}
        started = time.perf_counter()
        swarm("baseline", "--run", str(work / "async" / "run.toml"), "--steps", str(args.steps),
              "--out", str(work / "baseline.jsonl"), timeout=1800)
        baseline_wall = time.perf_counter() - started
        base_rewards = [json.loads(line)["reward"] for line in (work / "baseline.jsonl").read_text().splitlines()]
    base = curve_stats(base_rewards, tail)
    result = {"benchmark": "swarm_vs_baseline", "steps": args.steps, "tail": tail,
              "baseline": {**base, "wall_s": round(baseline_wall, 1)}}
    for mode, summary in runs.items():
        stats = curve_stats(summary["reward_per_step"], tail)
        result[mode] = {
            **stats,
            "P5_ratio_tail": round(stats["tail_mean"] / base["tail_mean"], 3),
            "P5_ratio_all": round(stats["all_mean"] / base["all_mean"], 3),
            "P5_goal": GOALS[mode],
            "learner_busy_fraction": summary["learner"]["busy_fraction"],
            "staleness_histogram": summary["staleness_histogram"],
            "rejected": summary["accounting"]["rejected"],
            "dropped": summary["accounting"]["dropped"],
            "capacity_verdict": summary["capacity"]["verdict"],
            "wall_s": round(summary["bench_wall_s"], 1),
        }
    result["P4_busy_fraction_async"] = result["async"]["learner_busy_fraction"]
    result["P4_goal"] = GOALS["busy_fraction"]
    print(json.dumps(result, indent=2))
    print(f"swarm_bench: P5 async {result['async']['P5_ratio_tail']} (goal {GOALS['async']}), sequential "
          f"{result['sequential']['P5_ratio_tail']} (goal {GOALS['sequential']}); P4 busy "
          f"{result['P4_busy_fraction_async']} (goal {GOALS['busy_fraction']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
