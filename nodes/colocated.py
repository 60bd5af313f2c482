"""The co-located baseline: the whole RL loop in one process, no swarm.

Same task, model, seeds and GRPO settings as a swarm run, so a swarm's reward curve can be
compared with what one machine does alone (DESIGN.md §8). Each step: sample
``prompts_per_step`` prompts x ``group_size`` completions with the transformers engine under
the published adapter, score them with the task's verifier, take one GRPO step.

``kappa`` (publication period) and ``staleness`` (a fixed rollout lag, in versions) reproduce
the async mode's off-policy-ness in one process: at step t the rollouts come from the newest
published version <= t - staleness (`swarm.sync.rollout_version`), and versions are published
every ``kappa`` steps. `swarm baseline` runs it with a manifest's or a scenario's settings.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from nodes.tasks.base import completion_text
from swarm.manifest import GrpoSection, RunSection, SyncSection, TaskSection
from swarm.sync import ASYNC, lag_rejection, rollout_version


def run_baseline(
    steps: int,
    seed: int = RunSection.seed,
    prompts_per_step: int = GrpoSection.prompts_per_step,
    group_size: int = GrpoSection.group_size,
    kappa: int = SyncSection.publish_every,
    staleness: int = 0,
    out: str | Path | IO[str] | None = None,
    *,
    model_seed: int = 0,
    base_dir: str | Path | None = None,
    task: str = TaskSection.name,
    task_options: dict | None = None,
    temperature: float = GrpoSection.temperature,
    max_new_tokens: int = GrpoSection.max_new_tokens,
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
    from nodes.trainer.policy import Policy, PolicyConfig
    from swarm.adapters.files import save_version

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
                # the lag is the fixed one plus up to kappa - 1 steps between publications
                assert lag_rejection(v, step, ASYNC, staleness + kappa - 1) is None
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

