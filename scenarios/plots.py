"""The report's PNGs, drawn from summary.json alone. Every time axis counts seconds since launch
and carries the timeline's events as dashed red lines; a co-located baseline (`--baseline`), when
the summary has one, is overlaid in grey on the reward plots."""
from __future__ import annotations

from pathlib import Path


def write_plots(summary: dict, report_dir: Path) -> dict:
    """name -> PNG path, for each plot the summary has data for. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}

    def save(name: str, fig) -> None:
        fig.tight_layout()
        paths[name] = str(report_dir / f"{name}.png")
        fig.savefig(paths[name], dpi=100)
        plt.close(fig)

    name, series, baseline = summary["scenario"], summary.get("series") or {}, summary.get("baseline")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(summary["reward_steps"], summary["reward_per_step"], marker=".", lw=1, label=name)
    if baseline:
        ax.plot(baseline["reward_steps"], baseline["reward_per_step"], lw=1, color="grey", label=baseline["scenario"])
        ax.legend(fontsize=8)
    ax.set(xlabel="trainer step", ylabel="mean reward", title=f"{name}: reward per step")
    ax.grid(alpha=0.3)
    save("reward", fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(summary.get("reward_wall_s", []), summary["reward_per_step"], marker=".", lw=1, label=name)
    if baseline:
        ax.plot(baseline["reward_wall_s"], baseline["reward_per_step"], lw=1, color="grey", label=baseline["scenario"])
        ax.legend(fontsize=8)
    _time_axis(ax, summary, "mean reward", f"{name}: reward over time")
    save("reward_time", fig)

    hist = summary["staleness_histogram"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([int(k) for k in hist], list(hist.values()), color="tab:orange")
    ax.set_xticks([int(k) for k in hist])
    ax.set(xlabel="policy lag (versions)", ylabel="chunks used", title=f"staleness ({summary['mode']}, S={summary['S']})")
    save("staleness", fig)

    if series.get("tokens_per_s"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        bin_s = series["bin_s"]
        for node, rates in series["tokens_per_s"].items():
            ax.step([i * bin_s for i in range(len(rates))], rates, where="post", label=node)
        ax.legend(fontsize=8)
        _time_axis(ax, summary, "tokens/s delivered", f"tokens/s per node ({bin_s:g} s bins)")
        save("tokens_time", fig)

    if series.get("busy_fraction"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(*zip(*series["busy_fraction"]), marker=".", lw=1, label="measured, per step")
        predicted = (summary.get("capacity") or {}).get("predicted_busy_fraction")
        if predicted is not None:
            ax.axhline(predicted, color="tab:green", lw=1, label="capacity rule's prediction")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        _time_axis(ax, summary, "learner busy fraction", "learner busy fraction")
        save("busy_time", fig)

    if series.get("lag_mean"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(*zip(*series["lag_mean"]), marker=".", lw=1, color="tab:orange")
        ax.axhline(summary["S"], color="grey", ls=":", lw=1)
        _time_axis(ax, summary, "mean policy lag of a step's chunks", f"staleness over time (S={summary['S']})")
        save("lag_time", fig)

    if series.get("dissemination_s"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for node, latency in series["dissemination_s"].items():
            ax.plot([int(v) for v in latency], list(latency.values()), marker=".", lw=0.8, label=node)
        ax.legend(fontsize=8)
        ax.set(xlabel="adapter version", ylabel="seconds to adopt",
               title="dissemination latency: publication to generating with it")
        ax.grid(alpha=0.3)
        save("dissemination", fig)

    over_time = (summary.get("network") or {}).get("link_bytes_over_time") or []
    links = sorted({k for _, counts in over_time for k in counts})
    if links:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        times = [t for t, _ in over_time]
        for link in links:
            ax.plot(times, [counts.get(link, 0) / 1e6 for _, counts in over_time], lw=1, label=link)
        ax.legend(fontsize=7, ncol=2)
        _time_axis(ax, summary, "MB received (cumulative)", "bytes per link (from region -> to region)")
        save("link_bytes", fig)
    return paths


def _time_axis(ax, summary: dict, ylabel: str, title: str) -> None:
    for event in summary.get("timeline", []):
        ax.axvline(event["t"], color="tab:red", ls="--", lw=0.8)
        ax.annotate(f"{event['action']} {event['target']}", (event["t"], 1.0), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=7, color="tab:red")
    ax.set(xlabel="seconds since launch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
