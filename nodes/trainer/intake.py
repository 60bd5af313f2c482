"""The trainer's door: every inbound chunk passes these checks in order, or is rejected.

size limit -> open (HPKE) -> verify signature (the sealed sender's key, a swarm member) ->
parse exactly the verified bytes -> run id and producer -> not replayed -> staleness ->
honesty (claimed log-probs reproduce under the claimed version) -> rewards recomputed with the
task's own verifier. A failure raises `Rejected(reason)`; the caller counts it and moves on.
"""
from __future__ import annotations

from dataclasses import dataclass

from crypto.envelope import verify_envelope
from crypto.errors import CryptoError, SealError
from crypto.sealing import open_sealed
from nodes.tasks.base import completion_text
from nodes.trajectory import ChunkError, ChunkLimits, TrajectoryChunk, chunk_digest, decode_chunk
from swarm.errors import Rejection

CHUNK_TYPE = "application/vnd.echo-swarm.trajectory-chunk"
HONESTY_TOLERANCE = 0.05
"""Max |claimed - recomputed| token log-prob. Engines agree to ~1e-3 in f32; forgeries are far off."""


class Rejected(Rejection):
    """A chunk refused at the trainer's door."""


@dataclass
class Accepted:
    chunk: TrajectoryChunk
    digest: str
    rewards: list[list[float]]
    """Recomputed here, one list per group."""


def open_chunk(blob: bytes, *, identity, run_id: str, members: dict[str, bytes], limits: ChunkLimits
               ) -> tuple[TrajectoryChunk, str]:
    """Decrypt, authenticate and parse a chunk. `members`: key id -> Ed25519 key of live members."""
    if len(blob) > limits.max_bytes + 64 * 1024:
        raise Rejected("oversize", f"{len(blob)} bytes")
    try:
        opened = open_sealed(blob, identity, run_id=run_id, max_size=limits.max_bytes + 64 * 1024)
    except CryptoError as e:
        reason = e.reason if isinstance(e, SealError) and e.reason in ("wrong_run", "oversize") else "sealed"
        raise Rejected(reason, str(e)) from None
    sender = opened.context.sender_key_id
    if sender not in members:
        raise Rejected("unknown_sender", f"{sender[:16]} is not a live member of this swarm")
    try:
        verified = verify_envelope(opened.body, trusted_keys={sender: members[sender]},
                                   payload_types={CHUNK_TYPE}, max_size=limits.max_bytes + 16 * 1024)
    except CryptoError as e:
        raise Rejected("signature", str(e)) from None
    try:
        chunk = decode_chunk(verified.payload, limits=limits)
    except ChunkError as e:
        raise Rejected(f"chunk_{e.reason}", e.detail) from None
    if chunk.run_id != run_id:
        raise Rejected("wrong_run", chunk.run_id)
    if chunk.producer_key_id != sender:
        raise Rejected("wrong_producer", "chunk names another producer than its signer")
    return chunk, chunk_digest(verified.payload)


def check_staleness(version: int, step: int, staleness: int, sequential: bool) -> None:
    if version > step:
        raise Rejected("future_version", f"v{version} > trainer step {step}")
    lag = step - version
    if (sequential and lag != 0) or lag > staleness:
        raise Rejected("stale", f"lag {lag}")


def check_honesty(chunk: TrajectoryChunk, recomputed: list[list[float]]) -> None:
    claimed = [lp for g in chunk.groups for lp in g.logprobs]
    worst = max((abs(a - b) for c, r in zip(claimed, recomputed) for a, b in zip(c, r)), default=0.0)
    if worst > HONESTY_TOLERANCE:
        raise Rejected("dishonest", f"v{chunk.policy_version}: claimed log-probs differ from the policy's by {worst:.3f}")


def recompute_rewards(chunk: TrajectoryChunk, tokenizer, task) -> list[list[float]]:
    """Never trust a reported reward: decode the ids and run the task's verifier here.

    A completion is scored on its text up to the first EOS with other special tokens kept, so
    "1<pad>2<eos>3" reads "1<pad>2", not a cleaned-up "123".
    """
    rewards = []
    for group in chunk.groups:
        prompt = tokenizer.decode(list(group.prompt_ids), skip_special_tokens=True)
        rewards.append([task.reward(prompt, completion_text(tokenizer, list(c))) for c in group.completions])
    return rewards
