"""What runs on one machine: the node lifecycle, its role workers, engines, tasks, models, the CLI.

    node.py         join, advertise, compute the role, follow role changes; the swarm questions
                    workers may ask (`trainers`, `members`, `holders`, `advertise`)
    services.py     the node's P2P services (status, chunks, adapter) and the worker switch
    context.py      WorkerContext: the typed handles a role worker gets
    rollout.py      the rollout worker: fetch the version, generate, sign, seal, send
    spool.py        signed chunks kept on disk while no trainer takes them
    trainer/        the trainer worker: intake (the door's checks), GRPO math and policy,
                    checkpoints, publication of signed versions
    metrics.py      the typed metrics events (metrics.jsonl), written here, read by the report
    colocated.py    the same RL run in one process, no swarm: the baseline every run compares to
    engines/        inference: transformers and llama.cpp (+ GGUF export)
    tasks/          tasks with verifiable rewards (sort-digits, JSONL prompt/answer sets)
    models/         base models (the embedded tiny model, built locally)
    speed.py, watchdog.py   decode-speed probe; the orphan watchdog
    cli.py, commands/       the `swarm` console script, one module per subcommand

The protocol (wire types, sync rules, adapter distribution, transport) lives in `swarm/`.
"""
