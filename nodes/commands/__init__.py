"""One module per `swarm` subcommand, each with `run(args) -> exit code`."""
