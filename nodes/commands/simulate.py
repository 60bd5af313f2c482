"""`swarm simulate`: CLI glue for scenarios.simulate (the runner lives with the scenarios)."""
from __future__ import annotations

import time
from pathlib import Path

from nodes.cli import CliError


def run(args) -> int:
    from scenarios.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario
    from scenarios.simulate import Simulation

    out = Path(args.out or Path("runs") / time.strftime("sim-%Y%m%d-%H%M%S"))
    try:
        scenario = load_scenario(args.scenario or DEFAULT_SCENARIO)
        scenario = scenario.with_steps(args.steps).with_timeout(args.timeout)
        return Simulation(scenario, out, quiet=args.quiet).run()
    except ScenarioError as e:  # the scenario's own error, raised before any node starts
        raise CliError(str(e)) from None
