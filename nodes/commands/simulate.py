"""`swarm simulate`: CLI glue for scenarios.simulate (the runner lives with the scenarios)."""
from __future__ import annotations

import time
from pathlib import Path

from nodes.cli import CliError


def run(args) -> int:
    from nodes.tasks import TaskError
    from scenarios.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario
    from scenarios.simulate import Simulation

    try:
        scenario = load_scenario(args.scenario or DEFAULT_SCENARIO)
        scenario = scenario.with_steps(args.steps).with_timeout(args.timeout)
    except ScenarioError as e:
        raise CliError(str(e)) from None
    out = Path(args.out or Path("runs") / time.strftime("sim-%Y%m%d-%H%M%S"))
    try:
        return Simulation(scenario, out, quiet=args.quiet).run()
    except TaskError as e:
        raise CliError(f"scenario.task: {e}") from None
