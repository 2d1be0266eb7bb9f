"""Shared by the kernel tests: random cases, relative errors against the reference math run in float64.

Importable both by pytest (tests/kernels on sys.path) and by `interpret_check.py` run as a script.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfi.models.interaction_attention import GateWeights, MapRequest, interaction_attention


@dataclass(frozen=True)
class Case:
    """One random problem of a gated layer: (B, H, N, d), key mask, map rows, the gate's hidden width.

    key_mask: the last quarter of batch element 0's keys masked out (DETR padding: the gate of that element
        reads fewer keys than the others'). rows: rows of the requested maps (C_AGT and C_F); None: full maps;
        0: no maps requested.
    """

    batch: int
    heads: int
    tokens: int
    head_dim: int
    key_mask: bool = False
    rows: int | None = 1
    hidden: int = 8

    @property
    def name(self) -> str:
        mask = "-mask" if self.key_mask else ""
        return f"B{self.batch}H{self.heads}N{self.tokens}d{self.head_dim}E{self.hidden}{mask}"


def make_inputs(case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    """Leaf tensors of the case (q, k, v, q_int, gate weights), a mask, the request and the output cotangents."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).to(device=device, dtype=dtype).requires_grad_()

    B, H, N, d = case.batch, case.heads, case.tokens, case.head_dim
    x = {name: rnd(B, H, N, d) for name in ("q", "k", "v", "q_int")}
    E = case.hidden  # random weights (not the zero init) so that every gate gradient is non-trivial
    gate = GateWeights(rnd(E, 2 * H, std=0.5), rnd(E, std=0.5), rnd(2 * H, E, std=0.5), rnd(2 * H, std=0.5))
    mask = None
    if case.key_mask:  # the last quarter of the keys of batch element 0 masked out (DETR padding)
        mask = torch.ones(B, 1, 1, N, dtype=torch.bool, device=device)
        mask[0, ..., N - N // 4 :] = False
    request = MapRequest.of("agt", "fused", rows=case.rows) if case.rows != 0 else None
    gout = torch.randn(B, H, N, d, generator=g).to(device=device, dtype=dtype)
    gmaps = torch.randn(B, H, case.rows or N, N, generator=g).to(device=device, dtype=dtype)
    return {**x, "gate": gate, "mask": mask, "request": request, "gout": gout, "gmaps": gmaps}


def leaves(inp: dict) -> list[torch.Tensor]:
    return [inp["q"], inp["k"], inp["v"], inp["q_int"], *inp["gate"]]


LEAF_NAMES = ["q", "k", "v", "q_int", "w1", "b1", "w2", "b2"]


def run(fn, inp: dict, dtype: torch.dtype | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Forward + backward of `fn` (the signature of interaction_attention) on the case's inputs.

    dtype: cast the leaves to it first (e.g. float64 for the reference), as new leaves. Returns
    [out, *maps in name order] and the gradients of every leaf.
    """
    xs = leaves(inp)
    if dtype is not None:
        xs = [t.detach().to(dtype).requires_grad_() for t in xs]
    q, k, v, q_int, *w = xs
    gate = GateWeights(*w)
    scale = q.shape[-1] ** -0.5
    out, maps = fn(q, k, v, scale, q_int=q_int, gate=gate, request=inp["request"], attn_mask=inp["mask"])
    outs = [out] + [maps[n] for n in sorted(maps)]
    loss = (out * inp["gout"].to(out.dtype)).sum()
    for n in sorted(maps):
        loss = loss + (maps[n] * inp["gmaps"].to(out.dtype)).sum()
    return outs, list(torch.autograd.grad(loss, xs))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (b the reference)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def compare(fused_fn, inp: dict) -> dict[str, float]:
    """Relative errors of the fused path (in the inputs' dtype) against the float64 reference."""
    outs, grads = run(fused_fn, inp)
    ref_outs, ref_grads = run(interaction_attention, inp, dtype=torch.float64)
    names = ["out"] + [f"map_{n}" for n in sorted(inp["request"].names)] if inp["request"] else ["out"]
    errs = {n: rel_err(a, b) for n, a, b in zip(names, outs, ref_outs, strict=True)}
    errs |= {f"d{n}": rel_err(a, b) for n, a, b in zip(LEAF_NAMES, grads, ref_grads, strict=True)}
    return errs
