"""Rollout node memory vs the bare engine: a real `swarm node --role rollout`'s peak against a plain script's.

For each engine (llama.cpp, transformers) two things run on the same base (default: the embedded
tiny model; `--base DIR` for a local Hugging Face directory):

  bare  a fresh Python process that does only what the engine must: llama.cpp: `llama_cpp.Llama`
        on the base's f32 GGUF (the file our engine loads) with our engine's context (the same
        number of KV cells, f32 cache, flash attention off, one thread), then a few sampled tokens;
        transformers: `AutoModelForCausalLM.from_pretrained` and `generate` on a batch of one
        chunk's size (prompts_per_chunk x group_size rows, max_new_tokens), both from the manifest's
        probe prompt. No torch in the llama.cpp one, no hivemind in either. Its peak: its VmHWM, read
        from /proc once it has generated (not `ru_maxrss`: Linux carries that over fork and exec, so
        a child's starts at this script's own RSS).
  node  a real `swarm node --role rollout --engine E --threads 1` in a small swarm this script
        starts (a manifest from `swarm init` with the default workload, and a trainer node), run
        until it has made CHUNKS chunks, at least one of them with a trainer's adapter (version >=
        1: the adapter swap is part of a rollout's life). Its process tree is sampled every 0.2 s.
        Its peak: the node process's VmHWM (peak RSS, counted the way the bare one's is) plus the
        peak USS (private memory) of each of its other processes except p2pd: the forked hivemind
        DHT child (its pages shared copy-on-write with the node are in the node's RSS already) and
        the orphan watchdog. Adding per-process peaks taken at different moments makes this an upper
        bound; `sampled_peak_mib` is the largest simultaneous sum seen. p2pd (hivemind's Go daemon)
        is reported apart, and in `ratio_with_p2pd`.

Reported per engine, in MiB: both peaks, the node's per-process breakdown, the fixed overhead
(node - bare), and ratio = node peak / bare peak. The bare runs happen before the swarm starts,
on a quiet box. The node imports torch, transformers and hivemind whatever its engine, a fixed few
hundred MiB: on the tiny model that dominates a llama.cpp rollout (a bare llama.cpp on it is
~tens of MiB), so its ratio is expected to miss the goal there; on a real model the weights
dominate and the ratio tends to 1 + overhead / bare peak. `--base DIR` measures that on another
model: the manifest names DIR, the trainer loads it too (memory and time on a small box), and the
llama.cpp runs convert it to GGUF once (cached, as the engine does).

Goal (issue): per node peak memory / the bare engine's on the same model: llama.cpp rollout <= 1.5,
transformers rollout <= 1.3. `ok` says whether every measured engine meets its goal.

    python benchmarks/rollout_memory_bench.py [--base tiny|HF_DIR] [--engines llamacpp,transformers]
                                              [--chunks 4] [--timeout 300]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HIVEMIND_LOGLEVEL", "ERROR")
# hivemind's default torch sharing strategy starts a torch_shm_manager that outlives every DHT.
os.environ.setdefault("HIVEMIND_MEMORY_SHARING_STRATEGY", "file_descriptor")

GOALS = {"llamacpp": 1.5, "transformers": 1.3}
SAMPLE_S = 0.2
MIB = 1 << 20
PARALLEL = 8  # LlamaCppEngine's default `parallel` (what the rollout runs with)

BARE_LLAMACPP = r"""
import json, sys
import llama_cpp as L
gguf, n_cells, n_batch, max_new, prompt = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                           json.loads(sys.argv[5]))
llm = L.Llama(model_path=gguf, n_ctx=n_cells, n_batch=n_batch, n_ubatch=n_batch, n_threads=1, n_threads_batch=1,
              n_gpu_layers=0, type_k=L.GGML_TYPE_F32, type_v=L.GGML_TYPE_F32, flash_attn=False, seed=0, verbose=False)
made = []
for tok in llm.generate(prompt, temp=1.0, top_k=0, top_p=1.0, min_p=0.0, reset=True):
    made.append(tok)
    if len(made) >= max_new:
        break
print(json.dumps({"tokens": len(made)}), flush=True)
sys.stdin.read()  # hold still while the parent reads /proc; exit when it closes our stdin
"""

BARE_TRANSFORMERS = r"""
import json, sys
import torch
torch.set_num_threads(1)
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, rows, max_new, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
tok = AutoTokenizer.from_pretrained(model_dir)  # as the engine does (it encodes the task's prompts)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
ids = torch.tensor([prompt] * rows)
torch.manual_seed(0)
pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
with torch.inference_mode():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                         top_p=1.0, max_new_tokens=max_new, min_new_tokens=max_new, pad_token_id=pad)
print(json.dumps({"tokens": int(out.shape[0] * (out.shape[1] - ids.shape[1]))}), flush=True)
sys.stdin.read()
"""


def status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(field + ":")), None)
    except OSError:
        return None


def mib(kib_or_bytes: float | None, unit: int = 1024) -> float | None:
    return None if kib_or_bytes is None else round(kib_or_bytes * unit / MIB, 1)


# -- bare engines -----------------------------------------------------------------------------------
def run_bare(code: str, args: list[str], timeout: float) -> dict:
    """Run a bare-engine child; once it has generated, read its peak (VmHWM) from /proc, then let it exit."""
    with tempfile.TemporaryFile(mode="w+") as err:  # not a pipe: a chatty child must not block on it
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        timer = threading.Timer(timeout, kill_group, (proc,))
        timer.start()
        try:
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                err.seek(0)
                raise RuntimeError(f"bare engine failed ({proc.returncode}):\n{err.read()[-3000:]}")
            result = {"peak_mib": mib(status_kib(proc.pid, "VmHWM")),
                      "rss_end_mib": mib(status_kib(proc.pid, "VmRSS")), **json.loads(line)}
            proc.stdin.close()
            proc.wait(timeout=30)
            return result
        finally:
            timer.cancel()
            kill_group(proc)
            proc.wait()


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a bare child (started in its own session) and anything it started, if still running."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def llama_context(gguf: Path) -> tuple[int, int]:
    """(KV cells, batch) of LlamaCppEngine's context for this GGUF with its defaults."""
    from nodes.engines.gguf_export import read_gguf_meta

    meta = read_gguf_meta(gguf)
    arch = meta.get("general.architecture", "llama")
    n_ctx = min(4096, int(meta.get(f"{arch}.context_length", 4096)))
    return n_ctx + (PARALLEL - 1) * min(n_ctx, 512), max(min(n_ctx, 512), PARALLEL)


# -- the node ---------------------------------------------------------------------------------------
class TreeSampler(threading.Thread):
    """Every SAMPLE_S: the node's RSS and each descendant's RSS and USS, per-process peaks kept."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop_event = threading.Event()
        self.procs: dict[int, dict] = {}  # pid -> {"role", "rss", "uss"} peaks in bytes
        self.sampled_peak = 0  # node RSS + children's USS (p2pd excluded), the largest seen at once
        self.samples = 0

    @staticmethod
    def role(p, node_pid: int) -> str:
        if p.pid == node_pid:
            return "node"
        name, cmd = p.name(), " ".join(p.cmdline())
        if "p2pd" in name or "p2pd" in cmd.split(" ")[0]:
            return "p2pd"
        if "nodes.watchdog" in cmd:
            return "watchdog"
        if p.ppid() == node_pid and "nodes node" in cmd:
            return "dht"  # hivemind's DHT process, forked from the node
        return name

    def sample(self) -> None:
        import psutil

        try:
            node = psutil.Process(self.pid)
            tree = [node, *node.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for p in tree:
            try:
                entry = self.procs.get(p.pid)
                if entry is None:
                    entry = self.procs[p.pid] = {"role": self.role(p, self.pid), "rss": 0, "uss": 0}
                rss = p.memory_info().rss
                uss = rss if p.pid == self.pid else p.memory_full_info().uss
            except psutil.Error:
                continue
            entry["rss"], entry["uss"] = max(entry["rss"], rss), max(entry["uss"], uss)
            if entry["role"] != "p2pd":
                total += rss if p.pid == self.pid else uss
        self.sampled_peak = max(self.sampled_peak, total)
        self.samples += 1

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(SAMPLE_S)

    def finish(self) -> dict:
        """Stop sampling (the node still running); read every process's VmHWM; the node's peak."""
        self.stop_event.set()
        self.join()
        self.sample()
        per: dict[str, dict] = {}
        for pid, e in self.procs.items():
            hwm = status_kib(pid, "VmHWM")
            row = {"pid": pid, "vmhwm_mib": mib(hwm), "peak_rss_mib": mib(e["rss"], 1),
                   "peak_uss_mib": mib(e["uss"], 1)}
            if e["role"] in ("node", "p2pd"):  # its whole peak RSS (exec'd, not forked: nothing inherited)
                row["counted_mib"] = max(row["vmhwm_mib"] or 0.0, row["peak_rss_mib"])
            else:  # what it adds: a forked child's RSS also holds pages it shares with the node
                row["counted_mib"] = row["peak_uss_mib"]
            key = e["role"] if e["role"] not in per else f"{e['role']}-{pid}"
            per[key] = row
        peak = sum(r["counted_mib"] for k, r in per.items() if not k.startswith("p2pd"))
        p2pd = sum(r["counted_mib"] for k, r in per.items() if k.startswith("p2pd"))
        return {"peak_mib": round(peak, 1), "sampled_peak_mib": mib(self.sampled_peak, 1),
                "p2pd_mib": round(p2pd, 1), "processes": per, "samples": self.samples}


def chunk_events(workdir: Path) -> list[dict]:
    try:
        text = (workdir / "metrics.jsonl").read_text(errors="replace")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a half-written last line
        if isinstance(e, dict) and e.get("kind") == "chunk":
            events.append(e)
    return events


def wait_until(predicate, timeout: float, what: str, nodes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for node in nodes:
            if not node.alive():
                raise RuntimeError(f"{node.name} exited ({node.proc.returncode}) waiting for {what}:\n"
                                   f"{node.log_tail(40)}")
        time.sleep(0.2)
    tails = "\n".join(f"--- {n.name}\n{n.log_tail(40)}" for n in nodes)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def prepare_run(tmp: Path, base: str, engines: list[str]) -> Path:
    """Keys and a signed manifest from `swarm init` (default workload) naming the trainer's key."""
    from crypto.identity import Identity
    from scenarios.processes import swarm_command

    for name in ("owner", "trainer", *engines):
        Identity.generate().save(tmp / f"{name}.key")
    trainer_id = Identity.load(tmp / "trainer.key").key_id
    init = subprocess.run(swarm_command("init", "--out", str(tmp / "run.toml"), "--owner-key", str(tmp / "owner.key"),
                                        "--run-id", "rollout-memory", "--base", base, "--trainer-key", trainer_id,
                                        "--steps", "100000", "--announce-period", "1"),
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)
    if init.returncode != 0:
        raise RuntimeError(f"swarm init failed:\n{init.stderr}")
    return tmp / "run.toml"


def run_swarm(tmp: Path, run_toml: Path, engines: list[str], chunks: int, timeout: float, started: list) -> dict:
    """A trainer, then one rollout node per engine in turn (alone with the trainer); each rollout's peak."""
    from scenarios.processes import NodeProcess

    run = str(run_toml)
    trainer = NodeProcess("trainer", tmp / "trainer", ["--run", run, "--key", str(tmp / "trainer.key"),
                                                       "--role", "trainer", "--threads", "1"])
    started.append(trainer)
    trainer.start()
    maddr = trainer.wait_joined(timeout=180)
    out = {}
    for engine in engines:
        node = NodeProcess(f"rollout-{engine}", tmp / f"rollout-{engine}",
                           ["--run", run, "--key", str(tmp / f"{engine}.key"), "--role", "rollout",
                            "--engine", engine, "--threads", "1", "--initial-peers", maddr])
        started.append(node)
        t0 = time.monotonic()
        node.start()
        sampler = TreeSampler(node.pid)
        sampler.start()
        try:
            def enough(workdir: Path = node.workdir) -> bool:
                ev = chunk_events(workdir)
                return len(ev) >= chunks and any(e.get("version", 0) >= 1 for e in ev)

            wait_until(enough, timeout, f"{chunks} chunks, one with an adapter, from {node.name}", [node, trainer])
            result = sampler.finish()
        finally:
            sampler.stop_event.set()
            node.stop(grace=10)
        ev = chunk_events(node.workdir)
        bad = [e for e in ev if e.get("engine") not in (None, engine)]
        if bad:
            raise RuntimeError(f"{node.name} generated with {bad[0].get('engine')}, not {engine}")
        result.update({"chunks": len(ev), "chunks_sent": sum(bool(e.get("sent")) for e in ev),
                       "max_version": max(e.get("version", 0) for e in ev), "wall_s": round(time.monotonic() - t0, 1)})
        out[engine] = result
    trainer.stop(grace=10)
    return out


def manifest_workload(run_toml: Path) -> dict:
    from swarm.manifest import load_manifest

    m = load_manifest(run_toml).manifest
    g = m.grpo
    return {"prompts_per_chunk": g.prompts_per_chunk, "group_size": g.group_size, "max_new_tokens": g.max_new_tokens,
            "prompt_ids": list(m.model.probe["prompt_ids"][0])}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("torch", "transformers", "hivemind", "llama_cpp_python"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="tiny", help="'tiny' (the embedded model, default) or a local HF model directory")
    ap.add_argument("--engines", default="llamacpp,transformers")
    ap.add_argument("--chunks", type=int, default=4, help="chunks each rollout node makes before it is measured")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a rollout node gets to make them")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in GOALS]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}: choose from {sorted(GOALS)}")

    if args.base == "tiny":
        from nodes.models.tiny import tiny_model_dir

        hf_dir = Path(tiny_model_dir())
    else:
        hf_dir = Path(args.base).expanduser().resolve()
        if not (hf_dir / "config.json").is_file():
            ap.error(f"--base {args.base}: not a Hugging Face model directory (no config.json)")

    started: list = []

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    result: dict = {"benchmark": "rollout_memory", "base": args.base if args.base == "tiny" else str(hf_dir),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), **versions()},
                    "method": "node: its VmHWM + peak USS of its other processes (p2pd apart); bare: its VmHWM",
                    "engines": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="rollout-mem-") as tmp_name:
            tmp = Path(tmp_name)
            run_toml = prepare_run(tmp, args.base if args.base == "tiny" else str(hf_dir), engines)
            # `swarm init`'s default workload, what the node runs: the bare transformers batch is one chunk
            result["workload"] = workload = manifest_workload(run_toml)
            bare: dict = {}
            for engine in engines:  # on a quiet box, before the swarm starts
                if engine == "llamacpp":
                    from nodes.engines.gguf_export import ensure_base_gguf

                    gguf = ensure_base_gguf(hf_dir)
                    n_cells, n_batch = llama_context(gguf)
                    bare[engine] = run_bare(BARE_LLAMACPP, [str(gguf), str(n_cells), str(n_batch),
                                                            str(workload["max_new_tokens"]),
                                                            json.dumps(workload["prompt_ids"])], args.timeout)
                    bare[engine].update({"gguf": gguf.name, "kv_cells": n_cells})
                else:
                    rows = workload["prompts_per_chunk"] * workload["group_size"]
                    bare[engine] = run_bare(BARE_TRANSFORMERS, [str(hf_dir), str(rows),
                                                                str(workload["max_new_tokens"]),
                                                                json.dumps(workload["prompt_ids"])], args.timeout)
                    bare[engine]["batch_rows"] = rows
            nodes = run_swarm(tmp, run_toml, engines, args.chunks, args.timeout, started)
    finally:
        for node in reversed(started):
            node.stop(grace=5)

    ok = True
    for engine in engines:
        b, n = bare[engine], nodes[engine]
        ratio = round(n["peak_mib"] / b["peak_mib"], 2)
        met = ratio <= GOALS[engine]
        ok &= met
        result["engines"][engine] = {
            "bare": b, "node": n,
            "overhead_mib": round(n["peak_mib"] - b["peak_mib"], 1),
            "ratio": ratio,
            "ratio_sampled": round(n["sampled_peak_mib"] / b["peak_mib"], 2),
            "ratio_with_p2pd": round((n["peak_mib"] + n["p2pd_mib"]) / b["peak_mib"], 2),
            "goal": f"ratio <= {GOALS[engine]}", "met": met,
        }
    result["ok"] = ok
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
