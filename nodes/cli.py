"""`swarm`: one console script, a subcommand per job.

Only argparse and the manifest schema (whose fields give `swarm init` its defaults and help) are
imported up front, so `swarm --help` is instant; each subcommand imports its heavy dependencies
(torch, hivemind) when it runs. Expected failures (bad manifest, unreadable
key, unreachable peers) are reported as one line naming the problem and the fix, exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"
GRPO_FLAGS = ("prompts_per_step", "group_size", "max_new_tokens", "prompts_per_chunk", "max_prompt_tokens",
              "temperature", "lr", "clip", "kl_coef", "grad_clip")
"""The [grpo] settings `swarm init` takes as flags (--prompts-per-step, ...); --steps is one too."""


class CliError(Exception):
    """An expected, user-facing failure: printed without a traceback."""


def _doc(section: type, name: str) -> str:
    """A manifest field's docstring, as argparse help (which formats '%')."""
    from swarm.manifest import field_docs

    return field_docs(section)[name].replace("%", "%%")


def _setting(section: type, name: str, metavar: str) -> dict:
    """add_argument keywords for a flag that sets one manifest field: its default, type and help
    are the field's own (declared once, in swarm.manifest)."""
    default = getattr(section, name)
    return {"default": default, "type": type(default), "metavar": metavar,
            "help": f"{_doc(section, name)} (default: %(default)s)"}


def build_parser() -> argparse.ArgumentParser:
    from swarm.manifest import (
        LORA_TARGETS,
        GrpoSection,
        LoraSection,
        ModelSection,
        RunSection,
        SwarmSection,
        SyncSection,
        TaskSection,
    )
    from swarm.sync import SYNC_MODES

    p = argparse.ArgumentParser(prog="swarm", description="Echo Swarm: peer-to-peer RL post-training on LoRA.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("keygen", help="create a node/owner identity key (Ed25519, mode 0600)")
    s.add_argument("--out", required=True, help="where to write the key file")
    s.add_argument("--force", action="store_true", help="overwrite an existing key file")

    s = sub.add_parser("init", help="write and sign a run manifest")
    s.add_argument("--out", required=True, help="manifest file to write (TOML)")
    s.add_argument("--owner-key", required=True, help="owner key file (from `swarm keygen`)")
    s.add_argument("--run-id", default=None, help="run name (default: derived from time)")
    s.add_argument("--task", **_setting(TaskSection, "name", "NAME"))
    s.add_argument("--task-option", action="append", default=[], metavar="K=V",
                   help=f"task option, repeatable: {_doc(TaskSection, 'options')}")
    s.add_argument("--base", **_setting(ModelSection, "base", "BASE"))
    s.add_argument("--mode", choices=SYNC_MODES, **_setting(SyncSection, "mode", "|".join(SYNC_MODES)))
    s.add_argument("--staleness", **_setting(SyncSection, "staleness", "S"))
    s.add_argument("--publish-every", **_setting(SyncSection, "publish_every", "KAPPA"))
    s.add_argument("--steps", **_setting(GrpoSection, "steps", "N"))
    for name in GRPO_FLAGS:
        metavar = "N" if isinstance(getattr(GrpoSection, name), int) else "X"
        s.add_argument(f"--{name.replace('_', '-')}", dest=f"grpo_{name}", **_setting(GrpoSection, name, metavar))
    s.add_argument("--lora-r", dest="lora_r", **_setting(LoraSection, "r", "R"))
    s.add_argument("--lora-alpha", dest="lora_alpha", **_setting(LoraSection, "alpha", "ALPHA"))
    s.add_argument("--lora-targets", dest="lora_targets", default=",".join(LoraSection.targets), metavar="M,M,...",
                   help=f"{_doc(LoraSection, 'targets')} Comma-separated, from {', '.join(LORA_TARGETS)} "
                        "(default: all)")
    s.add_argument("--trainer-slots", **_setting(SwarmSection, "trainer_slots", "N"))
    s.add_argument("--trainer-key", action="append", default=[], metavar="KEYID",
                   help=f"repeatable: {_doc(SwarmSection, 'trainer_keys')}")
    s.add_argument("--open-training-UNSAFE", dest="open_training", action="store_true",
                   help=f"{_doc(SwarmSection, 'open_training')} (swarm.open_training; default: off)")
    s.add_argument("--rollout-key", action="append", default=[], metavar="KEYID",
                   help=f"repeatable: {_doc(SwarmSection, 'rollout_keys')}")
    s.add_argument("--announce-period", **_setting(SwarmSection, "announce_period_s", "SECONDS"))
    s.add_argument("--seed", **_setting(RunSection, "seed", "N"))

    s = sub.add_parser("trust", help="change who may train or roll out in a live swarm (owner-signed update)",
                       description="Sign the next manifest update: the run keeps its manifest and digest, and "
                                   "nodes apply the update (from MANIFEST.updates beside their manifest, or from "
                                   "any peer's provenance log) only when it is signed by the current owner key. "
                                   "Without changes, lists the updates so far.")
    s.add_argument("--run", required=True, metavar="MANIFEST", help="the signed run manifest")
    s.add_argument("--owner-key", required=True, help="the current owner's key file")
    s.add_argument("--add-trainer-key", action="append", default=[], metavar="KEYID", help="allow a key to train")
    s.add_argument("--remove-trainer-key", action="append", default=[], metavar="KEYID",
                   help="revoke a key's right to train (needs --from-version)")
    s.add_argument("--add-rollout-key", action="append", default=[], metavar="KEYID",
                   help="admit a key to a closed swarm")
    s.add_argument("--remove-rollout-key", action="append", default=[], metavar="KEYID",
                   help="remove a key from a closed swarm")
    s.add_argument("--new-owner-key", default=None, metavar="FILE",
                   help="hand the run to another owner key (its key file: it signs the update too)")
    s.add_argument("--from-version", type=int, default=None, metavar="V",
                   help="the first adapter version a removed trainer key may no longer sign; versions it "
                        "signed from V on are refused everywhere (use the next version for a planned "
                        "rotation, the first one you distrust for a stolen key)")

    s = sub.add_parser("node", help="run a node: join the swarm, advertise, take a role")
    s.add_argument("--run", required=True, help="signed run manifest")
    s.add_argument("--key", required=True, help="this node's key file (created if missing)")
    s.add_argument("--listen", action="append", default=None, metavar="MADDR",
                   help=f"multiaddr to listen on (default {DEFAULT_LISTEN})")
    s.add_argument("--announce", action="append", default=None, metavar="MADDR",
                   help="multiaddr others should dial (needs an explicit port)")
    s.add_argument("--initial-peers", nargs="*", default=[], metavar="MADDR", help="peers to join through")
    s.add_argument("--join-patience", type=float, default=60.0, metavar="SECONDS",
                   help="keep trying initial peers that do not answer this long (not up yet, or behind a "
                        "partition) before giving up (default 60)")
    s.add_argument("--role", choices=("auto", "rollout", "trainer"), default="auto")
    s.add_argument("--workdir", default=None, help="state directory (default ./runs/<run-id>/<key-id>)")
    s.add_argument("--upnp", action="store_true", help="ask the router for a port mapping (off by default)")
    s.add_argument("--engine", choices=("auto", "transformers", "llamacpp"), default="auto",
                   help="rollout engine (auto: llama.cpp when installed, else transformers)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for the engine / trainer")
    s.add_argument("--base-gguf", default=None, metavar="FILE",
                   help="as rollout (llama.cpp), sample from this GGUF copy of the base, e.g. a Q8_0 or Q4_K_M "
                        "one for a laptop: checked against the manifest's probe before it generates")
    s.add_argument("--scoring-copy", action="store_true",
                   help="as trainer, keep a second copy of the base to check chunks while training (faster "
                        "intake, twice the memory; default: one copy, used in turn)")
    s.add_argument("--max-tok-s", type=float, default=0.0, metavar="N",
                   help="as rollout, generate no faster than N tokens/s: behave like a slower device (0: no cap)")
    s.add_argument("--shape-links", default=None, metavar="FILE",
                   help="emulate network links inside the transport from this links file (what `swarm simulate` "
                        "writes where it cannot shape real packets: no root)")

    s = sub.add_parser("peers", help="show the live swarm")
    s.add_argument("--run", required=True, help="signed run manifest")
    s.add_argument("--initial-peers", nargs="+", required=True, metavar="MADDR")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the swarm")

    s = sub.add_parser("simulate", help="run a scenario as real node processes on 127.0.0.1 and report")
    s.add_argument("scenario", nargs="?", default=None,
                   help="scenario TOML (default: the packaged scenarios/default.toml)")
    s.add_argument("--out", default=None, help="fresh output directory (default runs/<scenario>-<timestamp>)")
    s.add_argument("--compare", nargs="+", default=None, metavar="SCENARIO",
                   help="run these scenarios one after the other and plot them together")
    s.add_argument("--baseline", action="store_true",
                   help="also run the co-located copy (no links, device limits or timeline) and overlay it")
    s.add_argument("--emulation", choices=("auto", "namespaces", "transport"), default="auto",
                   help="how links between regions are emulated: real packets in network namespaces (root, "
                        "Linux), inside the nodes' transport, or auto: namespaces where possible")
    s.add_argument("--steps", type=int, default=None, help="trainer steps (overrides the scenario's)")
    s.add_argument("--timeout", type=float, default=None, help="seconds before the run is stopped")
    s.add_argument("--quiet", action="store_true", help="plain progress lines instead of the live table")

    s = sub.add_parser("baseline", help="the co-located reference: the same RL run in one process, no swarm")
    s.add_argument("scenario", nargs="?", default=None, help="scenario TOML whose settings to use (default: default)")
    s.add_argument("--run", default=None, metavar="MANIFEST", help="use a signed run manifest's settings instead")
    s.add_argument("--steps", type=int, default=None, help="steps (default: the run's)")
    s.add_argument("--staleness", type=int, default=0, help="rollouts lag this many versions (default 0)")
    s.add_argument("--out", default=None, help="JSON lines file, one record per step (default runs/baseline-*.jsonl)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")

    s = sub.add_parser("export", help="write one adapter version as a directory PEFT, transformers and llama.cpp load",
                       description="Export an adapter version of a run: a PEFT dir (AutoPeftModelForCausalLM), the "
                                   "base when it is the embedded tiny model, the trainer's signed entry; optionally "
                                   "the merged model and GGUF files. DIR/README.md says how to load each.")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a `swarm simulate` out dir, or a node's --workdir")
    s.add_argument("--version", default="latest", metavar="N|latest",
                   help="adapter version to export (default: the newest held)")
    s.add_argument("--out", required=True, metavar="DIR", help="fresh output directory (must not exist, or be empty)")
    s.add_argument("--merge", action="store_true",
                   help="also write merged/: the adapter merged into the base (AutoModelForCausalLM)")
    s.add_argument("--gguf", action="store_true",
                   help="also write adapter.gguf (LoRA for llama.cpp) and, for the tiny base, base.gguf")
    s.add_argument("--base", default=None, metavar="tiny|HF_ID|DIR",
                   help="the base model, when the run's manifest (run.toml) is not found beside RUN_DIR "
                        "(default: the manifest's, else the adapter config's)")

    from swarm.provenance.exit_codes import EXIT_CODES  # a dict, no heavy imports

    codes = ", ".join(f"{code} {kind}" for kind, code in EXIT_CODES.items())
    s = sub.add_parser("audit", help="verify the signed provenance of every adapter version, offline",
                       description="Verify a run's provenance log from its files alone: trust root, every entry's "
                                   "signature and schema, the chain of versions, authorised signers, chunk "
                                   "attestations, the signed checkpoint, other copies and a trusted checkpoint, "
                                   "witness cosignatures and, with --adapter, an adapter's files.",
                       epilog=f"exit codes: 0 verified, 2 usage error, {codes}")
    s.add_argument("path", metavar="PATH", help="a run dir, a node workdir, a provenance dir or an exported dir")
    s.add_argument("--adapter", default=None, metavar="DIR", help="also check this adapter directory's files")
    s.add_argument("--trusted-checkpoint", default=None, metavar="FILE",
                   help="an older checkpoint note you trust: the log must be consistent with it")
    s.add_argument("--witnesses", type=int, default=0, metavar="K", help="require K witness cosignatures")
    s.add_argument("--witness-key", action="append", default=[], metavar="KEYID",
                   help="count only these witnesses' cosignatures (repeatable; default: a closed swarm's "
                        "rollout keys, else any member's, reported as unvetted)")
    s.add_argument("--json", action="store_true", help="machine-readable report")
    s.add_argument("--explain", type=int, default=None, metavar="V", help="show what went into version V")
    return p


def quiet_libraries() -> None:
    """Our progress lines only: no weight-loading bars or deprecation notes from transformers."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    module = importlib.import_module(f"nodes.commands.{args.command}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # expected errors carry their own message; anything else is a bug
        message = user_error_message(e)
        if message is None:
            raise
        print(f"swarm {args.command}: error: {message}", file=sys.stderr)
        return 2


def user_error_message(error: Exception) -> str | None:
    """The message of an expected failure, or None for a bug (which keeps its traceback)."""
    from crypto.errors import CryptoError
    from nodes.models.pinning import BaseError
    from swarm.manifest import ManifestError
    from swarm.membership import JoinError

    if isinstance(error, (CliError, ManifestError, JoinError, CryptoError, BaseError)):
        return str(error)
    return None

