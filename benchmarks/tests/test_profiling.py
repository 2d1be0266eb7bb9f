"""benchmarks/profiling.py: kernels are attributed to every aten op that launched them, not to one of them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "profiling.py"


def _profiling():
    spec = importlib.util.spec_from_file_location("profiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_kernel_shared_by_several_ops_is_reported_under_all_of_them():
    profiling = _profiling()
    breakdown = {
        "kernels": [
            {"label": "copy", "ops": ["aten::cat", "aten::reshape"], "us": 30.0},
            {"label": "gemm", "ops": ["aten::mm"], "us": 50.0},
            {"label": "memset", "ops": ["-"], "us": 5.0},
            {"label": "gemm2", "ops": ["aten::mm"], "us": 10.0},
        ]
    }
    assert profiling.by_op(breakdown) == [("mm", 60.0), ("cat/reshape", 30.0), ("memset", 5.0)]
    assert (
        profiling._label("void at::native::copy_kernel<float>(int)", "cat/reshape")
        == "cat/reshape[copy_kernel]"
    )


def test_the_breakdown_of_a_cpu_function_sums_op_self_times():
    import torch

    profiling = _profiling()
    x = torch.randn(64, 64)
    report = profiling.kernel_breakdown(lambda: x @ x, iters=2, cuda=False)
    assert report["iters"] == 2
    assert any(row["kernel"] == "aten::mm" for row in report["kernels"])
    assert report["total_us"] == pytest.approx(sum(row["us"] for row in report["kernels"]))


def test_attention_time_counts_sdpa_and_interaction_kernels_only():
    profiling = _profiling()
    breakdown = {
        "kernels": [
            {"kernel": "cudnn_generated_fort_native_sdpa_sm90_flash_bprop", "ops": ["aten::_scaled_dot_product_cudnn_attention_backward"], "us": 40.0},
            {"kernel": "_mix_gate_bwd_kernel", "ops": ["-"], "us": 30.0},
            {"kernel": "_lse_kernel", "ops": ["-"], "us": 2.0},
            {"kernel": "cutlass__5x_cudnn::Kernel<conv>", "ops": ["aten::conv2d"], "us": 20.0},  # a cuDNN conv
            {"kernel": "Memset (Device)", "ops": ["aten::_scaled_dot_product_cudnn_attention_backward", "aten::mm"], "us": 1.0},
            {"kernel": "_gate_floor_kernel", "ops": ["-"], "us": 7.0},  # a benchmark's kernel, not lfi's
            {"kernel": "aten::_scaled_dot_product_flash_attention_for_cpu", "ops": [], "us": 3.0},  # a CPU row
            {"kernel": "aten::mm", "ops": [], "us": 4.0},
        ]
    }  # fmt: skip
    assert profiling.attention_us(breakdown) == 75.0


def test_a_gpu_user_annotation_is_not_counted_as_a_kernel():
    """The Optimizer.step range on the GPU timeline spans kernels already counted (stand-in events: no GPU here)."""
    from types import SimpleNamespace

    import torch

    profiling = _profiling()
    cuda = torch.autograd.DeviceType.CUDA

    def event(name, us, annotation=False):
        span = SimpleNamespace(elapsed_us=lambda: us)
        return SimpleNamespace(name=name, device_type=cuda, time_range=span, is_user_annotation=annotation)

    events = [
        event("gemm", 30.0),
        event("adam", 10.0),
        event("Optimizer.step#AdamW.step", 25.0, annotation=True),
    ]
    report = profiling.breakdown_of(SimpleNamespace(events=lambda: events), iters=1, cuda=True)
    assert [row["kernel"] for row in report["kernels"]] == ["gemm", "adam"]
    assert report["total_us"] == 40.0
