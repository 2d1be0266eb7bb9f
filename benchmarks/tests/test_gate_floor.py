"""benchmarks/gate_floor.py times the gate's arithmetic alone; under the CPU interpreter it must compute that
arithmetic: the same sums as the gate of Eq. 5 written in torch over the same synthetic pairs, with the weight
gradients in the kernels' packed layout (a misplaced or transposed entry changes the position-weighted sum)."""

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
HEADS, BP, PROGRAMS, ITERS = 3, 16, 2, 2

# Runs in a subprocess: TRITON_INTERPRET must be set before triton is imported.
SCRIPT = """
import json, sys
import torch
sys.path.insert(0, "benchmarks")
import gate_floor
from lfi.models.kernels.fused import _mix_meta, _mix_weights

heads, hidden, bp, programs, iters = (int(a) for a in sys.argv[1:])
g = torch.Generator().manual_seed(0)
w = [torch.randn(*s, generator=g) * 0.5 for s in ((hidden, 2 * heads), (hidden,), (2 * heads, hidden), (2 * heads,))]
hp, ep, es = _mix_meta(heads, hidden)
out = {}
for mode, code in gate_floor.MODES.items():
    res = torch.empty(programs)
    gate_floor._gate_floor_kernel[(programs,)](*_mix_weights(*w, heads, keys=torch.ones(1)), res, 2 * heads, ITERS=iters,
                                               MODE=code, HP=hp, EP=ep, ES=es, BP=bp, PREC="ieee", num_warps=1)
    out[mode] = res.tolist()
print(json.dumps({"out": out, "w": [t.tolist() for t in w]}))
"""


def _packed(dw1: torch.Tensor, dw2: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-layout weight gradients dw1 (E, 2H), dw2 (2H, E) -> the kernels' dw1t (2HP, EP), dw2t (EP, 2HP)."""
    zeros = torch.zeros(dw1.shape[0], dtype=dw1.dtype), torch.zeros(dw2.shape[0], dtype=dw1.dtype)
    w1t, _, w2t, _ = fused._mix_weights(dw1, zeros[0], dw2, zeros[1], heads, keys=torch.ones(1))
    return w1t[0].double(), w2t.double()


def torch_floor(w, heads: int) -> dict[str, list[float]]:
    """The kernel's per-program sums in torch, float64."""
    w1, b1, w2, b2 = (torch.tensor(t, dtype=torch.float64) for t in w)
    hp, ep, _ = fused._mix_meta(heads, w1.shape[0])
    perm = fused._mix_channels(heads, torch.device("cpu"))
    tag1 = (torch.arange(2 * hp)[:, None] * ep + torch.arange(ep)[None, :] + 1).double()
    tag2 = (torch.arange(ep)[:, None] * (2 * hp) + torch.arange(2 * hp)[None, :] + 1).double()
    sums = {m: [] for m in ("forward", "backward", "backward_weight_grads")}
    for pid in range(PROGRAMS):
        seed = (pid * BP + torch.arange(BP)[:, None]) * (2 * hp) + torch.arange(2 * hp)[None, :]
        x0 = ((seed * 40503) & 2047).double() / 1024.0
        fwd = bwd = 0.0
        dw1 = torch.zeros_like(w1)
        dw2 = torch.zeros_like(w2)
        for it in range(ITERS):
            x = torch.empty(BP, 2 * heads, dtype=torch.float64)
            x[:, perm] = (
                x0[:, : 2 * heads] + it * 1e-3
            )  # kernel channel 2h + c -> gate_values' channel c H + h
            u = x @ w1.T + b1
            z = torch.nn.functional.gelu(u)
            slope = 0.5 * (1 + torch.erf(u / 2**0.5)) + u * torch.exp(-0.5 * u * u) / (2 * torch.pi) ** 0.5
            g = torch.sigmoid(z @ w2.T + b2)
            fwd += (g * x).sum().item()
            dt = x * x * g * (1 - g)
            du = (dt @ w2) * slope
            bwd += (x * (x * g + du @ w1)).sum().item()
            dw1 += du.T @ x
            dw2 += dt.T @ z
        dw1t, dw2t = _packed(dw1, dw2, heads)
        sums["forward"].append(fwd)
        sums["backward"].append(bwd)
        sums["backward_weight_grads"].append(bwd + (dw1t * tag1).sum().item() + (dw2t * tag2).sum().item())
    return sums


@pytest.mark.parametrize(
    "hidden", [5, 12]
)  # hidden units in the even columns (ES = 2), and in all of them (1)
def test_floor_kernel_computes_the_gate_it_times(hidden):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    args = [str(a) for a in (HEADS, hidden, BP, PROGRAMS, ITERS)]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    want = torch_floor(got["w"], HEADS)
    for mode, values in want.items():
        torch.testing.assert_close(
            torch.tensor(got["out"][mode], dtype=torch.float64),
            torch.tensor(values, dtype=torch.float64),
            rtol=1e-4,
            atol=1e-3,
        )
