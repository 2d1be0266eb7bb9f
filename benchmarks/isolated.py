"""One benchmark case run in isolation: an OOM or any other error becomes a record, and the run goes on."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

import torch


def run_isolated(case: Callable[..., dict], *args: Any) -> dict:
    """case(*args) -> its record; on failure {"status": "oom" | "error", "error", "traceback"}; + "case_wall_s"."""
    t0 = time.perf_counter()
    try:
        record = case(*args)
    except torch.cuda.OutOfMemoryError as e:
        record = {"status": "oom", "error": str(e).splitlines()[0]}
    except Exception as e:  # any failure is data: record it and go on
        record = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000],
                  "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
    return record | {"case_wall_s": time.perf_counter() - t0}
