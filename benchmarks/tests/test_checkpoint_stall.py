"""benchmarks/checkpoint_stall.py: one write by each writer while the training thread's loop runs."""

from __future__ import annotations

import pytest
import torch
from checkpoint_stall import WRITERS, launches, one_write, state_bytes


@pytest.mark.parametrize("writer", list(WRITERS))
def test_one_write_writes_the_state_and_reports_its_cost(tmp_path, writer):
    state = {
        "state_dict": {"w": torch.arange(6.0)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}}],
    }
    assert state_bytes(state) == 6 * 4 + 3 * 4
    ops, wall = launches(0.05)
    assert ops > 0 and wall >= 0.05
    io, wait = WRITERS[writer]()
    result = one_write(io, wait, state, tmp_path / "last.ckpt", ops / wall)
    io.teardown()
    assert set(result) == {"call_ms", "lost_ms", "write_ms"} and result["write_ms"] >= result["call_ms"] > 0
    loaded = torch.load(tmp_path / "last.ckpt", weights_only=True)  # written whole before one_write returns
    assert torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
