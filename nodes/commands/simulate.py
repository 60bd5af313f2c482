"""`swarm simulate`: CLI glue for scenarios.simulate (the runner lives with the scenarios).

One scenario runs into runs/<name>-<time>/. Several (a file's [[variant]]s, `--compare A B ...`,
or `--baseline`: the scenario and its co-located copy) run one after the other into
runs/<name>-<time>/<run name>/, and runs/<name>-<time>/compare/index.html shows them together.
"""
from __future__ import annotations

import time
from pathlib import Path

from nodes.cli import CliError


def run(args) -> int:
    from scenarios.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario

    try:
        if args.compare and args.scenario:
            raise ScenarioError(f"give the scenarios to compare after --compare, not also {args.scenario} before it")
        files = args.compare or [args.scenario or DEFAULT_SCENARIO]
        loaded = [load_scenario(f) for f in files]
        runs = [s.variant(v) for s in loaded for v in s.variants] or loaded
        if args.baseline:
            if len(runs) != 1:
                raise ScenarioError("--baseline compares one scenario with its co-located copy; "
                                    "give one scenario without [[variant]]s")
            runs.append(runs[0].colocated())
        runs = [s.with_steps(args.steps).with_timeout(args.timeout) for s in runs]
        names = [s.settings.name for s in runs]
        if len(set(names)) != len(names):
            raise ScenarioError(f"two runs would share the name {max(names, key=names.count)!r}: "
                                "give each compared scenario its own [scenario] name")
    except ScenarioError as e:  # the scenario's own error, raised before any node starts
        raise CliError(str(e)) from None
    label = "compare" if args.compare else loaded[0].settings.name
    out = Path(args.out or Path("runs") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}")
    if len(runs) == 1:
        return _run_one(runs[0], out, args)
    return _run_many(runs, out, args)


def _run_one(scenario, out: Path, args) -> int:
    from scenarios.scenario import ScenarioError
    from scenarios.simulate import Simulation

    try:
        return Simulation(scenario, out, quiet=args.quiet, emulation=args.emulation).run()
    except ScenarioError as e:
        raise CliError(str(e)) from None


def _run_many(runs: list, out: Path, args) -> int:
    from rich.console import Console

    from scenarios.compare import add_baseline, run_all, write_compare

    console = Console()
    if out.exists() and any(out.iterdir()):
        raise CliError(f"--out {out} already exists and is not empty; choose a new directory")

    def one(scenario, run_dir: Path) -> int:
        console.rule(f"{scenario.settings.name} ({runs.index(scenario) + 1} of {len(runs)})")
        return _run_one(scenario, run_dir, args)

    code, summaries = run_all(runs, out, run_one=one)
    if args.baseline and len(summaries) == 2:
        summaries[0] = {**add_baseline(out / runs[0].settings.name, summaries[1]), "report": summaries[0]["report"]}
        ratio = summaries[0]["baseline"]["reward_ratio_last10"]
        console.print(f"reward over the last 10 steps vs the co-located baseline: "
                      f"{'n/a' if ratio is None else f'{ratio:.2f}x'}", highlight=False)
    page = write_compare(summaries, out / "compare")
    for s in summaries:
        console.print(f"{s['scenario']}: {s['outcome']}, {s['steps_done']} steps in {s['wall_s']:.0f}s, reward last 10 "
                      f"{s.get('reward_last10_mean')}", highlight=False, markup=False)
    console.print(f"comparison: {page}", highlight=False, markup=False)
    return code
