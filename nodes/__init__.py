"""What runs on one machine: the node lifecycle, rollout worker, trainer, engines, tasks, the CLI."""
