"""One test per attack on a live trainer's chunk intake (DESIGN.md §5-6).

A real `swarm node --role trainer` process; an in-process client joins the swarm as a rollout
member (tests/swarm_client.py) and sends crafted chunks over the real `{namespace}/chunks`
protocol. Each attack must be refused with its reason in the reply, and counted where an
operator sees it: the `rejected` table of the trainer's `accounting` lines in metrics.jsonl
(written within ~0.5 s of a rejection, not only at the next step). The manifest makes one
2-group chunk a whole step and sets S = 0, so a single honest chunk makes every older one stale.
"""
from __future__ import annotations

import dataclasses

import pytest
from conftest import node_events, start_authorised_trainer, wait_for
from swarm_client import SwarmClient

from scenarios.processes import NodeProcess

PROMPTS_PER_STEP = 2
EXERCISED: set[str] = set()  # reasons the attack tests provoked; the last test checks all stay counted


# -- the live trainer and the client ---------------------------------------------------------


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, launched):
    tmp = tmp_path_factory.mktemp("attacks")
    run, trainer = start_authorised_trainer(
        launched, tmp, "attacks",
        grpo={"prompts_per_step": PROMPTS_PER_STEP, "prompts_per_chunk": PROMPTS_PER_STEP, "group_size": 2,
              "steps": 1000},
        sync={"mode": "async", "staleness": 0},
        swarm={"announce_period_s": 1.0},
    )
    client = None
    try:
        client = SwarmClient(run, tmp / "client", [trainer.wait_joined()]).start()
        # Ready when we see the trainer's v0 and it sees us as a live member (else: unknown_sender).
        wait_for(lambda: (t := client.trainer()) is not None and t.trainer.version == 0, 90,
                 "the trainer to publish v0", poll=0.3)
        wait_for(lambda: client.node.peer_id in {p["peer_id"] for p in (trainer.status() or {}).get("peers", [])},
                 30, "the trainer to see the client", poll=0.3)
        yield trainer, client
    finally:
        if client is not None:
            client.close()
        trainer.stop()


def counted(trainer: NodeProcess) -> dict[str, int]:
    """The rejection counts an operator reads: the trainer's latest accounting line."""
    lines = node_events(trainer, "accounting")
    return lines[-1]["rejected"] if lines else {}


def version(trainer: NodeProcess) -> int:
    """The trainer's newest adapter version: one per step here (publish_every = 1)."""
    steps = node_events(trainer, "step")
    return steps[-1]["version"] if steps else 0


def expect_rejected(swarm, blob: bytes, reason: str) -> None:
    """Send `blob`; the reply must name `reason` and metrics.jsonl must count it once more."""
    trainer, client = swarm
    before = counted(trainer).get(reason, 0)
    reply = client.send(blob)
    assert reply["ok"] is False and reply["reason"] == reason, reply
    wait_for(lambda: counted(trainer).get(reason, 0) == before + 1, 10, f"{reason!r} to be counted")
    EXERCISED.add(reason)


def advance(swarm) -> dict:
    """One honest chunk of the current version: accepted, and the trainer takes a step on it."""
    trainer, client = swarm
    v = version(trainer)
    reply = client.send(client.seal(client.sign(client.honest_chunk(v, PROMPTS_PER_STEP, seed=v))))
    assert reply["ok"] is True, reply
    wait_for(lambda: version(trainer) == v + 1, 60, f"the trainer to step to v{v + 1}")
    return reply


def honest(swarm):
    trainer, client = swarm
    return client.honest_chunk(version(trainer), PROMPTS_PER_STEP, seed=100 + version(trainer))


# -- pure: what the verifier sees --------------------------------------------------------------


def test_rewards_are_recomputed_on_the_text_before_the_first_eos():
    from transformers import AutoTokenizer

    from nodes.models.tiny import tiny_model_dir
    from nodes.tasks import make_task
    from nodes.trainer.intake import recompute_rewards
    from swarm.chunk import TrajectoryChunk, TrajectoryGroup

    tok = AutoTokenizer.from_pretrained(tiny_model_dir())

    def ids(text: str) -> list[int]:  # the tiny tokenizer is one token per character
        return tok.convert_tokens_to_ids(list(text))

    prompt = [tok.bos_token_id] + ids("321>")
    eos, pad = tok.eos_token_id, tok.pad_token_id
    completions = [
        ids("123") + [eos],                   # right
        ids("1") + [pad] + ids("2") + [eos] + ids("3"),  # used to decode as "123" once specials were stripped
        ids("12") + [eos] + ids("3"),         # the verifier must not read past EOS
        ids("123"),                            # no EOS (max_new_tokens reached): still scored
    ]
    chunk = TrajectoryChunk(run_id="r", chunk_id="0" * 32, producer_key_id="0" * 64, policy_version=0,
                            task="sort-digits", sampling={"temperature": 1.0, "max_new_tokens": 7},
                            created_at=0.0, groups=(TrajectoryGroup(prompt, completions,
                                                                    [[-1.0] * len(c) for c in completions]),))
    assert recompute_rewards(chunk, tok, make_task("sort-digits")) == [[1.0, 0.0, 0.0, 1.0]]


# -- attacks on the live trainer --------------------------------------------------------------


@pytest.mark.slow
def test_tampered_blob(swarm):
    _, client = swarm
    blob = bytearray(client.seal(client.sign(honest(swarm))))
    blob[-20] ^= 0x01  # one bit of the encrypted body
    expect_rejected(swarm, bytes(blob), "sealed")


@pytest.mark.slow
def test_signed_by_a_key_other_than_the_sender(swarm):
    from crypto.identity import Identity

    _, client = swarm
    stranger = Identity.generate()
    chunk = honest(swarm)
    # Sealed as from us (a member) but signed by someone else.
    expect_rejected(swarm, client.seal(client.sign(chunk, signer=stranger)), "bad_signature")
    # Signed and sealed by a key that is not a live member of the swarm.
    own = dataclasses.replace(chunk, producer_key_id=stranger.key_id)
    expect_rejected(swarm, client.seal(client.sign(own, signer=stranger), sender=stranger), "unknown_sender")


@pytest.mark.slow
def test_replayed_chunk(swarm):
    trainer, client = swarm
    v = version(trainer)
    envelope = client.sign(honest(swarm))
    blob = client.seal(envelope)
    assert client.send(blob)["ok"] is True
    wait_for(lambda: version(trainer) == v + 1, 60, "the step on the first copy")
    expect_rejected(swarm, blob, "replay")                 # the same bytes again
    expect_rejected(swarm, client.seal(envelope), "replay")  # resealed: a fresh blob, the same chunk


@pytest.mark.slow
def test_stale_chunk(swarm):
    _, client = swarm
    held_back = client.seal(client.sign(honest(swarm)))  # valid now ...
    advance(swarm)                                       # ... but S = 0 and the trainer moved on
    expect_rejected(swarm, held_back, "stale")


@pytest.mark.slow
def test_oversized_requests(swarm):
    from swarm.chunk import ChunkLimits
    from swarm.transport import TransportError

    trainer, client = swarm
    frame_limit = ChunkLimits.for_run(client.m.grpo, vocab_size=1).sealed_bytes  # from the manifest's shape
    # Over the transport's frame limit: refused unread, no reply, but counted.
    before = counted(trainer).get("oversize", 0)
    with pytest.raises(TransportError):
        client.send(b"\0" * (frame_limit + 1), timeout=20)
    wait_for(lambda: counted(trainer).get("oversize", 0) == before + 1, 10, "'oversize' to be counted")
    # Within the frame limit, garbage: the intake refuses it with a reply.
    expect_rejected(swarm, b"\0" * (frame_limit - 1024), "sealed")
    assert trainer.alive()


@pytest.mark.slow
def test_a_chunk_beyond_the_manifest_shape_is_refused_before_any_scoring(swarm):
    """One validly signed chunk of 512 groups x 1,024 tokens once made the honesty check run one
    forward over all of it (3 GiB: the trainer was killed). The manifest's chunk shape (here 2
    groups of 2 samples of <= 7 tokens) is enforced at the door: by the frame limit for the bytes,
    by the decoder for the counts."""
    from swarm.transport import TransportError

    trainer, client = swarm
    chunk = honest(swarm)
    g = chunk.groups[0]
    huge = dataclasses.replace(g, completions=tuple((g.prompt_ids[1],) * 1024 for _ in range(2)),
                               logprobs=tuple((-1.0,) * 1024 for _ in range(2)))
    wide = dataclasses.replace(chunk, sampling={**chunk.sampling, "max_new_tokens": 1024}, groups=(huge,) * 512)
    before = counted(trainer).get("oversize", 0)
    with pytest.raises(TransportError):  # refused unread: the stream is closed without a reply
        client.send(client.seal(client.sign(wide)), timeout=30)
    wait_for(lambda: counted(trainer).get("oversize", 0) == before + 1, 10, "'oversize' to be counted")
    # Small in bytes but one group too many: refused by count, still before scoring.
    expect_rejected(swarm, client.seal(client.sign(dataclasses.replace(chunk, groups=chunk.groups + (g,)))), "limit")
    assert trainer.alive()
    advance(swarm)


@pytest.mark.slow
def test_wrong_run(swarm):
    _, client = swarm
    chunk = honest(swarm)
    expect_rejected(swarm, client.seal(client.sign(chunk), run_id="another-run"), "wrong_run")
    # The right seal around a chunk that names another run.
    other = dataclasses.replace(chunk, run_id="another-run")
    expect_rejected(swarm, client.seal(client.sign(other)), "wrong_run")


@pytest.mark.slow
def test_tokens_after_eos(swarm):
    _, client = swarm
    chunk = honest(swarm)
    eos = client.engine.tokenizer.eos_token_id
    g = chunk.groups[0]
    bad = dataclasses.replace(g, completions=((g.prompt_ids[1], eos, g.prompt_ids[1]),) + g.completions[1:],
                              logprobs=((-1.0, -1.0, -1.0),) + g.logprobs[1:])
    expect_rejected(swarm, client.seal(client.sign(dataclasses.replace(chunk, groups=(bad,) + chunk.groups[1:]))),
                    "eos")


@pytest.mark.slow
def test_dishonest_logprobs(swarm):
    _, client = swarm
    chunk = honest(swarm)
    # Validly signed, but the behaviour log-probs claim each token was 0.5 nats less likely than
    # it was (inflating the importance ratio); the trainer recomputes them under the claimed version.
    forged = tuple(dataclasses.replace(g, logprobs=tuple(tuple(x - 0.5 for x in lp) for lp in g.logprobs))
                   for g in chunk.groups)
    expect_rejected(swarm, client.seal(client.sign(dataclasses.replace(chunk, groups=forged))), "dishonest")


@pytest.mark.slow
def test_trainer_survives_every_attack_and_still_trains(swarm):
    trainer, _ = swarm
    assert trainer.alive()
    advance(swarm)  # an honest chunk is still accepted and trained on
    acct = node_events(trainer, "accounting")[-1]
    assert EXERCISED <= set(acct["rejected"]), (EXERCISED, acct["rejected"])
    assert acct["accepted"] == acct["consumed"] + sum(acct["dropped"].values()) + acct["buffered"]
