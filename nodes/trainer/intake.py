"""The trainer's door: every inbound chunk passes these checks in order, or is rejected.

size limit -> open (HPKE) -> verify signature (the sealed sender's key, a swarm member) ->
parse exactly the verified bytes, within the run's chunk shape (`ChunkLimits.for_run`) -> run id
and producer -> not replayed -> staleness (`swarm.sync`) -> honesty (claimed log-probs reproduce
under the claimed version, scored in bounded micro-batches) -> rewards recomputed with the task's
own verifier. A failure raises `ChunkRejected(reason)`; the caller counts it and moves on.
"""
from __future__ import annotations

from dataclasses import dataclass

from crypto.envelope import verify_envelope
from crypto.errors import CryptoError, SealError
from crypto.sealing import open_sealed
from nodes.engines.formats import TOLERANCES, mismatch
from nodes.tasks.base import completion_text
from nodes.trainer.policy import micro_batches as _micro_batches
from swarm.chunk import CHUNK_TYPE, ChunkLimits, TrajectoryChunk, chunk_digest, decode_chunk
from swarm.rejections import ChunkRejected, Reason
from swarm.sync import lag_rejection
from swarm.versions import ChunkAttestation

SCORE_BATCH_TOKENS = 8192
"""Rows x padded width per forward of the honesty check: bounds its memory whatever the chunk."""


@dataclass
class Accepted:
    chunk: TrajectoryChunk
    attestation: ChunkAttestation
    """What the version that consumes the chunk names of it (digest, producer, signed envelope)."""
    rewards: list[list[float]]
    """Recomputed here, one list per group."""


def open_chunk(blob: bytes, *, identity, run_id: str, members: dict[str, bytes], limits: ChunkLimits
               ) -> tuple[TrajectoryChunk, ChunkAttestation]:
    """Decrypt, authenticate and parse a chunk. `members`: key id -> Ed25519 key of live members."""
    if len(blob) > limits.sealed_bytes:
        raise ChunkRejected(Reason.OVERSIZE, f"{len(blob)} bytes")
    try:
        opened = open_sealed(blob, identity, run_id=run_id, max_size=limits.sealed_bytes)
    except CryptoError as e:
        reason = e.reason if isinstance(e, SealError) and e.reason in ("wrong_run", "oversize") else "sealed"
        raise ChunkRejected(reason, str(e)) from None
    sender = opened.context.sender_key_id
    if sender not in members:
        raise ChunkRejected(Reason.UNKNOWN_SENDER, f"{sender[:16]} is not a live member of this swarm")
    try:
        verified = verify_envelope(opened.body, trusted_keys={sender: members[sender]},
                                   payload_types={CHUNK_TYPE}, max_size=limits.signed_bytes)
    except CryptoError as e:
        raise ChunkRejected(Reason.BAD_SIGNATURE, str(e)) from None
    chunk = decode_chunk(verified.payload, limits=limits)
    if chunk.run_id != run_id:
        raise ChunkRejected(Reason.WRONG_RUN, chunk.run_id)
    if chunk.producer_key_id != sender:
        raise ChunkRejected(Reason.WRONG_PRODUCER, "chunk names another producer than its signer")
    return chunk, ChunkAttestation(chunk_digest(verified.payload), sender, chunk_digest(opened.body))


def check_staleness(version: int, step: int, mode: str, staleness: int) -> None:
    """`swarm.sync.lag_rejection` as a ChunkRejected."""
    reason = lag_rejection(version, step, mode, staleness)
    if reason is not None:
        raise ChunkRejected(reason, f"v{version} at trainer step {step}")


def micro_batches(lengths: list[int], max_tokens: int = SCORE_BATCH_TOKENS) -> list[list[int]]:
    """Index groups for scoring forwards of at most `max_tokens` (rows x longest row)."""
    return _micro_batches(lengths, max_tokens)


def check_honesty(chunk: TrajectoryChunk, recomputed: list[list[float]]) -> None:
    """The claimed log-probs reproduce under the claimed version, within the tolerance measured
    for the base format the rollout says it sampled from (f32 engines agree to ~1e-3; a Q4_K_M
    copy strays further; forgeries far more: `nodes.engines.formats`)."""
    fmt = chunk.sampling.get("weights", "f32")
    mean, worst = mismatch([lp for g in chunk.groups for lp in g.logprobs], recomputed)
    if not TOLERANCES[fmt].admits(mean, worst):
        raise ChunkRejected(Reason.DISHONEST, f"v{chunk.policy_version} ({fmt}): claimed log-probs differ from the "
                                              f"policy's by {mean:.3f} on average, {worst:.3f} at worst")


def recompute_rewards(chunk: TrajectoryChunk, tokenizer, task, prompts: PromptIndex | None = None
                      ) -> list[list[float]]:
    """Never trust a reported reward: find the prompt, decode the completions and run the task's
    verifier here.

    A completion is scored on its text up to the first EOS with other special tokens kept, so
    "1<pad>2<eos>3" reads "1<pad>2", not a cleaned-up "123". A task with a fixed prompt set is
    looked up by the prompt's exact ids (`PromptIndex`): a prompt it does not hold scores 0.
    """
    prompts = prompts or PromptIndex(task, tokenizer)
    rewards = []
    for group in chunk.groups:
        prompt = prompts.text_of(group.prompt_ids)
        rewards.append([0.0 if prompt is None else task.reward(prompt, completion_text(tokenizer, list(c)))
                        for c in group.completions])
    return rewards


class PromptIndex:
    """The task prompt a chunk's prompt ids encode: by exact ids when the task has a fixed set
    (encoded as the engines encode them, chat template included), else the decoded text."""

    def __init__(self, task, tokenizer):
        self.task, self.tokenizer = task, tokenizer
        self._by_ids: dict[tuple[int, ...], str] | None = None

    def text_of(self, prompt_ids) -> str | None:
        texts = self.task.prompt_texts()
        if texts is None:
            return self.tokenizer.decode(list(prompt_ids), skip_special_tokens=True)
        if self._by_ids is None:  # once: every prompt of the file, encoded
            from nodes.engines.base import encode_prompt

            self._by_ids = {tuple(encode_prompt(self.tokenizer, t, chat_template=self.task.chat_template)): t
                            for t in texts}
        return self._by_ids.get(tuple(prompt_ids))
