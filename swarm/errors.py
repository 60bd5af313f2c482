"""Rejections with a reason: the short counter name every refusal of peer input carries."""
from __future__ import annotations

import re

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Rejection(ValueError):
    """Peer input refused; `reason` names the counter it is counted under, `detail` is for logs."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class RecordError(Rejection):
    """A DHT record failed verification or its schema."""


class VersionError(Rejection):
    """An adapter version (record or bundle) failed verification."""
