"""Run the Triton kernels under the CPU interpreter on tiny cases; print {case: {tensor: rel. error}} as JSON.

Run as a script (TRITON_INTERPRET must be set before triton is imported, hence a subprocess):
    python tests/kernels/interpret_check.py [quick]

Triton 3.6's interpreter fails on numpy >= 2.4 ("only 0-dimensional arrays can be converted to Python
scalars" at the first loop over a runtime bound); numpy 2.3 works.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from fused_cases import Case, compare, make_inputs  # noqa: E402

from lfi.models.kernels import fused_interaction_attention  # noqa: E402

QUICK = [Case(1, 2, 20, 32)]
FULL = [
    Case(2, 3, 37, 32, rows=2),
    Case(2, 3, 37, 32, key_mask=True),  # batch elements with different key counts: per-element gate scales
    Case(2, 2, 33, 64, key_mask=True, hidden=5),
    Case(1, 1, 17, 32),
    Case(1, 2, 18, 32, rows=None),
    Case(1, 2, 21, 32, hidden=12),  # hidden units fill EP = 16: GELU on every column (ES = 1)
]


def main() -> None:
    cases = QUICK if sys.argv[1:] == ["quick"] else FULL
    torch.manual_seed(0)
    report = {
        c.name: compare(fused_interaction_attention, make_inputs(c, torch.float32, "cpu")) for c in cases
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
