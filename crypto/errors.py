"""Exceptions of the crypto package.

Every decoder here raises only a subclass of :class:`CryptoError` on bad input, so a caller that
handles peer data catches one type, logs ``str(exc)`` as the reason, and moves on.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class: the input was rejected; the message says why."""


class KeyFileError(CryptoError):
    """A key file is missing, unreadable, corrupt or readable by others (the message names the fix)."""


class SignatureError(CryptoError):
    """No (or too few) valid signatures from allowed keys."""


class EnvelopeError(CryptoError):
    """A signed envelope is malformed, oversized, or carries a payload type we do not accept."""


class SealError(CryptoError):
    """A sealed blob does not open: not a recipient, tampered, truncated, unknown suite, wrong context.

    ``reason`` is one short word a caller can count on without parsing the message: ``wrong_run``
    (sealed for another run), ``oversize``, ``not_recipient``, ``tampered`` (authentication failed)
    or ``malformed`` (framing, header, suite; also bad arguments to ``seal``).
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class CanonicalError(CryptoError):
    """JSON that is malformed, ambiguous (duplicate keys), non-finite, non-str-keyed or oversized."""
