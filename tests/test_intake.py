"""Pure pieces of the trainer's door: the honesty check's micro-batches and the chunk shape a run allows."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodes.trainer.intake import micro_batches
from swarm.chunk import ChunkLimits
from swarm.manifest import GrpoSection


@given(st.lists(st.integers(1, 3000), max_size=200), st.integers(1, 5000))
def test_micro_batches_cover_every_row_once_in_order_within_the_budget(lengths, budget):
    batches = micro_batches(lengths, budget)
    assert [i for b in batches for i in b] == list(range(len(lengths)))
    for b in batches:  # a row alone may exceed the budget; several rows never do
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget


def test_chunk_limits_follow_the_manifest_shape():
    grpo = GrpoSection(prompts_per_step=32, prompts_per_chunk=4, group_size=8, max_new_tokens=7, max_prompt_tokens=64)
    limits = ChunkLimits.for_run(grpo, vocab_size=100, stop_ids=frozenset({2}))
    assert (limits.max_groups, limits.max_group_size, limits.max_samples) == (4, 8, 32)
    assert (limits.max_completion_tokens, limits.max_prompt_tokens, limits.stop_ids) == (7, 64, frozenset({2}))
    assert limits.max_bytes < 64 << 10  # a few KiB of tokens, not the 8 MiB generic limit
    assert limits.sealed_bytes > limits.signed_bytes > limits.max_bytes
