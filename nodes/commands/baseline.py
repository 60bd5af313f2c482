"""`swarm baseline`: the co-located reference run, the whole RL loop in one process, no swarm.

Same task, base model, seed and GRPO settings as a swarm run: those of a signed manifest
(`--run OUT/run.toml` of a `swarm simulate` run) or of a scenario (default: the default one).
On-policy unless `--staleness K`, which makes the rollouts lag K versions as async mode may.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from nodes.cli import CliError

PROGRESS_EVERY = 10


def manifest_for(args):
    """The RunManifest whose settings the baseline reproduces."""
    from nodes.runconfig import SETTINGS_ONLY_OWNER
    from scenarios.scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario, scenario_manifest
    from swarm.manifest import load_manifest

    if args.run and args.scenario:
        raise CliError("give a scenario or --run MANIFEST, not both")
    if args.run:
        return load_manifest(args.run).manifest
    try:
        return scenario_manifest(load_scenario(args.scenario or DEFAULT_SCENARIO), SETTINGS_ONLY_OWNER)
    except ScenarioError as e:
        raise CliError(str(e)) from None


def run(args) -> int:
    from nodes.colocated import run_baseline
    from nodes.models import resolve_base
    from nodes.tasks import TaskError
    from nodes.trainer.policy import PolicyConfig
    from scenarios.report import sparkline

    m = manifest_for(args)
    steps = m.grpo.steps if args.steps is None else args.steps
    if steps < 1 or args.staleness < 0:
        raise CliError("--steps must be >= 1 and --staleness >= 0")
    out = Path(args.out or Path("runs") / time.strftime("baseline-%Y%m%d-%H%M%S.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"baseline: {m.task.name} on {m.model.base}, {steps} steps, seed {m.run.seed}, "
          f"{m.grpo.prompts_per_step} prompts x {m.grpo.group_size} per step, lag {args.staleness}", flush=True)
    try:
        with open(out, "w") as file:
            records = run_baseline(
                steps, m.run.seed, m.grpo.prompts_per_step, m.grpo.group_size, kappa=1,
                staleness=args.staleness, out=ProgressSink(file, steps),
                base_dir=resolve_base(m.model.base, m.model.sha256), task=m.task.name,
                task_options=dict(m.task.options), temperature=m.grpo.temperature,
                max_new_tokens=m.grpo.max_new_tokens, threads=args.threads, config=PolicyConfig.from_manifest(m))
    except TaskError as e:
        raise CliError(f"task: {e}") from None
    rewards = [r["reward"] for r in records]
    first, last = rewards[: min(10, len(rewards))], rewards[-min(10, len(rewards)):]
    print(f"reward {rewards[0]:.2f} {sparkline(rewards)} {rewards[-1]:.2f}  ({len(rewards)} steps; "
          f"first-10 mean {sum(first) / len(first):.2f}, last-10 mean {sum(last) / len(last):.2f})")
    print(f"per-step records: {out}")
    return 0


class ProgressSink:
    """Takes run_baseline's JSON lines: keeps them in the file, shows a line every few steps."""

    def __init__(self, file, steps: int):
        self.file, self.steps = file, steps
        self.recent: list[float] = []

    def write(self, line: str) -> None:
        self.file.write(line)
        record = json.loads(line)
        self.recent.append(record["reward"])
        step = record["step"] + 1
        if step % PROGRESS_EVERY == 0 or step == self.steps:
            print(f"step {step}/{self.steps}  reward {sum(self.recent) / len(self.recent):.3f} "
                  f"(mean of the last {len(self.recent)})", flush=True)
            self.recent = []

    def flush(self) -> None:
        self.file.flush()
