"""Give freed tensor memory back to the system (glibc), so a node's footprint follows its work.

glibc raises its mmap threshold each time a large block mmapped by malloc is freed (up to 32
MiB); after that, the many same-sized blocks torch allocates and frees (logit chunks, activations)
come from the heap, which fragments and is never trimmed: measured here, 47 chunks of 16 MiB of
logits computed and freed in turn left the resident size 850 MiB higher. A fixed threshold (what
the MALLOC_MMAP_THRESHOLD_ environment variable sets at start) keeps every block of 1 MiB or more
in its own mapping, returned to the system when freed.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold() -> bool:
    """Set glibc's mmap threshold to 1 MiB (no-op elsewhere); True when it was set."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to fix
        return False
