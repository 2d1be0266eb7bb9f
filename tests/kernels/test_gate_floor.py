"""benchmarks/gate_floor.py times the gate's arithmetic alone; under the CPU interpreter it must compute that
arithmetic: the same sums as the gate of Eq. 5 written in torch over the same synthetic pairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lfi.models.kernels import fused

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.skipif(fused._kernels is None, reason="needs triton"), pytest.mark.slow]

# Runs in a subprocess: TRITON_INTERPRET must be set before triton is imported.
SCRIPT = """
import json, sys
import torch
sys.path.insert(0, "benchmarks")
import gate_floor
from lfi.models.kernels.fused import _mix_meta, _mix_weights

heads, hidden, bp, programs = 3, 5, 16, 2
g = torch.Generator().manual_seed(0)
w = [torch.randn(*s, generator=g) * 0.5 for s in ((hidden, 2 * heads), (hidden,), (2 * heads, hidden), (2 * heads,))]
hp, ep, es = _mix_meta(heads, hidden)
out = {}
for mode, code in gate_floor.MODES.items():
    res = torch.empty(programs)
    gate_floor._gate_floor_kernel[(programs,)](*_mix_weights(*w, heads, keys=1), res, 2 * heads, ITERS=2, MODE=code, HP=hp, ES=es,
                                               EP=ep, BP=bp, PREC_G="ieee", num_warps=1)
    out[mode] = res.tolist()
print(json.dumps({"out": out, "w": [t.tolist() for t in w], "hp": hp}))
"""


def torch_floor(w, hp: int, heads: int, bp: int, programs: int, iters: int) -> dict[str, list[float]]:
    """The kernel's sums in torch, float64: per program, over its pair tiles and iterations."""
    w1, b1, w2, b2 = (torch.tensor(t, dtype=torch.float64) for t in w)
    perm = fused._mix_channels(heads, torch.device("cpu"))
    sums = {m: [] for m in ("forward", "backward", "backward_weight_grads")}
    for pid in range(programs):
        seed = (pid * bp + torch.arange(bp)[:, None]) * (2 * hp) + torch.arange(2 * hp)[None, :]
        x0 = ((seed * 40503) & 2047).double() / 1024.0
        fwd = bwd = wgrad = 0.0
        for it in range(iters):
            xp = x0 + it * 1e-3
            x = torch.empty(bp, 2 * heads, dtype=torch.float64)
            x[:, perm] = xp[:, : 2 * heads]  # kernel channel 2h + c -> gate_values' channel c H + h
            u = x @ w1.T + b1
            z = torch.nn.functional.gelu(u)
            gelu_grad = (
                0.5 * (1 + torch.erf(u / 2**0.5)) + u * torch.exp(-0.5 * u * u) / (2 * torch.pi) ** 0.5
            )
            gt = torch.sigmoid(z @ w2.T + b2)
            fwd += (gt * x).sum().item()
            dt = x * x * gt * (1 - gt)
            du = (dt @ w2) * gelu_grad
            dp = x * gt + du @ w1
            bwd += (x * dp).sum().item()
            wgrad += (du.T @ x).sum().item() + (dt.T @ z).sum().item()  # dw1 (E, 2H), dw2 (2H, E)
        sums["forward"].append(fwd)
        sums["backward"].append(bwd)
        sums["backward_weight_grads"].append(bwd + wgrad)
    return sums


def test_floor_kernel_computes_the_gate_it_times():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    want = torch_floor(got["w"], got["hp"], heads=3, bp=16, programs=2, iters=2)
    for mode, values in want.items():
        torch.testing.assert_close(torch.tensor(got["out"][mode]), torch.tensor(values, dtype=torch.float32),
                                   rtol=1e-4, atol=1e-3)  # fmt: skip
