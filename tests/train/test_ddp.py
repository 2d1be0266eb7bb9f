"""Two-process DDP on CPU (gloo): both ranks train one model on their halves of the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import tiny_data, write_store

pytestmark = pytest.mark.slow


def test_two_process_ddp_on_cpu(tmp_path: Path):
    write_store(tiny_data(), tmp_path / "store")
    env = {**os.environ, "PYTHONHASHSEED": "0", "MASTER_PORT": "29517", "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("ddp_script.py")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)  # replicas stay in sync
    # 48 images split over 2 ranks at batch 16 (drop_last): 1 step per epoch instead of 3 on one process
    assert ranks[0]["global_step"] == 2
    metrics = json.loads((tmp_path / "iq_ic_gc" / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"id", "ood"}
