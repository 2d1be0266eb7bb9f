"""benchmarks/fit_fixed_costs.py: each case changes the engine for its fit alone, and a fit's figures come out."""

from __future__ import annotations

import contextlib

import pytest
from fit_fixed_costs import CASES, as_case, one_fit

from lfi.train import engine


@pytest.mark.parametrize("case", CASES)
def test_a_case_changes_the_engine_inside_its_block_only(case):
    kept = engine.start_writer, engine.frozen_heap
    with as_case(case):
        changed = engine.start_writer is not kept[0], engine.frozen_heap is not kept[1]
    assert (
        changed
        == {"lfi": (False, False), "writer_at_first_save": (True, False), "heap_unfrozen": (False, True)}[
            case
        ]
    )
    assert (engine.start_writer, engine.frozen_heap) == kept


def test_one_fit_reports_the_fit_its_end_and_the_collectors_full_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("LFI_RUNS_ROOT", str(tmp_path))
    fit = one_fit("heap_unfrozen", "cpu", 32, tmp_path)
    assert fit["fit_s"] > fit["end_s"] > 0
    assert fit["gc2_during_fit"] == len(fit["gc2_each_s"]) <= len(fit["gc2_in_train_s"])
    assert fit["train_call_s"] > fit["fit_s"]
    assert len(fit["validations_s"]) == 2 and len(fit["edges_s"]) == 9  # validation every 5 of 10 epochs
    assert engine.frozen_heap is not contextlib.nullcontext
