"""The Task interface and the registry that builds a task from the manifest's `task` table."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol


class TaskError(ValueError):
    """A task cannot be built from its settings (unknown name, missing file, bad field)."""


@dataclass(frozen=True)
class Prompt:
    """One prompt of a task. `text` is what the model sees; the verifier needs only the text."""

    text: str


class Task(Protocol):
    name: str

    def prompts(self, seed: int) -> Iterator[Prompt]:
        """An endless, deterministic stream of prompts for `seed`."""

    def reward(self, prompt: str, completion: str) -> float:
        """Score a completion of `prompt`; the trainer recomputes this and never trusts a claim."""


def completion_text(tokenizer, ids: list[int]) -> str:
    """The text the verifier sees: tokens before the first EOS, specials NOT stripped.

    Keeping specials means a completion with a stray <pad>/<bos> is simply wrong, instead of
    being silently cleaned into a right answer.
    """
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=False)


def make_task(name: str, options: dict[str, Any] | None = None) -> Task:
    options = dict(options or {})
    if name == "sort-digits":
        from nodes.tasks.sort_digits import SortDigits

        return SortDigits(**options)
    if name == "jsonl":
        from nodes.tasks.jsonl import JsonlTask

        return JsonlTask(**options)
    raise TaskError(f"unknown task {name!r}: choose 'sort-digits' or 'jsonl'")
