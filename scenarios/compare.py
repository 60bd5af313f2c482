"""Several runs side by side: `swarm simulate --compare A.toml B.toml`, a file's `[[variant]]`s, or
`--baseline` (the scenario and its co-located copy). Each run is a whole `swarm simulate` into
OUT/<name>/, one after the other (they would compete for the CPU side by side); then
OUT/compare/index.html overlays them: reward per step and over time, staleness, learner busy
fraction, and a table of the numbers that differ."""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from statistics import fmean

from scenarios.html_report import STYLE, fmt, html_table, inline_png
from scenarios.report import write_report


def run_all(scenarios: list, out: Path, *, run_one) -> tuple[int, list[dict]]:
    """Run each scenario with `run_one(scenario, out_dir) -> exit code`; the worst exit code and
    the summaries of the runs that wrote one."""
    codes, summaries = [], []
    for scenario in scenarios:
        run_dir = out / scenario.settings.name
        codes.append(run_one(scenario, run_dir))
        path = run_dir / "report" / "summary.json"
        if path.exists():
            summaries.append({**json.loads(path.read_text()), "report": f"../{scenario.settings.name}/report/index.html"})
    return max(codes, default=0), summaries


def add_baseline(run_dir: Path, baseline: dict) -> dict:
    """Overlay the co-located baseline on a run's report (rewritten) and add the P5 ratio: the
    run's mean reward over its last 10 steps ÷ the baseline's over the same steps."""
    path = run_dir / "report" / "summary.json"
    summary = json.loads(path.read_text())
    at = dict(zip(baseline["reward_steps"], baseline["reward_per_step"]))
    ours = [(s, r) for s, r in zip(summary["reward_steps"], summary["reward_per_step"]) if s in at][-10:]
    theirs = fmean(at[s] for s, _ in ours) if ours else 0.0
    ratio = fmean(r for _, r in ours) / theirs if theirs else None
    summary["baseline"] = {k: baseline[k] for k in ("scenario", "reward_steps", "reward_per_step", "reward_wall_s",
                                                     "reward_last10_mean", "wall_s")}
    summary["baseline"]["reward_ratio_last10"] = None if ratio is None else round(ratio, 4)
    write_report(summary, run_dir / "report")
    return summary


def write_compare(summaries: list[dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    try:
        plots = _plots(summaries, out)
    except ImportError:
        plots = {}
    rows = []
    for s in summaries:
        checks = s.get("assertions") or []
        lags = s["staleness_histogram"]
        used = sum(lags.values())
        rows.append([f'<a href="{escape(s["report"])}">{escape(s["scenario"])}</a>', escape(s["outcome"]),
                     f"{escape(s['mode'])}, S={s['S']}", f"{s['steps_done']}/{s['steps_planned']}",
                     fmt(s["wall_s"], "{:.0f}"), fmt(s.get("reward_first10_mean")), fmt(s.get("reward_last10_mean")),
                     fmt(s["learner"].get("busy_fraction")),
                     fmt(sum(int(k) * v for k, v in lags.items()) / used if used else None),
                     "" if (s.get("chunk_flow") or {}).get("produced") is None else s["chunk_flow"]["lost"],
                     f"{sum(a['passed'] for a in checks)}/{len(checks)}" if checks else ""])
    table = html_table(["run", "outcome", "sync", "steps", "wall (s)", "reward first 10", "reward last 10",
                    "learner busy", "mean lag", "chunks lost", "assertions passed"], rows)
    images = "".join(inline_png(p) for p in plots.values())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>compare</title><style>{STYLE}</style></head>"
            f"<body><h1>{len(summaries)} runs compared</h1>{table}<h2>Plots</h2>{images}</body></html>\n")
    path = out / "index.html"
    path.write_text(page)
    (out / "summary.json").write_text(json.dumps({"runs": [
        {k: s.get(k) for k in ("scenario", "outcome", "mode", "S", "steps_done", "wall_s", "reward_first10_mean",
                               "reward_last10_mean", "learner", "staleness_histogram", "assertions", "report")}
        for s in summaries], "plots": plots}, indent=1) + "\n")
    return path


def _plots(summaries: list[dict], out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for name, x_key, xlabel in (("reward", "reward_steps", "trainer step"),
                                ("reward_time", "reward_wall_s", "seconds since launch")):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for s in summaries:
            ax.plot(s[x_key], s["reward_per_step"], lw=1, label=s["scenario"])
        ax.set(xlabel=xlabel, ylabel="mean reward", title=f"reward per {'step' if name == 'reward' else 'second'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths[name] = str(out / f"{name}.png")
        fig.savefig(paths[name], dpi=100)
        plt.close(fig)
    fig, (lag_ax, busy_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    width = 0.8 / max(1, len(summaries))
    for i, s in enumerate(summaries):
        hist = s["staleness_histogram"]
        total = sum(hist.values()) or 1
        lag_ax.bar([int(k) + i * width for k in hist], [v / total for v in hist.values()], width=width,
                   label=s["scenario"])
        busy_ax.bar(i, s["learner"].get("busy_fraction") or 0, label=s["scenario"])
    lag_ax.set(xlabel="policy lag (versions)", ylabel="share of chunks used", title="staleness")
    lag_ax.legend(fontsize=7)
    busy_ax.set_xticks(range(len(summaries)), [s["scenario"] for s in summaries], rotation=20, fontsize=7)
    busy_ax.set(ylim=(0, 1.05), ylabel="busy fraction", title="learner busy fraction")
    fig.tight_layout()
    paths["staleness_busy"] = str(out / "staleness_busy.png")
    fig.savefig(paths["staleness_busy"], dpi=100)
    plt.close(fig)
    return paths
