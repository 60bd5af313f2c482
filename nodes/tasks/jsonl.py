"""A task from a JSONL file of {"prompt": ..., "answer": ...} lines, for real models.

The reward is recomputed from the file itself: the trainer looks the prompt text up and compares
the completion with the recorded answer, so a rollout node can claim nothing. `sha256` pins the
file (a manifest names it) so every node scores against the same answers.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from nodes.tasks.base import Prompt, TaskError

MAX_LINE_BYTES = 1 << 20
# A number: digits with optional thousands commas and decimals, or ".5"; a sign counts only when
# it does not follow a word character ("2-3" ends with 3, not -3).
_NUMBER = re.compile(r"(?:(?<![\w.])[-+])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<!\d)\.\d+)")


def last_number(text: str) -> Decimal | None:
    """The last number written in `text` ("1,234.50" -> 1234.50), or None when there is none."""
    found = None
    for m in _NUMBER.finditer(text):
        found = m.group(0)
    if found is None:
        return None
    try:
        return Decimal(found.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern only matches valid decimals
        return None


@dataclass
class JsonlTask:
    path: str
    match: str = "exact"
    """"exact": stripped completion == stripped answer; "numeric": last number equal in value."""
    chat_template: bool = False
    """Wrap each prompt in the base's chat template (one user turn, with the generation prompt),
    as instruction-tuned models expect; the trainer finds the prompt by its token ids."""
    sha256: str | None = None
    """When set, the file's sha256 must equal it."""
    name: str = "jsonl"
    _answers: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _prompts: list[str] = field(default_factory=list, init=False, repr=False)
    _numbers: dict[str, Decimal] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.match not in ("exact", "numeric"):
            raise TaskError(f"jsonl match must be 'exact' or 'numeric', not {self.match!r}")
        p = Path(self.path)
        if not p.is_file():
            raise TaskError(f"jsonl task file {self.path} does not exist")
        data = p.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if self.sha256 is not None and digest != self.sha256.lower():
            raise TaskError(f"jsonl task file {self.path} has sha256 {digest}, expected {self.sha256}")
        self.file_sha256 = digest
        self._load(data)

    def _load(self, data: bytes) -> None:
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                prompt, answer = parse_line(raw, lineno)
            except TaskError as e:
                raise TaskError(f"{self.path} {e}") from None
            if self.match == "numeric":
                num = last_number(answer)
                if num is None:
                    raise TaskError(f"{self.path} line {lineno}: numeric answer {answer[:40]!r} has no number")
                self._numbers[prompt] = num
            if prompt in self._answers and self._answers[prompt] != answer:
                raise TaskError(f"{self.path} line {lineno}: prompt repeated with a different answer")
            self._answers[prompt] = answer
            self._prompts.append(prompt)
        if not self._prompts:
            raise TaskError(f"jsonl task file {self.path} has no prompts")

    def __len__(self) -> int:
        return len(self._prompts)

    def prompts(self, seed: int) -> Iterator[Prompt]:
        """Endless: each pass over the file is a fresh seeded shuffle."""
        rng = random.Random(seed)
        order = list(range(len(self._prompts)))
        while True:
            rng.shuffle(order)
            for i in order:
                yield Prompt(self._prompts[i])

    def prompt_texts(self) -> list[str]:
        return list(self._prompts)

    def reward(self, prompt: str, completion: str) -> float:
        answer = self._answers.get(prompt)
        if answer is None:
            return 0.0  # not a prompt of this task: nothing to reward
        if self.match == "exact":
            return float(completion.strip() == answer.strip())
        got = last_number(completion)
        return float(got is not None and got == self._numbers[prompt])


def parse_line(raw: bytes, lineno: int) -> tuple[str, str]:
    """One JSONL line -> (prompt, answer); every defect is a TaskError naming the line."""
    if len(raw) > MAX_LINE_BYTES:
        raise TaskError(f"line {lineno}: longer than {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TaskError(f"line {lineno}: not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise TaskError(f"line {lineno}: expected an object with 'prompt' and 'answer'")
    prompt, answer = obj.get("prompt"), obj.get("answer")
    if not isinstance(prompt, str) or not prompt:
        raise TaskError(f"line {lineno}: 'prompt' must be a non-empty string")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise TaskError(f"line {lineno}: 'answer' must be a string or a number")
    return prompt, str(answer)
