"""`report/index.html`: one self-contained page (plots inlined as data URIs, no scripts, no
network) that opens from disk and shows a run: outcome, reward and the assertions, the network
as configured beside what was measured and the bytes each link carried, what the timeline did,
chunk accounting end to end, the capacity rule's inputs and prediction beside the measurement,
per-node work, and the plots. Everything on it comes from summary.json."""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path

STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.bad{color:#b00}.good{color:#070}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd}"""


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(value, spec: str = "{:.2f}") -> str:
    return "" if value is None else spec.format(value)


def _measured(check: dict, key: str) -> str:
    """A measured value, and the first attempt's when it was measured again (off by > 15 %)."""
    first = (check.get("first_attempt") or {}).get(key)
    return fmt(check[key], "{:.1f}") + (f" (first attempt {fmt(first, '{:.1f}')})" if first is not None else "")


def _verdict(ok) -> str:
    return "" if ok is None else ('<span class="good">yes</span>' if ok else '<span class="bad">NO</span>')


def inline_png(path: str) -> str:
    try:
        data = base64.b64encode(Path(path).read_bytes()).decode()
    except OSError:
        return ""
    return f'<img alt="{escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def render(summary: dict) -> str:
    s, parts = summary, []
    rewards = s.get("reward_per_step") or []
    parts.append(f"<h1>{escape(s['scenario'])}: {escape(s['outcome'])}</h1>")
    parts.append(f"<p>{s['steps_done']} of {s['steps_planned']} steps in {s['wall_s']:.0f} s, {escape(s['mode'])} "
                 f"(S={s['S']}, kappa={s['publish_every']}); mean reward "
                 f"{fmt(s.get('reward_first10_mean'))} (first 10 steps) to {fmt(s.get('reward_last10_mean'))} "
                 f"(last 10){'' if rewards else ': no step was logged'}.</p>")

    checks = s.get("assertions") or []
    if checks:
        parts.append("<h2>Assertions</h2>" + html_table(
            ["assertion", "measured", "result"],
            [[escape(a["assertion"]), "not reached" if a["measured"] is None else fmt(a["measured"], "{:g}"),
              '<span class="good">pass</span>' if a["passed"] else '<span class="bad">FAIL</span>'] for a in checks]))
    if s.get("baseline"):
        b = s["baseline"]
        parts.append(f"<p>Co-located baseline ({escape(b['scenario'])}: the same nodes on 127.0.0.1, no emulated "
                     f"links, device limits or timeline), grey in the reward plots: last-10 mean reward "
                     f"{fmt(b.get('reward_last10_mean'))} in {fmt(b.get('wall_s'), '{:.0f}')} s.</p>")

    network = s.get("network") or {}
    parts.append(f"<h2>Network</h2><p>{escape(network.get('emulation', 'not recorded'))}"
                 + (f"; the emulator used {network['emulator_cpu_s']:.1f} CPU seconds"
                    if network.get("emulator_cpu_s") is not None else "") + ".</p>")
    if network.get("links"):
        parts.append(html_table(["regions", "round trip configured (ms)", "measured (ms)", "within 15 %"],
                            [[escape(" - ".join(link["between"])), fmt(link["configured_rtt_ms"], "{:.0f}"),
                              _measured(link, "measured_rtt_ms"), _verdict(link["within_15pct"])]
                             for link in network["links"]]))
    if network.get("bandwidth"):
        parts.append(html_table(["node", "direction", "against", "Mbit/s configured", "measured (TCP goodput)",
                             "within 15 %"],
                            [[escape(bw["node"]), escape(bw["direction"]), escape(bw["peer"]),
                              fmt(bw["configured_mbit_s"], "{:g}"), _measured(bw, "measured_mbit_s"),
                              _verdict(bw["within_15pct"])] for bw in network["bandwidth"]]))

    if network.get("link_bytes"):
        parts.append(html_table(["link (from region -> to region)", "MB received during the run"],
                            [[escape(k), fmt(v / 1e6, "{:.2f}")] for k, v in network["link_bytes"].items()]))

    timeline = s.get("timeline") or []
    parts.append("<h2>Timeline</h2>" + (html_table(["at (s)", "planned", "action", "target"],
                                               [[fmt(e["t"], "{:.1f}"),
                                                 f"step {e['at_step']}" if e.get("at_step") else fmt(e["at_s"], "{:.0f}"),
                                                 escape(e["action"]), escape(e["target"])] for e in timeline])
                                        if timeline else "<p>No timeline events.</p>"))

    acc = s.get("accounting") or {}
    if acc:
        rejected = ", ".join(f"{escape(k)} {v}" for k, v in (acc.get("rejected") or {}).items()) or "none"
        parts.append("<h2>Chunks</h2>" + html_table(
            ["accepted", "consumed", "dropped", "buffered", "reconciled", "rejected at intake"],
            [[acc.get("accepted"), acc.get("consumed"), sum((acc.get("dropped") or {}).values()),
              acc.get("buffered"), _verdict(acc.get("reconciled")), rejected]]))
    flow = s.get("chunk_flow") or {}
    if flow.get("produced") is not None:
        refused = ", ".join(f"{escape(k)} {v}" for k, v in flow["rejected"].items()) or "none"
        parts.append("<p>End to end, every chunk the rollouts made:</p>" + html_table(
            ["produced", "accepted", "refused for good", "still spooled", "pushed out of a full spool",
             "buffered at killed trainers", "unaccounted", "reconciled"],
            [[flow["produced"], flow["accepted"], refused, flow["spooled_at_end"], flow["spool_dropped"],
              flow["buffered_at_killed_trainers"], flow["unaccounted"], _verdict(flow["reconciled"])]])
            + f"<p>{escape(flow['explanation'])}.</p>")
    capacity = s.get("capacity") or {}
    if capacity:
        parts.append(f"<h2>Capacity</h2><p>{escape(str(capacity.get('verdict', '')))}</p>")
        if capacity.get("supply_tokens") is not None:
            parts.append(html_table(
                ["R (tokens/step)", "T_train (s)", "kappa", "supply (tokens)", "demand (tokens)",
                 "predicted wait (s/step)", "measured wait (s/step)", "predicted busy", "measured busy"],
                [[fmt(capacity["R_tokens_per_step"], "{:.0f}"), fmt(capacity["T_train_s"]), capacity["kappa"],
                  fmt(capacity["supply_tokens"], "{:.0f}"), fmt(capacity["demand_tokens"], "{:.0f}"),
                  fmt(capacity["predicted_wait_s"]), fmt((s.get("learner") or {}).get("wait_s_mean")),
                  fmt(capacity["predicted_busy_fraction"]), fmt(capacity["measured_busy_fraction"])]])
                + html_table(["rollout node", "mu (effective tokens/s)", "T_bcast (s)"],
                         [[escape(n), fmt(mu, "{:.0f}"), fmt(capacity["T_bcast_s"].get(n))]
                          for n, mu in capacity["mu_tok_s"].items()]))

    nodes, devices = s.get("nodes") or {}, s.get("devices") or {}
    spread = s.get("dissemination") or {}
    parts.append("<h2>Nodes</h2>" + html_table(
        ["node", "role", "engine", "device", "chunks", "tokens/s", "effective tokens/s", "adoption delay (s)",
         "dissemination median / worst (s)", "exit code"],
        [[escape(name), escape(str(n.get("observed_role") or n.get("role"))), escape(str(n.get("engine"))),
          escape(devices.get(name, {}).get("profile", "this machine, no limit")),
          n.get("chunks", 0), fmt(n.get("tokens_per_s"), "{:.0f}"), fmt(n.get("effective_tokens_per_s"), "{:.0f}"),
          fmt(n.get("adoption_s")),
          f"{spread[name]['median_s']:.2f} / {spread[name]['max_s']:.2f}" if name in spread else "",
          "" if n.get("exit_code") is None else n["exit_code"]]
         for name, n in nodes.items()]))

    plots = s.get("plots") or {}
    images = [inline_png(p) for key, p in plots.items() if key != "skipped"]
    parts.append("<h2>Plots</h2>" + ("".join(images) if images else
                                      f"<p>{escape(plots.get('skipped', 'no plots were written'))}</p>"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(s['scenario'])}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def write_html(summary: dict, path: Path) -> Path:
    path.write_text(render(summary))
    return path
