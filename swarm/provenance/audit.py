"""`swarm audit`: verify a run's provenance offline, from its files alone, and say what is wrong.

Checks, in order (the first failure decides the verdict and the exit code):

    manifest      the trust root: provenance/manifest.toml, signed by the run's owner, and the
                  owner's updates to it in updates.jsonl (each signed by the owner of its time)
    format        the log file's framing (a torn or damaged file)
    signature     every entry's DSSE signature over its exact bytes, by a key in keys.json
    schema        in-toto Statement v1 with our predicate type, strictly typed
    run           every entry of this run's manifest (no mix-and-match)
    unauthorised  every signer is a key the manifest authorises to train (under the update its
                  entry names, and not revoked by a later one from that version on)
    chain         versions increase, each names the previous entry as its parent: no gap, fork,
                  rollback or second entry for a version
    chunks        no chunk is consumed by two versions
    checkpoint    the signed checkpoint (C2SP) commits to exactly these entries
    inconsistent  every other copy of the log (other nodes' in a run dir) and a trusted older
                  checkpoint are consistent with it: a split view or rewritten history shows here
    witnesses     at least K witnesses cosigned the checkpoint (--witnesses K). Only vetted keys
                  count: those given with --witness-key, else a closed swarm's rollout keys; in an
                  open swarm any member's (a trainer could make keys up: the report says so)
    files         with --adapter DIR: every file re-hashes to the entry (extra, missing, changed)
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from crypto.errors import CryptoError
from crypto.identity import key_id_of
from crypto.merkle import consistency_proof, leaf_hash, root_of, verify_consistency
from swarm.manifest import ManifestError, SignedManifest, load_manifest
from swarm.provenance.checkpoints import checkpoint_size, cosigners, verify_checkpoint
from swarm.provenance.exit_codes import EXIT_CODES
from swarm.provenance.log import FRAME, verify_entry
from swarm.rejections import Reason, Rejection
from swarm.trust import TrustRoot
from swarm.versions import GGUF_FILE, AdapterVersion

NOT_SUBJECT = {"version.dsse", "delta.bin", "README.md"}
"""Files of a version or export directory that are not the adapter itself."""
_REASON_CLASS = {
    Reason.BAD_SIGNATURE: "signature", Reason.SCHEMA: "schema", Reason.OVERSIZE: "schema",
    Reason.WRONG_RUN: "run", Reason.WRONG_SIGNER: "unauthorised", Reason.FORK: "chain", Reason.ROLLBACK: "chain",
    Reason.EQUIVOCATION: "chain", Reason.INCONSISTENT: "inconsistent", Reason.DIGEST: "files",
    Reason.UNKNOWN_UPDATE: "unauthorised",
}


class AuditFailure(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]


@dataclass
class AuditReport:
    log_dir: Path
    manifest: SignedManifest | None = None
    trust: TrustRoot | None = None
    """The manifest with the owner's updates applied (who may sign what, and from when)."""
    records: list[AdapterVersion] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    """RFC 6962 leaf hashes of the entries."""
    checkpoint_size: int = 0
    witnesses: dict[str, int] = field(default_factory=dict)
    """key id -> cosigned time of each counted witness."""
    witnesses_vetted: bool = False
    """Whether only named witness keys were counted (else any member's)."""
    copies: int = 1
    failure: AuditFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def find_log_dirs(path: Path) -> list[Path]:
    """Every provenance directory at PATH: itself, PATH/provenance, or each node's in a run dir."""
    path = Path(path)
    if (path / "entries.log").is_file():
        return [path]
    if (path / "provenance" / "entries.log").is_file():
        return [path / "provenance"]
    return sorted(p.parent for p in path.glob("nodes/*/provenance/entries.log"))


def audit(path: Path, *, trusted_checkpoint: bytes | None = None, witnesses: int = 0,
          adapter: Path | None = None, witness_keys: tuple[str, ...] = ()) -> AuditReport:
    """Verify the provenance at `path` (a run dir, a node workdir, a log dir or an export)."""
    dirs = find_log_dirs(path)
    if not dirs:
        raise FileNotFoundError(f"no provenance log at {path} (expected entries.log, provenance/ or nodes/*/provenance/)")
    copies = {d: _read_entries(d) for d in dirs}
    main = max(dirs, key=lambda d: (len(copies[d][0]), str(d)))  # the longest copy: the trainer's
    report = AuditReport(main, copies=len(dirs))
    try:
        report.trust = _trust_root(main)
        report.manifest = report.trust.signed
        entries, torn = copies[main]
        if torn:
            raise AuditFailure("format", f"{main}/entries.log is damaged after entry {len(entries)}")
        report.entries, report.records = entries, _verify_chain(entries, _keys(main), report.trust)
        report.leaves = [leaf_hash(e) for e in entries]
        _check_chunks(report.records)
        note = _read(main / "checkpoint.note")
        report.checkpoint_size = _check_checkpoint(note, main, report)
        for other in dirs:
            if other != main:
                _check_copy(other, copies[other][0], report)
        if trusted_checkpoint is not None:
            _check_trusted(trusted_checkpoint, report)
        vetted = set(witness_keys) or set(report.trust.manifest.swarm.rollout_keys)
        report.witnesses_vetted = bool(vetted)
        keys = _member_keys(main)
        report.witnesses = cosigners(note, {k: v for k, v in keys.items() if not vetted or k in vetted})
        if len(report.witnesses) < witnesses:
            raise AuditFailure("witnesses", f"{len(report.witnesses)} witness cosignature(s) on the checkpoint, "
                                            f"{witnesses} required")
        if adapter is not None:
            _check_adapter(Path(adapter), report)
    except AuditFailure as failure:
        report.failure = failure
    return report


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise AuditFailure("checkpoint" if path.name == "checkpoint.note" else "format",
                           f"cannot read {path}: {e.strerror}") from None


def _read_entries(log_dir: Path) -> tuple[list[bytes], bool]:
    data = (log_dir / "entries.log").read_bytes()
    entries, pos = [], 0
    while pos + FRAME <= len(data):
        n = int.from_bytes(data[pos : pos + FRAME], "big")
        if pos + FRAME + n > len(data):
            break
        entries.append(data[pos + FRAME : pos + FRAME + n])
        pos += FRAME + n
    return entries, pos != len(data)


def _trust_root(log_dir: Path) -> TrustRoot:
    try:
        trust = TrustRoot(load_manifest(log_dir / "manifest.toml"))
        trust.read(log_dir / "updates.jsonl")
        return trust
    except ManifestError as e:
        raise AuditFailure("manifest", str(e)) from None
    except Rejection as e:
        raise AuditFailure("manifest", f"{log_dir}/updates.jsonl: update #{len(trust.updates) + 1}: {e}") from None


def _keys(log_dir: Path) -> dict[str, bytes]:
    try:
        raw = json.loads(_read(log_dir / "keys.json"))
        keys = {k: bytes.fromhex(v) for k, v in raw.items()}
    except (ValueError, AttributeError, TypeError, AuditFailure):
        raise AuditFailure("signature", f"{log_dir}/keys.json is missing or malformed") from None
    bad = [k for k, v in keys.items() if len(v) != 32 or key_id_of(v) != k]
    if bad:
        raise AuditFailure("signature", f"keys.json names key {bad[0][:16]} with another key's bytes")
    return keys


def _member_keys(log_dir: Path) -> dict[str, bytes]:
    try:
        return _keys(log_dir)
    except AuditFailure:
        return {}


def _verify_chain(entries: list[bytes], keys: dict[str, bytes], trust: TrustRoot) -> list[AdapterVersion]:
    records: list[AdapterVersion] = []
    seen_versions: set[int] = set()
    for i, envelope in enumerate(entries):
        parent = records[-1] if records else None
        try:
            record = verify_entry(envelope, parent, entries[i - 1] if i else None, keys=keys, trust=trust)
        except Rejection as e:
            if e.reason in (Reason.ROLLBACK, Reason.FORK):
                version = _version_of(envelope)
                if version in seen_versions:
                    raise AuditFailure("chain", f"entry {i}: a second entry for v{version} (equivocation)") from None
            raise AuditFailure(_REASON_CLASS.get(e.reason, "schema"), f"entry {i}: {e}") from None
        seen_versions.add(record.version)
        records.append(record)
    return records


def _version_of(envelope: bytes) -> int | None:
    """The version an entry claims, read without trusting it (only to name an equivocation)."""
    try:
        return json.loads(base64.b64decode(json.loads(envelope)["payload"]))["predicate"]["version"]
    except (ValueError, KeyError, TypeError):
        return None


def _check_chunks(records: list[AdapterVersion]) -> None:
    counts = Counter(c.digest for r in records for c in r.chunks)
    twice = [d for d, n in counts.items() if n > 1]
    if twice:
        holders = [r.version for r in records if any(c.digest == twice[0] for c in r.chunks)]
        raise AuditFailure("chunks", f"chunk {twice[0][:16]} is consumed by versions {holders}")


class _LogView:
    """What `verify_checkpoint` needs of a log: its origin, keys and authorisation."""

    def __init__(self, log_dir: Path, trust: TrustRoot):
        self.origin, self.keys, self.authorised = trust.signed.namespace, _keys(log_dir), trust.ever_trainer


def _check_checkpoint(note: bytes, log_dir: Path, report: AuditReport) -> int:
    leaves = report.leaves
    try:
        size = checkpoint_size(note)
    except ValueError as e:
        raise AuditFailure("checkpoint", f"checkpoint.note: {e}") from None
    if size > len(leaves):
        raise AuditFailure("checkpoint", f"the checkpoint covers {size} entries; the log holds {len(leaves)}")
    try:
        verify_checkpoint(note, _LogView(log_dir, report.trust), size=size, root=root_of(leaves[:size]))
    except Rejection as e:
        raise AuditFailure("checkpoint", f"checkpoint.note: {e}") from None
    if size < len(leaves):
        raise AuditFailure("checkpoint", f"entries {size}..{len(leaves) - 1} are not covered by a signed checkpoint")
    return size


def _check_copy(other: Path, entries: list[bytes], report: AuditReport) -> None:
    """Another node's copy must be a prefix of the main log: else someone was shown another history."""
    n = len(entries)
    if entries != report.entries[:n]:
        first = next(i for i, (a, b) in enumerate(zip(entries, report.entries)) if a != b)
        raise AuditFailure("inconsistent", f"{other} holds another history from entry {first} on (a split view)")


def _check_trusted(note: bytes, report: AuditReport) -> None:
    leaves = report.leaves
    try:
        old_size = checkpoint_size(note)
        if old_size > len(leaves):
            raise AuditFailure("inconsistent", f"the trusted checkpoint covers {old_size} entries; the log holds "
                                               f"{len(leaves)} (a rollback, or a frozen copy)")
        verify_checkpoint(note, _LogView(report.log_dir, report.trust), size=old_size,
                          root=root_of(leaves[:old_size]))
        if 0 < old_size < len(leaves):
            verify_consistency(old_size, len(leaves), root_of(leaves[:old_size]), root_of(leaves),
                               consistency_proof(leaves, old_size))
    except (Rejection, CryptoError, ValueError) as e:
        raise AuditFailure("inconsistent", f"not consistent with the trusted checkpoint: {e}") from None


def _check_adapter(directory: Path, report: AuditReport) -> None:
    """The files of an adapter directory against the entry it names (version.dsse) or the head.

    An exported adapter (DIR/adapter beside DIR/provenance) is checked as `swarm export` writes it:
    its config must be the signed one (kept in provenance/) but for `base_model_name_or_path`."""
    if directory.name == "adapter" and (directory.parent / "provenance" / "version.dsse").is_file():
        _check_exported_config(directory / "adapter_config.json", directory.parent / "provenance" / "adapter_config.json")
        with tempfile.TemporaryDirectory(prefix="echo-audit-") as tmp:
            _check_version_dir(_exported_view(directory, Path(tmp)), report, shown=directory)
        return
    _check_version_dir(directory, report, shown=directory)


def _check_version_dir(directory: Path, report: AuditReport, shown: Path) -> None:
    record_path = directory / "version.dsse"
    envelope = record_path.read_bytes() if record_path.is_file() else report.entries[-1]
    if envelope not in report.entries:
        raise AuditFailure("files", f"{shown}: its version.dsse is not an entry of this log")
    record = report.records[report.entries.index(envelope)]
    expected = record.digests
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() or p.is_symlink()}
    present = {p for p in present if p not in NOT_SUBJECT and not p.startswith("provenance/")}
    problems = [f"extra file {p}" for p in sorted(present - set(expected))]
    problems += [f"missing file {n}" for n in sorted(set(expected) - present - {GGUF_FILE})]  # the GGUF is optional
    for name in sorted(set(expected) & present):
        path = directory / name
        if path.is_symlink() or not path.resolve().is_relative_to(directory.resolve()):
            problems.append(f"{name} is a link or escapes the directory")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != expected[name]:
            problems.append(f"{name} changed")
    if problems:
        raise AuditFailure("files", f"adapter v{record.version} at {shown}: " + "; ".join(problems))


def _check_exported_config(exported: Path, signed: Path) -> None:
    try:
        a, b = json.loads(exported.read_bytes()), json.loads(signed.read_bytes())
    except (OSError, ValueError) as e:
        raise AuditFailure("files", f"{exported}: {e}") from None
    for config in (a, b):
        config.pop("base_model_name_or_path", None)
        config.pop("revision", None)
    if a != b:
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise AuditFailure("files", f"{exported} differs from the signed config in {changed}")


def _exported_view(adapter: Path, view: Path) -> Path:
    """`view` laid out like a version dir with copies of the export's files: the signed config and
    entry from provenance/, the weights from adapter/, the GGUF LoRA if exported."""
    root = adapter.parent
    for name, source in (("adapter_model.safetensors", adapter / "adapter_model.safetensors"),
                         ("adapter_config.json", root / "provenance" / "adapter_config.json"),
                         ("version.dsse", root / "provenance" / "version.dsse"),
                         (GGUF_FILE, root / "adapter.gguf")):
        if source.is_file():
            (view / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, view / name)
    return view
