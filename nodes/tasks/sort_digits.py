"""Sort digits: prompt "31415>", reward 1 for the completion "11345" (DESIGN.md §8)."""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from nodes.models.tiny import ANSWER_MARK
from nodes.tasks.base import Prompt, TaskError


@dataclass
class SortDigits:
    min_digits: int = 3
    max_digits: int = 5
    partial_credit: bool = False  # reward = fraction of positions right, instead of exact match
    name: str = "sort-digits"
    chat_template: ClassVar[bool] = False  # the embedded model reads the bare prompt

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits <= 16:
            raise TaskError("sort-digits needs 1 <= min_digits <= max_digits <= 16")

    def prompts(self, seed: int) -> Iterator[Prompt]:
        rng = random.Random(seed)
        while True:
            n = rng.randint(self.min_digits, self.max_digits)
            yield Prompt("".join(str(rng.randrange(10)) for _ in range(n)) + ANSWER_MARK)

    def reward(self, prompt: str, completion: str) -> float:
        digits = prompt.removesuffix(ANSWER_MARK)
        if not digits.isdigit():
            return 0.0
        want = "".join(sorted(digits))
        got = completion.strip()
        if not self.partial_credit:
            return float(got == want)
        hits = sum(a == b for a, b in zip(got, want))
        return hits / max(len(want), len(got))

    def prompt_texts(self) -> None:
        return None  # endless prompts; the reward reads the digits from the decoded prompt
