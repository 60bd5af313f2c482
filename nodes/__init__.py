"""What runs on one machine: the node lifecycle, its role workers, engines, tasks, models, the CLI.

    node.py         join, advertise, compute the role, follow role changes; the swarm questions
                    workers may ask (`trainers`, `members`, `holders`, `advertise`)
    services.py     the node's P2P services (status, chunks, adapter, log, cosign), the worker
                    switch, a role that cannot start reported (never a silent zombie)
    context.py      WorkerContext: the typed handles a role worker gets
    rollout.py      the rollout worker: generate, sign, seal, send; a second thread follows the
                    trainer (log sync as a witness, adapter fetch)
    spool.py        signed chunks kept on disk while no trainer takes them
    disk.py         a full workdir: what needs the disk pauses (the node says so) and resumes
    trainer/        the trainer worker: intake (the door's checks), GRPO math and policy,
                    checkpoints, publication of signed versions
    metrics.py      the typed metrics events (metrics.jsonl), written here, read by the report
    colocated.py    the same RL run in one process, no swarm: the baseline every run compares to
    engines/        inference: transformers and llama.cpp (+ GGUF export for Llama, llama.cpp's
                    own converters for every other architecture)
    tasks/          tasks with verifiable rewards (sort-digits, JSONL prompt/answer sets)
    models/         base models (the embedded tiny model, built locally; pinning of any base)
    logs.py         the node's log (stderr and WORKDIR/node.log), third-party noise quieted
    memory.py       freed tensor memory goes back to the system (glibc's mmap threshold)
    speed.py, watchdog.py   decode-speed probe; the orphan watchdog
    cli.py, commands/       the `swarm` console script, one module per subcommand

The protocol (wire types, sync rules, adapter distribution, transport) lives in `swarm/`.
"""
