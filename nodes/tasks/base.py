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
    chat_template: bool
    """Prompts reach the model wrapped in the base's chat template (one user turn)."""

    def prompts(self, seed: int) -> Iterator[Prompt]:
        """An endless, deterministic stream of prompts for `seed`."""

    def reward(self, prompt: str, completion: str) -> float:
        """Score a completion of `prompt`; the trainer recomputes this and never trusts a claim."""

    def prompt_texts(self) -> list[str] | None:
        """Every prompt, for a task with a fixed set: the trainer then finds a chunk's prompt by
        its exact token ids (a templated or re-tokenized prompt never decodes back to the text).
        None: the prompt is the decoded ids (the task's rewards read it from the text)."""


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
    import dataclasses

    options = dict(options or {})
    if name == "sort-digits":
        from nodes.tasks.sort_digits import SortDigits as cls
    elif name == "jsonl":
        from nodes.tasks.jsonl import JsonlTask as cls
    else:
        raise TaskError(f"unknown task {name!r}: choose 'sort-digits' or 'jsonl'")
    known = [f.name for f in dataclasses.fields(cls) if f.init and f.name != "name"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TaskError(f"task {name!r} does not take option {unknown[0]!r}; its options: {', '.join(known)}")
    return cls(**options)
