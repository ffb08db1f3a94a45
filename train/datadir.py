"""Where the real datasets live: the one default that every command, benchmark and test reads.

``../shared/data`` beside the repository. Commands take it relative to the current directory
(they are run from the repository root; ``--data-dir`` names another folder); benchmarks and tests
that must work from anywhere join it to the repository root.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATA_DIR = Path("../shared/data")
