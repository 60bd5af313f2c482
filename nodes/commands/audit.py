"""`swarm audit PATH`: the verified lineage of a run's adapters and a one-line verdict, or what is
wrong with it and an exit code of its own (listed in `swarm audit --help`)."""
from __future__ import annotations

import json
from pathlib import Path

from nodes.cli import CliError

MAX_ROWS = 40


def run(args) -> int:
    from swarm.provenance.audit import audit

    path = Path(args.path)
    if not path.exists():
        raise CliError(f"{path} does not exist; give a run dir (swarm simulate --out), a node workdir, "
                       "a provenance dir or an exported dir")
    trusted = None
    if args.trusted_checkpoint:
        try:
            trusted = Path(args.trusted_checkpoint).read_bytes()
        except OSError as e:
            raise CliError(f"cannot read --trusted-checkpoint {args.trusted_checkpoint}: {e.strerror}") from None
    adapter = Path(args.adapter) if args.adapter else (path / "adapter" if (path / "adapter").is_dir() else None)
    try:
        report = audit(path, trusted_checkpoint=trusted, witnesses=args.witnesses, adapter=adapter,
                       witness_keys=tuple(args.witness_key))
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps(as_json(report, adapter), indent=1))
    elif args.explain is not None:
        explain(report, args.explain)
    else:
        lineage(report)
    if not report.ok:
        if not args.json:
            print(f"FAILED ({report.failure.kind}): {report.failure.message}")
        return report.failure.exit_code
    if not args.json:
        head = report.records[-1] if report.records else None
        print(f"VERIFIED: {len(report.records)} versions, head v{head.version if head else '-'}, one unbroken chain "
              f"signed by authorised trainers; checkpoint of {report.checkpoint_size} entries; "
              f"{len(report.witnesses)} {'' if report.witnesses_vetted else 'unvetted '}witness cosignature(s); "
              f"{report.copies} cop{'y' if report.copies == 1 else 'ies'} "
              f"of the log consistent" + (f"; adapter {adapter} matches its entry" if adapter else ""))
    return 0


def lineage(report) -> None:
    m = report.manifest
    if m is not None:
        print(f"run {m.manifest.run.id}  manifest {m.digest[:16]}  log {report.log_dir}")
        for state in report.trust.states[1:]:
            print(f"owner update #{state.serial}: trainers {', '.join(k[:16] for k in state.trainer_keys) or '-'}"
                  f" (removed keys sign nothing from v{state.from_version}), owner {state.owner_key_id[:16]}")
    rows = report.records[-MAX_ROWS:]
    if len(report.records) > MAX_ROWS:
        print(f"(the first {len(report.records) - MAX_ROWS} versions verified, not shown)")
    print(f"{'version':>7}  {'step':>5}  {'trainer':16}  {'under':>5}  {'parent':>6}  {'chunks':>6}  producers")
    for r in rows:
        producers = sorted({c.producer[:8] for c in r.chunks})
        under = f"#{r.manifest_serial}" if r.manifest_serial else "-"
        print(f"{r.version:>7}  {r.step:>5}  {r.trainer_key_id[:16]}  {under:>5}  {r.parent_version:>6}  "
              f"{len(r.chunks):>6}  {', '.join(producers) or '-'}")


def explain(report, version: int) -> None:
    record = next((r for r in report.records if r.version == version), None)
    if record is None:
        print(f"v{version} is not among the {len(report.records)} verified entries")
        return
    print(f"v{record.version} (step {record.step}), signed by trainer {record.trainer_key_id}")
    print(f"  parent   v{record.parent_version}  entry {record.parent_entry or '-'}")
    print(f"  manifest {'as signed' if not record.manifest_serial else f'with owner update #{record.manifest_serial}'}")
    print(f"  base     sha256 {record.base_sha256 or '(not pinned)'}   GRPO settings {record.grpo_digest[:16]}")
    for name, digest in record.files:
        print(f"  file     {name:28} sha256 {digest}")
    per_producer: dict[str, int] = {}
    for c in record.chunks:
        per_producer[c.producer] = per_producer.get(c.producer, 0) + 1
    print(f"  trained on {len(record.chunks)} chunk(s) from {len(per_producer)} producer(s):")
    for producer, n in sorted(per_producer.items()):
        print(f"    {producer[:16]}  {n} chunk(s)")
    for c in record.chunks[:10]:
        print(f"    chunk {c.digest[:16]}  by {c.producer[:16]}  signed envelope {c.envelope[:16]}")


def as_json(report, adapter) -> dict:
    return {
        "ok": report.ok, "failure": None if report.ok else {"kind": report.failure.kind,
                                                             "message": report.failure.message,
                                                             "exit_code": report.failure.exit_code},
        "log": str(report.log_dir), "copies": report.copies,
        "run": report.manifest.manifest.run.id if report.manifest else None,
        "manifest_digest": report.manifest.digest if report.manifest else None,
        "checkpoint_size": report.checkpoint_size, "witnesses": report.witnesses,
        "witnesses_vetted": report.witnesses_vetted,
        "adapter": str(adapter) if adapter else None,
        "manifest_updates": len(report.trust.updates) if report.trust else 0,
        "versions": [{"version": r.version, "step": r.step, "trainer": r.trainer_key_id, "parent": r.parent_version,
                      "manifest_serial": r.manifest_serial,
                      "files": dict(r.files), "chunks": len(r.chunks),
                      "producers": sorted({c.producer for c in r.chunks})} for r in report.records],
    }
