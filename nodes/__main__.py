"""`python -m nodes ...` is the `swarm` console script (handy without an installed entry point)."""
import sys

from nodes.cli import main

sys.exit(main())
