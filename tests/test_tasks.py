"""Tasks: the JSONL task (loading, errors, stream, rewards) and its parsers, property-tested."""
from __future__ import annotations

import hashlib
import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.tasks import Prompt, TaskError, make_task
from nodes.tasks.jsonl import JsonlTask, last_number, parse_line

ROWS = [
    {"prompt": "What is 2+2?", "answer": "4"},
    {"prompt": "Capital of France?", "answer": "Paris"},
    {"prompt": "How many legs has a spider?", "answer": 8},
    {"prompt": "Half of 3?", "answer": "1.5"},
]


def write_jsonl(path, rows, extra: str = "") -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n" + extra)
    return str(path)


@pytest.fixture
def jsonl(tmp_path):
    return write_jsonl(tmp_path / "qa.jsonl", ROWS)


def test_stream_is_seeded_endless_and_covers_every_prompt(jsonl):
    task = JsonlTask(jsonl)
    a = list(itertools.islice(task.prompts(7), 12))
    assert a == list(itertools.islice(task.prompts(7), 12))
    assert a != list(itertools.islice(task.prompts(8), 12))
    assert all(isinstance(p, Prompt) for p in a)
    assert {p.text for p in a[:4]} == {r["prompt"] for r in ROWS}  # each pass is a permutation
    assert {p.text for p in a[4:8]} == {r["prompt"] for r in ROWS}


def test_exact_match_reward(jsonl):
    task = JsonlTask(jsonl)
    assert task.reward("Capital of France?", " Paris\n") == 1.0
    assert task.reward("Capital of France?", "paris") == 0.0
    assert task.reward("How many legs has a spider?", "8") == 1.0
    assert task.reward("not in the file", "Paris") == 0.0


def test_numeric_match_reward(tmp_path):
    task = JsonlTask(write_jsonl(tmp_path / "num.jsonl", [r for r in ROWS if r["answer"] != "Paris"]),
                     match="numeric")
    assert task.reward("What is 2+2?", "2 plus 2 makes 4.") == 1.0
    assert task.reward("What is 2+2?", "4 ... no, 5") == 0.0
    assert task.reward("Half of 3?", "It is 1.50") == 1.0
    assert task.reward("How many legs has a spider?", "eight") == 0.0


def test_registry_builds_it(jsonl):
    task = make_task("jsonl", {"path": jsonl, "match": "exact", "chat_template": True})
    assert task.name == "jsonl" and task.chat_template and len(task) == 4


def test_missing_file(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        JsonlTask(str(tmp_path / "nope.jsonl"))


def test_bad_line_names_its_number(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", ROWS[:2], extra="{not json}\n")
    with pytest.raises(TaskError, match="line 3"):
        JsonlTask(path)
    path = write_jsonl(tmp_path / "bad2.jsonl", [ROWS[0], {"prompt": "", "answer": "x"}])
    with pytest.raises(TaskError, match="line 2: 'prompt'"):
        JsonlTask(path)


def test_digest_mismatch(jsonl):
    digest = hashlib.sha256(Path(jsonl).read_bytes()).hexdigest()
    assert JsonlTask(jsonl, sha256=digest).file_sha256 == digest
    with pytest.raises(TaskError, match="sha256"):
        JsonlTask(jsonl, sha256="0" * 64)


def test_conflicting_answers_and_bad_options(tmp_path, jsonl):
    path = write_jsonl(tmp_path / "dup.jsonl", [ROWS[0], {"prompt": ROWS[0]["prompt"], "answer": "5"}])
    with pytest.raises(TaskError, match="different answer"):
        JsonlTask(path)
    with pytest.raises(TaskError, match="match"):
        JsonlTask(jsonl, match="fuzzy")
    with pytest.raises(TaskError, match="no number"):
        JsonlTask(write_jsonl(tmp_path / "w.jsonl", [ROWS[1]]), match="numeric")
    with pytest.raises(TaskError, match="no prompts"):
        JsonlTask(write_jsonl(tmp_path / "empty.jsonl", []))


# -- property tests on the parsers -------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_line_fails_only_with_task_error(raw):
    try:
        prompt, answer = parse_line(raw, 1)
    except TaskError as e:
        assert "line 1" in str(e)
    else:
        assert isinstance(prompt, str) and prompt and isinstance(answer, str)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1), st.one_of(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_parse_line_roundtrips_any_record(prompt, answer):
    raw = json.dumps({"prompt": prompt, "answer": answer}).encode()
    assert parse_line(raw, 1) == (prompt, str(answer))


WORDS = st.text(alphabet="abcxyz ,:!?", max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.decimals(min_value=-10**9, max_value=10**9, places=3, allow_nan=False, allow_infinity=False),
       st.booleans(), WORDS, WORDS)
def test_last_number_recovers_the_final_number(value, commas, prefix, suffix):
    shown = f"{value:,f}" if commas else f"{value:f}"
    assert last_number(f"{prefix} {shown} {suffix}") == value
    assert last_number(f"7 then {shown}") == value


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_last_number_never_raises(text):
    got = last_number(text)
    assert got is None or isinstance(got, Decimal)


def test_a_templated_prompt_is_found_by_its_ids_and_scored_against_its_answer(tmp_path):
    """With chat_template the model sees "user: ... assistant:", which never decodes back to the
    file's prompt: the trainer finds the prompt by its exact ids and scores the completion alone."""
    from nodes.engines.base import encode_prompt
    from nodes.models.tiny import build_tokenizer
    from nodes.trainer.intake import recompute_rewards
    from swarm.chunk import TrajectoryChunk, TrajectoryGroup

    tok = build_tokenizer()
    tok.chat_template = ("{% for m in messages %}user: {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    path = write_jsonl(tmp_path / "qa.jsonl", [{"prompt": "two plus two", "answer": "4"},
                                               {"prompt": "one plus one", "answer": "2"}])
    task = make_task("jsonl", {"path": path, "chat_template": True})
    templated = encode_prompt(tok, "two plus two", chat_template=True)
    assert tok.decode(templated, skip_special_tokens=True) == "user: two plus two assistant:"

    def chunk(prompt_ids):
        completions = [tok.convert_tokens_to_ids(list(text)) + [tok.eos_token_id] for text in ("4", "5", " 4")]
        return TrajectoryChunk(run_id="r", chunk_id="0" * 32, producer_key_id="0" * 64, policy_version=0,
                               task="jsonl", sampling={"temperature": 1.0, "max_new_tokens": 7}, created_at=0.0,
                               groups=(TrajectoryGroup(prompt_ids, completions, [[-1.0] * len(c) for c in completions]),))

    assert recompute_rewards(chunk(templated), tok, task) == [[1.0, 0.0, 1.0]]
    # The bare prompt is not what this run's rollouts are asked to answer: nothing to reward.
    assert recompute_rewards(chunk(encode_prompt(tok, "two plus two")), tok, task) == [[0.0, 0.0, 0.0]]


def test_a_wrong_task_option_names_the_option_and_the_known_ones(jsonl):
    with pytest.raises(TaskError, match="does not take option 'chat_templat'; its options: path, match, chat_template"):
        make_task("jsonl", {"path": jsonl, "chat_templat": True})
    with pytest.raises(TaskError, match="does not take option 'name'"):
        make_task("sort-digits", {"name": "other"})


def test_init_pins_the_task_file(jsonl):
    from nodes.runconfig import pinned_task
    from swarm.manifest import TaskSection

    pinned = pinned_task(TaskSection(name="jsonl", options={"path": jsonl}))
    assert pinned.options["sha256"] == hashlib.sha256(Path(jsonl).read_bytes()).hexdigest()
    Path(jsonl).write_text(Path(jsonl).read_text() + json.dumps({"prompt": "new", "answer": "x"}) + "\n")
    with pytest.raises(TaskError, match="has sha256"):
        make_task("jsonl", pinned.options)  # a node with another file refuses it
