"""benchmarks/kernel_resources.py compiles a kernel for sm_90 without a GPU and reads its resources back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lfi.models.kernels import fused

SCRIPT = Path(__file__).resolve().parents[1] / "kernel_resources.py"
pytestmark = pytest.mark.skipif(fused._kernels is None, reason="needs triton")


@pytest.fixture(scope="module")
def kernel_resources():
    spec = importlib.util.spec_from_file_location("kernel_resources", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_row_statistics_kernel_compiles_offline_with_its_resources(kernel_resources, tmp_path):
    out = tmp_path / "kr.json"
    report = kernel_resources.main(["--kernels", "lse", "--blocks", "lse=32,32,2,1", "--out", str(out)])
    info = report["kernels"]["lse"]
    assert 0 < info["registers"] <= 255
    assert info["num_warps"] == 2 and info["tile"] == [32, 32]  # the --blocks override was compiled
    assert fused.BLOCKS["lse"] != (32, 32, 2, 1)  # ... without changing the library's tiles
    assert info["sass_opcodes"]["MUFU"] > 0  # the exp2 of both softmaxes run on the special-function unit
    assert info["sass_instructions"] == sum(info["sass_opcodes"].values())
    assert json.loads(out.read_text())["kernels"]["lse"] == info


def test_unknown_kernel_names_are_refused(kernel_resources):
    with pytest.raises(SystemExit, match="gate_bwd"):
        kernel_resources.main(["--kernels", "bwd"])
