"""The co-located baseline: the whole RL loop in one process, no swarm.

Same task, model, seeds and GRPO settings as a swarm run, so a swarm's reward curve can be
compared with what one machine does alone (DESIGN.md §8). Each step: sample
``prompts_per_step`` prompts x ``group_size`` completions with the transformers engine under
the published adapter, score them with the task's verifier, take one GRPO step.

``kappa`` (publication period) and ``staleness`` (a fixed rollout lag, in versions) reproduce
the async mode's off-policy-ness in one process: at step t the rollouts come from the newest
published version <= t - staleness, and versions are published every ``kappa`` steps.

    python -m nodes.baseline --steps 60 [--seed 0] [--kappa 1] [--staleness 0] [--eval-every 10]
                             [--out curve.jsonl]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from nodes.tasks.base import completion_text


def rollout_version(step: int, kappa: int, staleness: int) -> int:
    """Newest published version (multiples of kappa, and 0) no newer than ``step - staleness``."""
    target = max(0, step - staleness)
    return target - target % kappa


def run_baseline(
    steps: int,
    seed: int = 0,
    prompts_per_step: int = 32,
    group_size: int = 8,
    kappa: int = 1,
    staleness: int = 0,
    out: str | Path | IO[str] | None = None,
    *,
    model_seed: int = 0,
    base_dir: str | Path | None = None,
    task: str = "sort-digits",
    task_options: dict | None = None,
    temperature: float = 1.0,
    max_new_tokens: int = 7,
    threads: int | None = None,
    config: Any = None,
    eval_every: int = 0,
    eval_prompts: int = 256,
) -> list[dict]:
    """Run ``steps`` GRPO steps; return (and write to ``out`` as JSON lines) one record per step.

    ``reward`` is the mean task reward (exact match for sort-digits) of the step's rollouts, i.e.
    of the policy version that sampled them (``version``), ``lag`` = step - version. With
    ``eval_every = k > 0``, every k-th step (and the last) also records ``greedy``: exact match
    of greedy decoding on a fixed held-out prompt set, under the same version.
    """
    import torch

    from nodes.engines import SamplingParams, make_engine
    from nodes.models.tiny import tiny_model_dir
    from nodes.tasks import make_task
    from nodes.trainer.adapters import save_version
    from nodes.trainer.grpo import staleness_ok
    from nodes.trainer.policy import Policy, PolicyConfig

    if steps < 0 or kappa < 1 or staleness < 0 or prompts_per_step < 1 or group_size < 2:
        raise ValueError("need steps >= 0, kappa >= 1, staleness >= 0, prompts >= 1, group_size >= 2")
    if threads is not None:
        torch.set_num_threads(threads)
    cfg = config or PolicyConfig(temperature=temperature)
    if cfg.temperature != temperature:
        raise ValueError("policy temperature must equal the sampling temperature")
    base_dir = Path(base_dir) if base_dir is not None else tiny_model_dir(model_seed)
    the_task = make_task(task, task_options or {})
    prompt_stream = the_task.prompts(seed)
    policy = Policy(base_dir, config=cfg, seed=seed)
    engine = make_engine("transformers", str(base_dir))
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
    held_out = make_task(task, task_options or {}).prompts(seed + 7_777_777)  # a stream the training prompts never use
    eval_set = [next(held_out).text for _ in range(eval_prompts)] if eval_every else []
    greedy = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    sink, close = _open_sink(out)
    records: list[dict] = []
    keep = staleness // kappa + 2  # published dirs a future step may still need
    try:
        with tempfile.TemporaryDirectory(prefix="echo-baseline-") as tmp:
            versions: dict[int, Path] = {}

            def publish(v: int) -> None:
                versions[v] = Path(tmp) / f"v{v:06d}"
                save_version(policy, versions[v], v)
                for old in sorted(versions)[:-keep]:
                    if old != v:
                        shutil.rmtree(versions.pop(old), ignore_errors=True)

            publish(0)
            for step in range(steps):
                t0 = time.perf_counter()
                v = rollout_version(step, kappa, staleness)
                assert staleness_ok(step, v, staleness + kappa - 1)
                if engine.adapter_version != v:
                    engine.set_adapter(v, versions[v])
                score = None
                if eval_every and (step % eval_every == 0 or step == steps - 1):
                    te = time.perf_counter()
                    outs = engine.generate(eval_set, 1, greedy, seed=0)
                    score = sum(the_task.reward(p, completion_text(engine.tokenizer, g[0].completion_ids))
                                for p, g in zip(eval_set, outs)) / len(eval_set)
                    t0 += time.perf_counter() - te  # evaluation is not step time
                prompts = [next(prompt_stream).text for _ in range(prompts_per_step)]
                groups = engine.generate(prompts, group_size, params, seed=seed * 1_000_003 + step)
                t1 = time.perf_counter()
                rewards = [[the_task.reward(p, completion_text(engine.tokenizer, s.completion_ids)) for s in g]
                           for p, g in zip(prompts, groups)]
                flat = [s for g in groups for s in g]
                stats = policy.train_step([(s.prompt_ids, s.completion_ids) for s in flat], rewards,
                                          [s.logprobs for s in flat])
                t2 = time.perf_counter()
                if (step + 1) % kappa == 0:
                    publish(step + 1)
                t3 = time.perf_counter()
                n = len(flat)
                rec = {
                    "step": step,
                    "reward": sum(map(sum, rewards)) / n,
                    "version": v,
                    "lag": step - v,
                    "len_mean": sum(len(s.completion_ids) for s in flat) / n,
                    "loss": stats["loss"],
                    "clip_frac": stats["clip_frac"],
                    "ratio_mean": stats["ratio_mean"],
                    "kl_behaviour": stats["kl_behaviour"],
                    "grad_norm": stats["grad_norm"],
                    "gen_s": round(t1 - t0, 4),
                    "train_s": round(t2 - t1, 4),
                    "publish_s": round(t3 - t2, 4),
                    "step_s": round(t3 - t0, 4),
                }
                if score is not None:
                    rec["greedy"] = score
                records.append(rec)
                if sink is not None:
                    sink.write(json.dumps(rec) + "\n")
                    sink.flush()
    finally:
        if close:
            sink.close()
    return records


def _open_sink(out):
    if out is None:
        return None, False
    if hasattr(out, "write"):
        return out, False
    return open(out, "w"), True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.baseline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-seed", type=int, default=0, help="which cached tiny model (ignored with --base)")
    ap.add_argument("--base", default=None, help="an HF model dir instead of the embedded tiny model")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per step")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--kappa", type=int, default=1, help="publish the adapter every kappa steps")
    ap.add_argument("--staleness", type=int, default=0, help="rollouts lag this many versions")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=0, help="greedy exact match on held-out prompts")
    ap.add_argument("--out", default=None, help="also write the JSON lines to this file")
    a = ap.parse_args(argv)

    class Tee:
        def __init__(self, *streams):
            self.streams = streams

        def write(self, s):
            for st in self.streams:
                st.write(s)

        def flush(self):
            for st in self.streams:
                st.flush()

    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(a.out, "w"))] if a.out else []
        recs = run_baseline(a.steps, a.seed, a.prompts, a.group_size, a.kappa, a.staleness,
                            Tee(sys.stdout, *files), model_seed=a.model_seed, base_dir=a.base,
                            threads=a.threads, eval_every=a.eval_every)
    if recs:
        tail = recs[-min(10, len(recs)):]
        summary = {"summary": True, "steps": len(recs), "reward_first": recs[0]["reward"],
                   "reward_last10": sum(r["reward"] for r in tail) / len(tail),
                   "s_per_step": sum(r["step_s"] for r in recs) / len(recs)}
        print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
