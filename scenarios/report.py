"""What a simulated run did, from metrics.jsonl: summary.json, plots, index.html, a text sparkline.

Everything here is computed from the metrics contract alone (each node's WORKDIR/metrics.jsonl,
the typed events of `nodes.metrics`: trainer `step` / `accounting` / `done`, rollout `chunk`, any `role`),
so a summary can be rebuilt from a run directory, and the tests drive it with a synthetic one.

Definitions (also in summary.json's `definitions`):
- learner busy fraction: sum(step_s - wait_s) / sum(step_s) over steady-state steps, i.e. all
  but the first step when there are several (the first one waits for nodes still loading models);
- tokens/s of a rollout node: sum(tokens) / sum(gen_s), its engine's speed while generating;
- its production window: from its first chunk's start (t - gen_s) to its last chunk's t;
  chunks/s are over that window; effective tokens/s = sum(tokens) / sum(busy_s), busy_s being a
  chunk's generate + sign + seal + send time (what it can deliver, overheads included, not
  counting time spent idle because the trainer had enough data);
- witness share of a rollout node: sum(witness_s) / (sum(busy_s) + sum(witness_s)), witness_s
  being its CPU time spent verifying and countersigning the provenance log;
- adoption delay of a rollout node (its T_bcast): median over versions v of the time from v's
  publication (the first step event carrying v) to the start of the node's first chunk made with
  v or newer; versions it never used are left out;
- capacity rule (DESIGN §3), per worker: the learner does not wait when
  Σ μ_i·min(κ·T_train, max(0, S·κ·T_train − T_bcast_i)) ≥ κ·R, with S the staleness bound
  (0 in sequential mode). A chunk of version v is usable while the trainer's version is at most
  v + S, judged when the batch is assembled, so chunks made while the learner trains on the
  version after v count only if S ≥ 1: with S = 1 this is the design's
  Σ μ_i·max(0, κ·T_train − T_bcast_i) ≥ κ·R; with S ≥ 2 a rollout keeps making usable chunks
  with the previous version while the next one arrives, so its broadcast costs nothing until
  T_bcast_i exceeds (S − 1)·κ·T_train; with S = 0 nothing overlaps training (each batch is made
  after its version is published: the learner always waits). With μ_i = effective tokens/s
  (engine tokens/s overstates supply: sealing, sending, adapter swaps and a shared CPU all cost
  time), R = prompts·group·(measured tokens per sample) and T_train = mean(step_s − wait_s).
  "Observed no wait" means busy fraction ≥ BUSY_OK (0.9), checked only with ≥ MIN_STEADY_STEPS (3)
  steady-state steps. Predicted wait per step: the time no worker holds the version yet
  (min_i T_bcast_i − S·κ·T_train, when positive) plus the shortfall (κ·R − supply) made by all
  workers together after the window, / Σμ_i / κ; predicted busy fraction = T_train / (T_train +
  predicted wait), beside the measured one. (Until session 7 the window was (S+1)·κ·T_train, one
  period too generous: an S = 0 run was predicted not to wait and measured busy 0.70.)
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from statistics import fmean, median

from nodes.metrics import read_event
from scenarios import assertions, series
from swarm.rejections import RETRY_LATER, Reason

BUSY_OK = 0.9
MIN_STEADY_STEPS = 3
SPARKS = "▁▂▃▄▅▆▇█"


def read_events(path: Path) -> tuple[list[dict], int]:
    """All well-formed events of one metrics file and the number of malformed lines skipped."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return [], 0
    tail = MetricsTail(path)
    events = tail.feed(text + ("\n" if text and not text.endswith("\n") else ""))
    return events, tail.malformed


class MetricsTail:
    """Incremental reader of a growing metrics.jsonl; a half-written last line waits for its end."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.partial = ""
        self.malformed = 0

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        return self.feed(data.decode(errors="replace"))

    def feed(self, text: str) -> list[dict]:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        events = []
        for line in filter(str.strip, lines):
            try:
                event = read_event(json.loads(line))
            except ValueError:
                event = None
            if event is not None:
                events.append(event)
            else:
                self.malformed += 1
        return events


def summarize(scenario, events: dict[str, list[dict]], *, wall_s: float, outcome: str,
              grpo: dict | None = None, exit_codes: dict | None = None, malformed: int = 0,
              started_at: float | None = None, network: dict | None = None, timeline: list | None = None,
              devices: dict | None = None, spooled: dict | None = None) -> dict:
    """summary.json's content. `events`: node name -> its metrics events, in file order;
    `started_at`: unix time the nodes were launched (wall-time axes count from it); `network`,
    `timeline`, `devices`: what the runner set up and did; `spooled`: node -> chunks still in
    its spool at the end."""
    s = scenario.settings
    steps = {}
    for e in (e for evs in events.values() for e in evs if e["kind"] == "step"):
        steps[int(e["step"])] = e  # a step logged twice (trainer failover): the last one wins
    ordered = [steps[k] for k in sorted(steps)]
    rewards = [float(e["reward_mean"]) for e in ordered]
    lags = Counter()
    for e in ordered:
        lags.update({int(k): int(v) for k, v in (e.get("lags") or {}).items()})
    codes = exit_codes or {}
    nodes = {spec.name: _node_summary(spec, events.get(spec.name, []), codes.get(spec.name), ordered)
             for spec in scenario.nodes}
    learner = _learner(ordered)
    t0 = started_at if started_at is not None else min((e["t"] for evs in events.values() for e in evs if "t" in e),
                                                       default=0.0)
    timeline = timeline or []
    accounting = _accounting(events)
    summary = {
        "scenario": s.name, "mode": s.mode, "S": s.staleness, "publish_every": s.publish_every,
        "outcome": outcome, "steps_planned": s.steps, "steps_done": len(ordered),
        "done": any(e["kind"] == "done" for evs in events.values() for e in evs),
        "wall_s": round(wall_s, 2),
        "reward_steps": sorted(steps), "reward_per_step": rewards,
        "reward_wall_s": [round(float(e["t"]) - t0, 2) for e in ordered],
        "reward_first10_mean": _mean(rewards[:10]), "reward_last10_mean": _mean(rewards[-10:]),
        "staleness_histogram": {str(k): lags[k] for k in sorted(lags)},
        "accounting": accounting,
        "chunk_flow": chunk_flow(events, accounting, spooled or {}, timeline),
        "nodes": nodes, "learner": learner,
        "series": series.over_time(events, ordered, t0, wall_s),
        "capacity": capacity_rule(
            samples_per_step=_samples_per_step(grpo, ordered),
            tokens_per_sample=_tokens_per_sample(events, grpo),
            t_train_s=learner["t_train_s"], kappa=s.publish_every,
            t_bcast_s={n: v["adoption_s"] for n, v in nodes.items() if v["adoption_s"] is not None},
            worker_tok_s={n: mu for n, v in nodes.items() if (mu := v["effective_tokens_per_s"])},
            busy_fraction=learner["busy_fraction"] if learner["steps_counted"] >= MIN_STEADY_STEPS else None,
            mode=s.mode, staleness=s.staleness),
        "malformed_lines": malformed,
        "network": network or {"emulation": "none: every node on 127.0.0.1"},
        "timeline": timeline, "devices": devices or {},
        "definitions": __doc__.split("Definitions (also in summary.json's `definitions`):\n")[1].strip(),
    }
    summary["dissemination"] = series.dissemination_summary(summary["series"]["dissemination_s"])
    summary["assertions"] = assertions.check(getattr(scenario, "assertions", ()), summary)
    return summary


def _node_summary(spec, evs: list[dict], exit_code, steps: list[dict]) -> dict:
    chunks = [e for e in evs if e["kind"] == "chunk"]
    roles = [e["role"] for e in evs if e["kind"] == "role"]
    tokens, gen_s = sum(int(e["tokens"]) for e in chunks), sum(float(e["gen_s"]) for e in chunks)
    window = chunks[-1]["t"] - (chunks[0]["t"] - chunks[0]["gen_s"]) if chunks else 0.0
    busy_s = sum(float(e["busy_s"]) for e in chunks)
    witness_s = sum(float(e.get("witness_s", 0.0)) for e in chunks)
    return {
        "role": spec.role, "observed_role": roles[-1] if roles else None, "engine": spec.engine,
        "engines_reported": sorted({e["engine"] for e in chunks}), "threads": spec.threads,
        "exit_code": exit_code, "chunks": len(chunks),
        "chunks_unsent": sum(not e["sent"] for e in chunks),
        "samples": sum(int(e["samples"]) for e in chunks), "tokens": tokens, "gen_s": round(gen_s, 3),
        "tokens_per_s": round(tokens / gen_s, 1) if gen_s > 0 else None,
        "effective_tokens_per_s": round(tokens / busy_s, 1) if busy_s > 0 else None,
        "chunks_per_s": round(len(chunks) / window, 3) if window > 0 else None,
        "witness_s": round(witness_s, 4),
        "witness_share": round(witness_s / (busy_s + witness_s), 5) if busy_s + witness_s > 0 else None,
        "adoption_s": _adoption_delay(steps, chunks),
        "steps": sum(e["kind"] == "step" for e in evs),
    }


def _adoption_delay(steps: list[dict], chunks: list[dict]) -> float | None:
    published: dict[int, float] = {}
    for e in steps:
        published.setdefault(int(e["version"]), float(e["t"]))
    delays = []
    for version, at in published.items():
        first = next((c for c in chunks if c["version"] >= version), None)
        if first is not None:
            delays.append(max(0.0, first["t"] - first["gen_s"] - at))
    return round(median(delays), 3) if delays else None


def _learner(steps: list[dict]) -> dict:
    steady = steps[1:] if len(steps) > 1 else steps
    total = sum(float(e["step_s"]) for e in steady)
    busy = sum(float(e["step_s"]) - float(e["wait_s"]) for e in steady)
    return {
        "busy_fraction": round(busy / total, 4) if total > 0 else None,
        "t_train_s": _mean([float(e["step_s"]) - float(e["wait_s"]) for e in steady]),
        "step_s_mean": _mean([float(e["step_s"]) for e in steady]),
        "wait_s_mean": _mean([float(e["wait_s"]) for e in steady]),
        "steps_counted": len(steady),
    }


def _accounting(events: dict[str, list[dict]]) -> dict:
    """Sum over trainer nodes of each one's last (cumulative) accounting event."""
    per_node = ([e for e in evs if e["kind"] == "accounting"] for evs in events.values())
    lasts = [acc[-1] for acc in per_node if acc]
    if not lasts:
        return {"accepted": None, "consumed": None, "buffered": None, "dropped": {}, "rejected": {},
                "reconciled": None}
    total = {k: sum(int(a.get(k, 0)) for a in lasts) for k in ("accepted", "consumed", "buffered")}
    dropped, rejected = Counter(), Counter()
    for a in lasts:
        dropped.update(a.get("dropped") or {})
        rejected.update(a.get("rejected") or {})
    reconciled = total["accepted"] == total["consumed"] + sum(dropped.values()) + total["buffered"]
    return {**total, "dropped": dict(dropped), "rejected": dict(rejected), "reconciled": reconciled}


def chunk_flow(events: dict[str, list[dict]], accounting: dict, spooled: dict, timeline: list) -> dict:
    """Every chunk the rollouts made, end to end: produced = accepted + rejected for good +
    still spooled + pushed out of a full spool + lost. "Retry later" refusals and replays of a
    chunk already accepted are not outcomes (the chunk is still, or was already, counted
    elsewhere). `lost` is the remainder: chunks in flight when the timeline killed their
    producer or the trainer they were sent to; it must be 0 in a run without kills."""
    produced = sum(e["kind"] == "chunk" for evs in events.values() for e in evs)
    if not produced:
        return {"produced": None}
    not_outcomes = {r.value for r in RETRY_LATER} | {Reason.REPLAY.value}
    final = {k: v for k, v in (accounting.get("rejected") or {}).items() if k not in not_outcomes}
    spool_dropped = sum(int(e.get("spool_dropped", 0)) for evs in events.values() for e in evs if e["kind"] == "chunk")
    killed = sorted({e["target"] for e in timeline if e["action"] == "kill"})
    with_trainer = {n: acc[-1]["buffered"] for n in killed
                    if (acc := [e for e in events.get(n, []) if e["kind"] == "accounting"])}
    tallied = (accounting.get("accepted") or 0) + sum(final.values()) + sum(spooled.values()) + spool_dropped
    unaccounted = produced - tallied  # < 0: accepted, but its producer died before logging it
    return {"produced": produced, "accepted": accounting.get("accepted") or 0, "rejected": final,
            "spooled_at_end": sum(spooled.values()), "spool_dropped": spool_dropped,
            "buffered_at_killed_trainers": sum(with_trainer.values()), "unaccounted": unaccounted,
            # without a kill to explain it, any mismatch counts as lost: nothing shows otherwise
            "lost": (max(0, unaccounted) if killed else abs(unaccounted)) + spool_dropped + sum(with_trainer.values()),
            "killed_by_timeline": killed, "reconciled": unaccounted == 0 or bool(killed),
            "explanation": _flow_explanation(unaccounted, killed)}


def _flow_explanation(unaccounted: int, killed: list[str]) -> str:
    if unaccounted == 0:
        return "every chunk accounted for"
    if not killed:
        return f"{unaccounted} chunk(s) unaccounted for, and no node was killed: a bug"
    if unaccounted > 0:
        return f"{unaccounted} chunk(s) lost in flight when the timeline killed {', '.join(killed)}"
    return (f"{-unaccounted} chunk(s) accepted whose producer was killed ({', '.join(killed)}) before it "
            "logged them: none lost")


def _samples_per_step(grpo: dict | None, steps: list[dict]) -> float | None:
    if grpo:
        return float(grpo["prompts_per_step"] * grpo["group_size"])
    return _mean([float(e["samples"]) for e in steps])


def _tokens_per_sample(events: dict[str, list[dict]], grpo: dict | None) -> float | None:
    chunks = [e for evs in events.values() for e in evs if e["kind"] == "chunk"]
    samples = sum(int(e["samples"]) for e in chunks)
    if samples:
        return sum(int(e["tokens"]) for e in chunks) / samples
    return float(grpo["max_new_tokens"]) if grpo else None


def capacity_rule(*, samples_per_step, tokens_per_sample, t_train_s, t_bcast_s: dict, kappa,
                  worker_tok_s: dict, busy_fraction, mode: str, staleness: int = 0) -> dict:
    """DESIGN §3's overlap rule, its measured inputs, and whether the run agreed with it.

    `t_bcast_s` and `worker_tok_s` are per rollout node; a node without a T_bcast counts 0.
    """
    inputs = {"R_tokens_per_step": None, "samples_per_step": samples_per_step,
              "tokens_per_sample": _round(tokens_per_sample), "T_train_s": t_train_s, "T_bcast_s": t_bcast_s,
              "kappa": kappa, "S": staleness if mode == "async" else 0, "mu_tok_s": worker_tok_s}
    if None in (samples_per_step, tokens_per_sample, t_train_s) or not worker_tok_s:
        return {**inputs, "verdict": "not enough data (needs trainer steps and rollout chunks)"}
    demand_tok = kappa * samples_per_step * tokens_per_sample
    period, ahead = kappa * t_train_s, inputs["S"]
    bcast = {n: t_bcast_s.get(n, 0.0) for n in worker_tok_s}
    window = {n: min(period, max(0.0, ahead * period - bcast[n])) for n in worker_tok_s}
    supply_tok = sum(mu * window[n] for n, mu in worker_tok_s.items())
    predicted = supply_tok >= demand_tok
    # Until a worker holds the version its chunks need, nothing comes; the shortfall is then made
    # by every worker at once, while the learner waits.
    dead_s = max(0.0, min(bcast.values()) - ahead * period) if not predicted else 0.0
    wait_s = dead_s / kappa + max(0.0, demand_tok - supply_tok) / sum(worker_tok_s.values()) / kappa
    observed = None if busy_fraction is None else busy_fraction >= BUSY_OK
    verdict = (f"rule predicts the learner {'does not wait' if predicted else 'waits'} "
               f"(supply {supply_tok:.0f} vs demand {demand_tok:.0f} tokens per publication)")
    if observed is None:
        verdict += f"; too few steady-state steps (< {MIN_STEADY_STEPS}) to check it against the run"
    else:
        agrees = predicted == observed
        verdict += f"; observed busy fraction {busy_fraction:.2f}: {'agrees' if agrees else 'disagrees'}"
    if mode != "async":
        verdict += " (sequential mode: the learner waits for each version's rollouts by design)"
    return {**inputs, "R_tokens_per_step": _round(samples_per_step * tokens_per_sample),
            "supply_tokens": _round(supply_tok), "demand_tokens": _round(demand_tok),
            "headroom": _round(supply_tok / demand_tok) if demand_tok else None,
            "predicts_no_wait": predicted, "observed_no_wait": observed,
            "predicted_wait_s": _round(wait_s), "predicted_busy_fraction": _round(t_train_s / (t_train_s + wait_s))
            if t_train_s + wait_s > 0 else None, "measured_busy_fraction": busy_fraction,
            "agrees": None if observed is None else predicted == observed, "verdict": verdict}


def write_report(summary: dict, report_dir: Path) -> Path:
    """summary.json, the plots it names (skipped, with the reason, without matplotlib) and
    index.html, which shows them all in one self-contained page."""
    from scenarios.html_report import write_html
    from scenarios.plots import write_plots

    report_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary["plots"] = write_plots(summary, report_dir)
    except ImportError:
        summary["plots"] = {"skipped": "matplotlib is not installed: pip install 'echo-swarm[plots]'"}
    path = report_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    write_html(summary, report_dir / "index.html")
    return path


def sparkline(values: list[float], width: int = 60) -> str:
    """Values as one line of block characters, averaged into at most `width` buckets."""
    if not values:
        return ""
    n = min(width, len(values))
    buckets = [fmean(values[i * len(values) // n:(i + 1) * len(values) // n]) for i in range(n)]
    lo, hi = min(0.0, *buckets), max(1.0, *buckets)  # rewards in [0, 1] keep an absolute scale
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - lo) / (hi - lo) * len(SPARKS)))] for v in buckets)


def _mean(values: list[float]) -> float | None:
    return round(fmean(values), 4) if values else None


def _round(value, digits: int = 3):
    return None if value is None else round(value, digits)
