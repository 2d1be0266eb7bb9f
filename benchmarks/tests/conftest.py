"""Tests of the benchmark scripts: the scripts' folder (benchmarks/) goes on sys.path, as the scripts put it
there themselves, so that they and their helpers (profiling, attention_kernels, ...) import as in a run."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))
