"""Make the shared helpers (fused_cases.py) importable by the kernel tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
