"""A scenario: which nodes to launch as real processes, and the run manifest they share.

One TOML file (see `scenarios/default.toml` for every field, documented) parsed into frozen
dataclasses and validated as a whole, so a typo fails before any process starts, with an error
that names the file and the field (`default.toml: node[2].engine must be one of ...`).

The `[scenario]` settings are a subset of the run manifest's and take their defaults from its
sections (`swarm.manifest`); `scenario_manifest` builds the manifest from them with the same
`nodes.runconfig.build_manifest` as `swarm init`.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.runconfig import build_manifest
from swarm.manifest import (
    ONE_TRAINER,
    GrpoSection,
    ManifestError,
    ModelSection,
    RunManifest,
    RunSection,
    SwarmSection,
    SyncSection,
    TaskSection,
)
from swarm.sync import SYNC_MODES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROLES = ("trainer", "rollout", "auto")
ACTIONS = ("kill", "restart", "freeze", "thaw", "fill_disk", "free_disk", "partition", "heal", "link")
NODE_ACTIONS = ("kill", "restart", "freeze", "thaw", "fill_disk", "free_disk")
ENGINES = ("auto", "transformers", "llamacpp")
DEFAULT_SCENARIO = Path(__file__).with_name("default.toml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # also a valid manifest run id and a directory name


class ScenarioError(ValueError):
    """The scenario is unreadable, invalid or cannot be run as asked; the message names the file
    and the field (or the option) at fault."""


@dataclass(frozen=True)
class Settings:
    """The `[scenario]` table: the run as a whole."""

    name: str
    """Scenario name; also the manifest's run id. Letters, digits, '.', '_', '-'."""
    steps: int = GrpoSection.steps
    """Trainer steps (manifest grpo.steps); the run ends when the trainer logs `done`."""
    mode: str = SyncSection.mode
    """Manifest sync.mode: 'async' (streaming, lag <= S) or 'sequential' (on-policy)."""
    staleness: int = SyncSection.staleness
    """S, manifest sync.staleness."""
    publish_every: int = SyncSection.publish_every
    """kappa, manifest sync.publish_every."""
    seed: int = RunSection.seed
    """Manifest run.seed."""
    timeout_s: float = 600.0
    """Hard cap on the whole run (launch to `done`), in seconds. The simulator's own setting."""
    announce_period_s: float = 2.0
    """Manifest swarm.announce_period_s: NodeInfo refresh and status.json period. Shorter than the
    manifest's default on purpose: the simulator's live table and its stale-node check read
    status.json, and nodes on one machine find each other and take roles sooner."""
    task: str = TaskSection.name
    """Manifest task.name (with the task's default options)."""
    base: str = ModelSection.base
    """Base model (manifest model.base): 'tiny' (embedded), a Hugging Face id or a local directory."""


@dataclass(frozen=True)
class NodeSpec:
    """One `[[node]]` entry: one `swarm node` process."""

    name: str
    """Unique; names the node's workdir OUT/nodes/NAME and its key OUT/keys/NAME.key."""
    role: str = "auto"
    """'trainer', 'rollout' or 'auto' (passed as `swarm node --role`)."""
    engine: str = "auto"
    """Inference engine: 'auto', 'transformers' or 'llamacpp' (`swarm node --engine`)."""
    threads: int = 1
    """CPU threads for the node's engine (`swarm node --threads`)."""
    scoring_copy: bool = False
    """As trainer, a second copy of the base to check chunks while training (`swarm node --scoring-copy`)."""
    region: str = ""
    """The `[[region]]` it sits in (required when the scenario has regions: links are emulated)."""
    up_mbit: float = 0.0
    """Uplink bandwidth in Mbit/s (0: unlimited)."""
    down_mbit: float = 0.0
    """Downlink bandwidth in Mbit/s (0: unlimited)."""
    cpu_cores: float = 0.0
    """Run like slower hardware: a CPU quota of this many cores for the node's processes (cgroups,
    root only; e.g. 0.25 is a quarter of one core). 0: no quota."""
    max_tok_s: float = 0.0
    """Run like slower hardware without root: generate no faster than this many tokens/s (a cap
    in the rollout, `swarm node --max-tok-s`; works anywhere, unlike cpu_cores). 0: no cap."""
    disk_mb: float = 0.0
    """Put the node's workdir on a small filesystem of its own, this many MB (tmpfs, root only), so
    the timeline can fill it (`fill_disk`) and free it (`free_disk`). 0: the run's disk."""
    count: int = 1
    """A group of this many identical nodes, named NAME-1 .. NAME-COUNT (1: one node named NAME)."""


@dataclass(frozen=True)
class Region:
    """One `[[region]]`: a group of nodes; links are set between regions."""

    name: str


@dataclass(frozen=True)
class Link:
    """One `[[link]]`: the link between two regions (the same region twice: within it), both ways."""

    between: tuple = ()
    """Two region names."""
    delay_ms: float = 0.0
    """One-way delay (the round trip is twice this)."""
    jitter_ms: float = 0.0
    """Each packet's delay varies uniformly by +- this (packets keep their order)."""
    loss: float = 0.0
    """Share of packets dropped, 0 <= loss < 1."""


@dataclass(frozen=True)
class Event:
    """One `[[event]]` of the timeline: `at_s` seconds after the nodes are launched, or once the
    trainer has done `at_step` steps (one of the two)."""

    action: str
    """"kill" (SIGKILL `node`), "restart" (start `node` again: same key and workdir), "freeze" /
    "thaw" (SIGSTOP / SIGCONT `node` and everything it started: a laptop lid closed), "fill_disk" /
    "free_disk" (fill `node`'s small disk to the last few KiB / give the space back), "partition" /
    "heal" (cut / restore the two `regions`), "link" (set the two `regions`' link to delay_ms,
    jitter_ms, loss)."""
    at_s: float = -1.0
    """Seconds after the nodes are launched (-1: not set)."""
    at_step: int = 0
    """Or: once the trainer has done this many steps, whatever the clock says (0: not set)."""
    node: str = ""
    regions: tuple = ()
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0


@dataclass(frozen=True)
class Assertion:
    """One `[[assert]]`: a measured metric of the run (`scenarios.assertions.METRICS`) and its bounds."""

    metric: str
    at_least: float = float("-inf")
    at_most: float = float("inf")
    by_step: int = 0
    """reward only: judge the 10 steps up to this step (0: the run's last 10)."""


@dataclass(frozen=True)
class Variant:
    """One `[[variant]]`: the scenario again with some `[scenario]` settings changed; a file with
    variants runs each one after the other and compares them (like `swarm simulate --compare`)."""

    name: str
    steps: int = 0
    mode: str = ""
    staleness: int = -1
    publish_every: int = 0
    seed: int = -1

    def overrides(self) -> dict:
        unset = {"steps": 0, "mode": "", "staleness": -1, "publish_every": 0, "seed": -1}
        return {k: getattr(self, k) for k, none in unset.items() if getattr(self, k) != none}


@dataclass(frozen=True)
class Scenario:
    settings: Settings
    nodes: tuple[NodeSpec, ...]
    source: str = "<scenario>"
    """How errors name the scenario (its file name)."""
    source_path: str | None = None
    """The file it was read from, copied into the run's out dir."""
    regions: tuple[Region, ...] = ()
    links: tuple[Link, ...] = ()
    events: tuple[Event, ...] = ()
    assertions: tuple[Assertion, ...] = ()
    variants: tuple[Variant, ...] = ()
    entries: tuple[int, ...] = ()
    """For each node, its [[node]] entry in the file (a group's nodes share one)."""

    def entry(self, i: int) -> str:
        """How errors name node i: its file entry (`node[2]`), which a `count` group shares."""
        return f"node[{self.entries[i] if self.entries else i}]"

    def variant(self, v: Variant) -> Scenario:
        """This scenario with one variant's settings (named `NAME-VARIANT`), validated again."""
        settings = dataclasses.replace(self.settings, name=f"{self.settings.name}-{v.name}", **v.overrides())
        out = dataclasses.replace(self, settings=settings, variants=())
        for message in _problems(out):
            raise ScenarioError(f"{self.source}: variant {v.name!r}: {message}")
        return out

    def colocated(self) -> Scenario:
        """The co-located baseline: the same nodes and settings on 127.0.0.1, with no emulated
        links, no device limits and no timeline (what the network and churn cost is measured against)."""
        nodes = tuple(dataclasses.replace(n, region="", up_mbit=0.0, down_mbit=0.0, cpu_cores=0.0, max_tok_s=0.0,
                                          disk_mb=0.0) for n in self.nodes)
        settings = dataclasses.replace(self.settings, name=f"{self.settings.name}-colocated")
        return dataclasses.replace(self, settings=settings, nodes=nodes, regions=(), links=(), events=(), variants=())

    def with_steps(self, steps: int | None) -> Scenario:
        """The same scenario with `--steps` applied (validated like the file's own value)."""
        if steps is None:
            return self
        if steps < 1:
            raise ScenarioError(f"{self.source}: --steps must be >= 1")
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, steps=steps))

    def with_timeout(self, timeout_s: float | None) -> Scenario:
        if timeout_s is None:
            return self
        if timeout_s <= 0:
            raise ScenarioError(f"{self.source}: --timeout must be > 0")
        settings = dataclasses.replace(self.settings, timeout_s=float(timeout_s))
        return dataclasses.replace(self, settings=settings)


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise ScenarioError(f"cannot read scenario {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path.name}: not valid TOML: {e}") from None
    return dataclasses.replace(parse_scenario(raw, source=path.name), source_path=str(path))


def parse_scenario(raw: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """Typed, validated scenario from a plain dict (the parsed TOML)."""

    def fail(message: str):
        raise ScenarioError(f"{source}: {message}")

    unknown = set(raw) - {"scenario", "node", "region", "link", "event", "assert", "variant"}
    if unknown:
        fail(f"unknown table [{min(unknown)}]; known: [scenario], [[node]], [[region]], [[link]], [[event]], "
             "[[assert]], [[variant]]")
    if not isinstance(raw.get("scenario"), dict):
        fail("missing table [scenario] (needs at least name = \"...\")")
    nodes_raw = raw.get("node", [])
    if not isinstance(nodes_raw, list) or not nodes_raw:
        fail("needs at least one [[node]] entry")
    settings = _typed(Settings, raw["scenario"], "scenario", fail)
    nodes, node_entries = _expand_groups(tuple(_typed(NodeSpec, n, f"node[{i}]", fail)
                                               for i, n in enumerate(nodes_raw)), fail)

    def entries(table: str, cls: type) -> tuple:
        items = raw.get(table, [])
        if not isinstance(items, list):
            fail(f"{table} must be an array of tables: [[{table}]]")
        return tuple(_typed(cls, item, f"{table}[{i}]", fail) for i, item in enumerate(items))

    scenario = Scenario(settings, nodes, source, regions=entries("region", Region), links=entries("link", Link),
                        events=tuple(sorted(entries("event", Event), key=lambda e: (e.at_step, e.at_s))),
                        assertions=entries("assert", Assertion), variants=entries("variant", Variant),
                        entries=node_entries)
    for message in _problems(scenario):
        fail(message)
    return scenario


def _expand_groups(specs: tuple[NodeSpec, ...], fail) -> tuple[tuple[NodeSpec, ...], tuple[int, ...]]:
    """Each `count = N` entry as N nodes NAME-1 .. NAME-N, in file order; with each node's entry."""
    out, entries = [], []
    for i, spec in enumerate(specs):
        if not 1 <= spec.count <= 256:
            fail(f"node[{i}].count must be in [1, 256]")
        out += [spec] if spec.count == 1 else [dataclasses.replace(spec, name=f"{spec.name}-{k}", count=1)
                                               for k in range(1, spec.count + 1)]
        entries += [i] * spec.count
    return tuple(out), tuple(entries)


def _typed(cls: type, raw: Any, where: str, fail):
    if not isinstance(raw, dict):
        fail(f"{where} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            fail(f"unknown field {where}.{key}; known: {', '.join(fields)}")
    missing = [name for name, f in fields.items() if f.default is dataclasses.MISSING and name not in raw]
    if missing:
        fail(f"{where}.{missing[0]} is required")
    values = {}
    for key, value in raw.items():
        kind = _KINDS[fields[key].type]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = tuple(value)
        if type(value) is not kind:
            fail(f"{where}.{key} must be {_KIND_NAMES[kind]}, not {type(value).__name__} {value!r}")
        values[key] = value
    return cls(**values)


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               tuple: "a list of names"}
_KINDS = {"str": str, "int": int, "float": float, "bool": bool, "tuple": tuple}


def _problems(sc: Scenario) -> list[str]:
    s = sc.settings
    names, roles = [n.name for n in sc.nodes], {n.role for n in sc.nodes}
    trainers = [n.name for n in sc.nodes if n.role == "trainer"]
    rules = [
        (_NAME.match(s.name), "scenario.name must be 1-64 letters, digits, '.', '_' or '-'"),
        (s.steps >= 1, "scenario.steps must be >= 1"),
        (s.mode in SYNC_MODES, f"scenario.mode must be one of {', '.join(SYNC_MODES)}"),
        (s.staleness >= 0, "scenario.staleness must be >= 0"),
        (s.publish_every >= 1, "scenario.publish_every must be >= 1"),
        (s.timeout_s > 0, "scenario.timeout_s must be > 0"),
        (s.announce_period_s > 0, "scenario.announce_period_s must be > 0"),
        ("trainer" in roles or "auto" in roles, "no node can train: give one node role = \"trainer\""),
        ("rollout" in roles or "auto" in roles, "no node can roll out: add a role = \"rollout\" node"),
        (len(trainers) <= 1, (f"only one node may have role = \"trainer\" (not {len(trainers)}: "
                              f"{', '.join(trainers)}): {ONE_TRAINER}")),
    ]
    problems = []  # a node's own mistake first: it also explains a swarm-level one ("no node can train")
    for i, n in enumerate(sc.nodes):
        if not _NAME.match(n.name):
            problems.append(f"{sc.entry(i)}.name {n.name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if names.count(n.name) > 1:
            problems.append(f"{sc.entry(i)}.name {n.name!r} is used by more than one node")
        if n.role not in ROLES:
            problems.append(f"{sc.entry(i)}.role must be one of {', '.join(ROLES)}, not {n.role!r}")
        if n.engine not in ENGINES:
            problems.append(f"{sc.entry(i)}.engine must be one of {', '.join(ENGINES)}, not {n.engine!r}")
        if n.threads < 1:
            problems.append(f"{sc.entry(i)}.threads must be >= 1")
    return (problems + [message for ok, message in rules if not ok] + _network_problems(sc)
            + _assertion_problems(sc) + _variant_problems(sc))


def _assertion_problems(sc: Scenario) -> list[str]:
    from scenarios.assertions import METRICS

    problems = []
    for i, a in enumerate(sc.assertions):
        if a.metric not in METRICS:
            problems.append(f"assert[{i}].metric must be one of {', '.join(METRICS)}, not {a.metric!r}")
        if a.at_least == float("-inf") and a.at_most == float("inf"):
            problems.append(f"assert[{i}] needs at_least or at_most")
        if a.by_step and a.metric != "reward":
            problems.append(f"assert[{i}].by_step applies to metric = \"reward\" only")
        if not 0 <= a.by_step <= sc.settings.steps:
            problems.append(f"assert[{i}].by_step must be in [0, scenario.steps = {sc.settings.steps}]")
    return problems


def _variant_problems(sc: Scenario) -> list[str]:
    names = [v.name for v in sc.variants]
    problems = [f"variant {n!r} is declared more than once" for n in sorted(set(names)) if names.count(n) > 1]
    return problems + [f"variant[{i}].name {v.name!r} must be 1-64 letters, digits, '.', '_' or '-'"
                       for i, v in enumerate(sc.variants) if not _NAME.match(v.name)]


def _network_problems(sc: Scenario) -> list[str]:
    """Regions, links and the timeline: every name they use must exist, every number be sane."""
    regions = [r.name for r in sc.regions]
    nodes = {n.name for n in sc.nodes}
    problems = [f"region {name!r} is declared more than once" for name in sorted(set(regions))
                if regions.count(name) > 1]
    problems += [f"region[{i}].name {r.name!r} must be 1-64 letters, digits, '.', '_' or '-'"
                 for i, r in enumerate(sc.regions) if not _NAME.match(r.name)]
    for i, n in enumerate(sc.nodes):
        if regions and n.region not in regions:
            problems.append(f"{sc.entry(i)}.region must be one of {', '.join(regions)} (this scenario has regions), "
                            f"not {n.region!r}")
        if not regions and (n.region or n.up_mbit or n.down_mbit):
            problems.append(f"{sc.entry(i)} sets region or bandwidth, but the scenario declares no [[region]]")
        if n.up_mbit < 0 or n.down_mbit < 0:
            problems.append(f"{sc.entry(i)}.up_mbit and down_mbit must be >= 0 (0: unlimited)")
        if not 0 <= n.cpu_cores <= 1024:
            problems.append(f"{sc.entry(i)}.cpu_cores must be in [0, 1024] (0: no quota)")
        if n.max_tok_s < 0:
            problems.append(f"{sc.entry(i)}.max_tok_s must be >= 0 (0: no cap)")
        if not (n.disk_mb == 0 or 16 <= n.disk_mb <= 65536):
            problems.append(f"{sc.entry(i)}.disk_mb must be 0 (the run's disk) or in [16, 65536]")
    pairs = []
    for i, link in enumerate(sc.links):
        problems += _link_problems(f"link[{i}]", link.between, link, regions)
        pairs.append(frozenset(link.between))
    problems += [f"link between {', '.join(sorted(p))} is declared more than once"
                 for p in set(pairs) if pairs.count(p) > 1]
    for i, e in enumerate(sc.events):
        where = f"event[{i}]"
        if e.action not in ACTIONS:
            problems.append(f"{where}.action must be one of {', '.join(ACTIONS)}, not {e.action!r}")
        if (e.at_s >= 0) == (e.at_step > 0):
            problems.append(f"{where} needs at_s (seconds after launch, >= 0) or at_step (>= 1), one of the two")
        if e.action in NODE_ACTIONS and e.node not in nodes:
            problems.append(f"{where}.node must name a [[node]] for {e.action}, not {e.node!r}")
        elif e.action in ("fill_disk", "free_disk") and not next(n for n in sc.nodes if n.name == e.node).disk_mb:
            problems.append(f"{where}: {e.action} needs node {e.node!r} to have a small disk (disk_mb > 0)")
        if e.action in ("partition", "heal", "link"):
            if not regions:
                problems.append(f"{where}: {e.action} needs [[region]]s")
            else:
                problems += _link_problems(where, e.regions, e, regions, field_name="regions")
    return problems


def _link_problems(where: str, between: tuple, spec, regions: list[str], field_name: str = "between") -> list[str]:
    problems = []
    if len(between) != 2 or any(r not in regions for r in between):
        problems.append(f"{where}.{field_name} must name two regions of {', '.join(regions) or '(none declared)'}")
    if spec.delay_ms < 0 or not 0 <= spec.jitter_ms <= spec.delay_ms:
        problems.append(f"{where}: delay_ms must be >= 0 and 0 <= jitter_ms <= delay_ms")
    if not 0 <= spec.loss < 1:
        problems.append(f"{where}.loss must be in [0, 1)")
    return problems


def scenario_manifest(scenario: Scenario, owner_key_id: str, trainer_keys: tuple = ()) -> RunManifest:
    """The run manifest a scenario stands for: its settings in the manifest's sections, every
    other field the manifest's default, built and checked like `swarm init`'s. One trainer
    slot: the validator allows at most one role = "trainer" node, and an "auto" node takes the
    slot when there is none. `trainer_keys`: the keys authorised to train (`simulate.prepare`
    passes those of the scenario's "trainer" and "auto" nodes); none, a settings-only manifest
    in which nobody may train (`swarm baseline`)."""
    s = scenario.settings
    try:
        return build_manifest(
            RunSection(id=s.name, owner_key_id=owner_key_id, seed=s.seed),
            model=ModelSection(base=s.base),
            task=TaskSection(name=s.task),
            grpo=GrpoSection(steps=s.steps),
            sync=SyncSection(mode=s.mode, staleness=s.staleness, publish_every=s.publish_every),
            swarm=SwarmSection(announce_period_s=s.announce_period_s, trainer_keys=tuple(trainer_keys)),
        )
    except ManifestError as e:
        raise ScenarioError(f"{scenario.source}: {e}") from None


def trainer_candidates(scenario: Scenario) -> list[str]:
    """Names of the nodes the run authorises to train, in priority order: the "trainer" node,
    then the "auto" nodes in file order ("rollout" nodes never train)."""
    return ([n.name for n in scenario.nodes if n.role == "trainer"]
            + [n.name for n in scenario.nodes if n.role == "auto"])
