"""A reusable per-thread buffer for large intermediates that never leave a function.

Every fresh multi-MiB bytes object costs page faults (glibc hands big blocks back to the OS on free):
measured ~2 ms per 4 MiB here, more than ChaCha20-Poly1305 takes over the same bytes. The PAE that
Ed25519 signs and the ciphertext before framing are such intermediates, so they are written here.
Sizes outside [MIN_SIZE, MAX_SIZE], or a nested use on the same thread, get a plain fresh buffer, so
a thread keeps at most MAX_SIZE bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

MIN_SIZE = 1 << 20
MAX_SIZE = 16 << 20
_local = threading.local()


@contextmanager
def scratch(size: int) -> Iterator[memoryview]:
    """A writable view of exactly ``size`` bytes, valid (and exclusive) inside the ``with`` block."""
    if not MIN_SIZE <= size <= MAX_SIZE or getattr(_local, "busy", False):
        yield memoryview(bytearray(size))
        return
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        # replace, never resize: a view someone still holds then keeps the old buffer alive, harmlessly
        buf = _local.buf = bytearray(min(MAX_SIZE, max(size, 2 * len(buf or b""))))
    _local.busy = True
    try:
        yield memoryview(buf)[:size]
    finally:
        _local.busy = False
