"""crypto/ stays a leaf: it imports nothing of ours, and never hivemind or torch (they cost seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_crypto_imports_no_heavy_or_project_modules() -> None:
    code = (
        "import sys\n"
        "import crypto, crypto.canonical, crypto.envelope, crypto.errors, crypto.golden_gen, crypto.identity\n"
        "import crypto.sealing\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'hivemind', 'torch', 'swarm', 'nodes', "
        "'scenarios'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
