"""The report's measures over time and end to end, from synthetic metrics (no swarm): chunk flow
reconciliation and what the timeline explains, tokens/s and dissemination latency over time, the
scenario's assertions, variants and the co-located baseline, and every plot drawn."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT
from test_scenario import DEFAULT, GRPO, _with, events_of, synthetic_run

from scenarios.report import summarize, write_report
from scenarios.scenario import ScenarioError, load_scenario, parse_scenario

T0 = 1_000.0


def _chunk(t, version=0, tokens=100, sent=True, **extra):
    return {"t": t, "kind": "chunk", "version": version, "samples": 8, "tokens": tokens, "gen_s": 0.5,
            "busy_s": 0.6, "engine": "llamacpp", "sent": sent, **extra}


def _accounting(accepted, consumed, buffered, rejected=None, dropped=None, t=T0 + 50):
    return {"t": t, "kind": "accounting", "accepted": accepted, "consumed": consumed, "buffered": buffered,
            "dropped": dropped or {}, "rejected": rejected or {}}


def _flow(events, spooled=None, timeline=None):
    return summarize(DEFAULT, events, wall_s=60, outcome="done", started_at=T0, spooled=spooled,
                     timeline=timeline)["chunk_flow"]


def test_every_chunk_is_accounted_for_end_to_end():
    """10 made: 6 accepted, 1 stale-refused for good, 2 still spooled, 1 pushed out of a full
    spool. Retry-later refusals (busy, unknown_sender) and a replay are not outcomes."""
    roll = [_chunk(T0 + i, sent=i < 7, spool_dropped=int(i == 9)) for i in range(10)]
    trainer = [_accounting(6, 5, 1, rejected={"stale": 1, "busy": 4, "unknown_sender": 2, "replay": 1})]
    flow = _flow({"trainer": trainer, "roll": roll}, spooled={"roll": 2, "trainer": 0})
    assert (flow["produced"], flow["accepted"], flow["rejected"], flow["spooled_at_end"], flow["spool_dropped"]) == (
        10, 6, {"stale": 1}, 2, 1)
    assert flow["unaccounted"] == 0 and flow["reconciled"] and flow["lost"] == 1
    assert flow["explanation"] == "every chunk accounted for"


def test_chunks_missing_without_a_kill_do_not_reconcile_and_a_kill_explains_them():
    roll = [_chunk(T0 + i) for i in range(5)]
    trainer = [_accounting(3, 3, 0)]
    flow = _flow({"trainer": trainer, "roll": roll})
    assert flow["unaccounted"] == 2 and not flow["reconciled"] and "no node was killed" in flow["explanation"]

    old_trainer = [_accounting(3, 1, 2)]  # killed holding 2 accepted chunks it never used
    timeline = [{"t": 20.0, "at_s": 20, "action": "kill", "target": "old"}]
    flow = _flow({"old": old_trainer, "roll": [_chunk(T0 + i) for i in range(4)]}, timeline=timeline)
    assert flow["reconciled"] and flow["buffered_at_killed_trainers"] == 2 and flow["lost"] == 3
    assert "killed old" in flow["explanation"]

    # a rollout killed after its chunk was accepted but before it logged making it: nothing lost
    timeline = [{"t": 20.0, "at_s": 20, "action": "kill", "target": "roll"}]
    flow = _flow({"trainer": [_accounting(4, 4, 0)], "roll": [_chunk(T0 + i) for i in range(3)]}, timeline=timeline)
    assert flow["unaccounted"] == -1 and flow["lost"] == 0 and flow["reconciled"]
    assert flow["explanation"] == "1 chunk(s) accepted whose producer was killed (roll) before it logged them: none lost"


def test_tokens_per_second_and_dissemination_over_time():
    trainer = [{"t": T0 + 10 * v, "kind": "step", "step": v, "version": v, "reward_mean": 0.5, "samples": 8,
                "step_s": 2.0, "wait_s": 0.5, "lags": {"0": 1, "2": 1}} for v in (1, 2, 3)]
    roll = [_chunk(T0 + 1, tokens=50), _chunk(T0 + 2, tokens=50), _chunk(T0 + 31, tokens=500),
            {"t": T0 + 10.5, "kind": "adopt", "version": 1}, {"t": T0 + 32, "kind": "adopt", "version": 3}]
    s = summarize(DEFAULT, {"trainer": trainer, "roll": roll}, wall_s=40, outcome="done", started_at=T0)
    series = s["series"]
    assert series["bin_s"] == 5.0
    assert series["tokens_per_s"]["roll"][0] == 20.0 and series["tokens_per_s"]["roll"][6] == 100.0
    assert series["busy_fraction"][0] == [10.0, 0.75] and series["lag_mean"][0] == [10.0, 1.0]
    assert series["dissemination_s"] == {"roll": {"1": 0.5, "3": 2.0}}  # v2 skipped: fetched v3 first
    assert s["dissemination"]["roll"] == {"versions": 2, "median_s": 1.25, "max_s": 2.0}


def _assert(*entries, steps=12):
    return parse_scenario(_with({"steps": steps}, **{"assert": list(entries)}))


def test_assertions_pass_fail_and_not_reached(tmp_path):
    scenario = _assert({"metric": "reward", "at_least": 0.6, "by_step": 12},
                       {"metric": "reward", "at_least": 0.6, "by_step": 5},
                       {"metric": "max_lag", "at_most": 1}, {"metric": "chunks_lost", "at_most": 0},
                       {"metric": "max_step_gap_s", "at_most": 1.5}, steps=20)
    s = summarize(scenario, events_of(synthetic_run(tmp_path)), wall_s=50, outcome="done", grpo=GRPO, started_at=T0)
    got = {a["assertion"]: (a["measured"], a["passed"]) for a in s["assertions"]}
    assert got == {"reward by step 12 >= 0.6": (0.65, True), "reward by step 5 >= 0.6": (0.2, False),
                   "max_lag <= 1": (1.0, True), "chunks_lost <= 0": (got["chunks_lost <= 0"][0], False),
                   "max_step_gap_s <= 1.5": (2.0, False)}
    late = _assert({"metric": "reward", "at_least": 0.1, "by_step": 20}, steps=20)
    s = summarize(late, events_of(synthetic_run(tmp_path / "b")), wall_s=50, outcome="timeout", started_at=T0)
    assert s["assertions"] == [{"assertion": "reward by step 20 >= 0.1", "measured": None, "passed": False}]


@pytest.mark.parametrize("entry, message", [
    ({"metric": "speed", "at_least": 1}, "assert[0].metric must be one of reward, steps_done"),
    ({"metric": "reward"}, "assert[0] needs at_least or at_most"),
    ({"metric": "max_lag", "at_most": 2, "by_step": 3}, 'assert[0].by_step applies to metric = "reward" only'),
    ({"metric": "reward", "at_least": 0.5, "by_step": 99}, "assert[0].by_step must be in [0, scenario.steps = 12]"),
    ({"metric": "reward", "at_least": "high"}, "assert[0].at_least must be a number"),
])
def test_assertion_mistakes_name_the_field(entry, message):
    with pytest.raises(ScenarioError, match=re.escape(message)):
        _assert(entry)


def test_variants_and_the_colocated_baseline():
    sweep = load_scenario(ROOT / "scenarios" / "staleness-sweep.toml")
    runs = [sweep.variant(v) for v in sweep.variants]
    assert [(r.settings.name, r.settings.staleness) for r in runs] == [
        ("staleness-sweep-S0", 0), ("staleness-sweep-S2", 2), ("staleness-sweep-S4", 4), ("staleness-sweep-S8", 8)]
    assert all(r.nodes == sweep.nodes and not r.variants for r in runs)
    with pytest.raises(ScenarioError, match=re.escape("variant 'x': scenario.mode must be one of")):
        parse_scenario(_with(variant=[{"name": "x", "mode": "lockstep"}])).variant(
            parse_scenario(_with(variant=[{"name": "x", "mode": "lockstep"}])).variants[0])
    with pytest.raises(ScenarioError, match="variant 'a' is declared more than once"):
        parse_scenario(_with(variant=[{"name": "a"}, {"name": "a"}]))

    geo = load_scenario(ROOT / "scenarios" / "churn.toml")
    base = geo.colocated()
    assert base.settings.name == "churn-colocated" and not (base.regions or base.links or base.events)
    assert all(not (n.region or n.up_mbit or n.down_mbit or n.cpu_cores) for n in base.nodes)
    assert [n.name for n in base.nodes] == [n.name for n in geo.nodes]


def test_every_plot_is_drawn_with_the_timeline_and_the_baseline(tmp_path):
    import matplotlib  # noqa: F401
    summary = summarize(DEFAULT, events_of(synthetic_run(tmp_path)), wall_s=45, outcome="done", grpo=GRPO,
                        started_at=T0, timeline=[{"t": 12.0, "at_s": 12, "action": "kill", "target": "torch"}],
                        network={"emulation": "test", "link_bytes": {"eu->asia": 2_000_000},
                                 "link_bytes_over_time": [[5.0, {"eu->asia": 1_000_000}],
                                                          [10.0, {"eu->asia": 2_000_000}]]})
    summary["series"]["dissemination_s"] = {"llama": {"1": 0.4, "2": 0.9}}
    summary["baseline"] = {"scenario": "default-colocated", "reward_steps": [1, 2], "reward_per_step": [0.1, 0.2],
                           "reward_wall_s": [1.0, 2.0], "reward_last10_mean": 0.15, "wall_s": 3.0}
    written = json.loads(write_report(summary, tmp_path / "report").read_text())["plots"]
    assert set(written) == {"reward", "reward_time", "staleness", "tokens_time", "busy_time", "lag_time",
                            "dissemination", "link_bytes"}
    assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in written.values())
    page = (tmp_path / "report" / "index.html").read_text()
    for text in ("Co-located baseline (default-colocated", "eu-&gt;asia", "2.00", "predicted wait", "produced"):
        assert text in page, text


def test_compared_runs_share_one_page_and_the_baseline_ratio(tmp_path):
    """`run_all` runs each scenario into its own dir; the compare page links and overlays them;
    `add_baseline` rewrites the first run's report with the baseline and the reward ratio."""
    import matplotlib  # noqa: F401

    from scenarios.compare import add_baseline, run_all, write_compare

    geo = load_scenario(ROOT / "scenarios" / "geo-3.toml").with_steps(12)
    scenarios = [geo, geo.colocated()]

    def run_one(scenario, run_dir: Path) -> int:
        events = events_of(synthetic_run(run_dir))
        if scenario is scenarios[1]:  # the baseline learns twice as fast
            for e in events["trainer"]:
                if e["kind"] == "step":
                    e["reward_mean"] = e["reward_mean"] * 2
        write_report(summarize(scenario, events, wall_s=45, outcome="done", grpo=GRPO, started_at=T0),
                     run_dir / "report")
        return 0 if scenario is scenarios[0] else 1

    code, summaries = run_all(scenarios, tmp_path, run_one=run_one)
    assert code == 1 and [s["scenario"] for s in summaries] == ["geo-3", "geo-3-colocated"]
    merged = add_baseline(tmp_path / "geo-3", summaries[1])
    assert merged["baseline"]["reward_ratio_last10"] == 0.5
    assert json.loads((tmp_path / "geo-3" / "report" / "summary.json").read_text())["baseline"]["scenario"] == \
        "geo-3-colocated"
    page = write_compare(summaries, tmp_path / "compare").read_text()
    assert page.count("<img") == 3 and 'href="../geo-3-colocated/report/index.html"' in page
    assert "2 runs compared" in page


@pytest.mark.parametrize("args, message", [
    (["scenarios/default.toml", "--compare", "scenarios/sequential.toml"],
     "give the scenarios to compare after --compare, not also scenarios/default.toml before it"),
    (["scenarios/staleness-sweep.toml", "--baseline"],
     "--baseline compares one scenario with its co-located copy; give one scenario without [[variant]]s"),
    (["--compare", "scenarios/default.toml", "scenarios/default.toml"],
     "two runs would share the name 'default': give each compared scenario its own [scenario] name"),
])
def test_compare_mistakes_are_one_line(tmp_path, args, message):
    from conftest import run_cli

    result = run_cli("simulate", *args, "--out", str(tmp_path / "out"), cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"swarm simulate: error: {message}"
    assert not (tmp_path / "out").exists()


def test_a_node_group_is_that_many_nodes_and_errors_name_its_entry():
    wide = load_scenario(ROOT / "scenarios" / "wide-8.toml")
    assert [n.name for n in wide.nodes] == ["trainer", "llama-eu-1", "llama-eu-2", "llama-eu-3", "torch-eu",
                                            "llama-us-1", "llama-us-2", "llama-us-3", "torch-us"]
    assert {n.engine for n in wide.nodes if n.name.startswith("llama")} == {"llamacpp"}
    nodes = [{"name": "t", "role": "trainer"}, {"name": "r", "role": "rollout", "count": 3},
             {"name": "x", "role": "rollout", "engine": "vllm"}]
    with pytest.raises(ScenarioError, match=re.escape("node[2].engine must be one of")):  # the file's entry
        parse_scenario(_with(nodes=nodes))
    with pytest.raises(ScenarioError, match=re.escape("node[1].count must be in [1, 256]")):
        parse_scenario(_with(nodes=[nodes[0], {**nodes[1], "count": 0}]))
    with pytest.raises(ScenarioError, match=re.escape("node[1].name 'r-2' is used by more than one node")):
        parse_scenario(_with(nodes=[*nodes[:2], {"name": "r-2", "role": "rollout"}]))
    event = {"at_s": 1, "action": "kill", "node": "r-3"}
    assert parse_scenario(_with(nodes=nodes[:2], event=[event])).events[0].node == "r-3"
