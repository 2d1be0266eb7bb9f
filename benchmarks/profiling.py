"""Where the device time of a callable goes: torch.profiler's kernels, summed by name, with the aten op(s) above each."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

# lfi's interaction-attention kernels (lfi.models.kernels), launched from an autograd Function, not an aten op
INTERACTION_KERNEL = re.compile(r"^_(lse|mix_\w+|ph_\w+)_kernel$")


def _outer_aten(evt) -> str | None:
    """The outermost aten op above a (launch) event: which torch call a kernel belongs to."""
    found = None
    while evt is not None:
        found = evt.name if evt.name.startswith("aten::") else found
        evt = evt.cpu_parent
    return found


def _launching_ops(ops: list[str]) -> str | None:
    """The aten op(s) that launched a kernel, "cat/matmul" when several did (a copy kernel serves many ops, and
    naming one of them would put the others' time on it); None when no aten op was found."""
    named = [o.removeprefix("aten::") for o in ops if o != "-"]
    return "/".join(named) or None


def _label(name: str, op: str | None) -> str:
    head = re.split(r"[<(]", re.sub(r"^void ", "", name).replace("at::native::", ""), maxsplit=1)[0].strip()
    head = head.replace("(anonymous namespace)::", "") or name
    return head if op is None else f"{op}[{head}]"


def kernel_breakdown(fn: Callable[[], None], iters: int, cuda: bool) -> dict:
    """Device time per kernel name of fn (us per call of fn): CUDA kernels, or CPU op self-time on a CPU."""
    for _ in range(3):
        fn()
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities(cuda)) as prof:
        for _ in range(iters):
            fn()
        if cuda:
            torch.cuda.synchronize()
    return breakdown_of(prof, iters, cuda)


def activities(cuda: bool) -> list[ProfilerActivity]:
    """What a breakdown profiles: the host's ops and, on a GPU, its kernels."""
    return [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]


def breakdown_of(prof: profile, iters: int, cuda: bool) -> dict:
    """`kernel_breakdown` of a finished profile that covered `iters` calls (or steps) of the profiled work."""
    us, calls, ops = defaultdict(float), defaultdict(int), defaultdict(set)
    for e in prof.events():
        # a GPU user annotation (record_function's range on the device's timeline, e.g. Optimizer.step#AdamW.step)
        # spans kernels already counted, and the idle time between them: not a kernel (counted until 2026-12-07)
        annotation = getattr(e, "is_user_annotation", False)
        if cuda and e.device_type == torch.autograd.DeviceType.CUDA and not annotation:
            us[e.name] += e.time_range.elapsed_us()
            calls[e.name] += 1
        elif not cuda and e.device_type == torch.autograd.DeviceType.CPU and not e.is_async:
            us[e.name] += e.self_cpu_time_total
            calls[e.name] += 1
        if cuda and e.device_type == torch.autograd.DeviceType.CPU and e.kernels:
            op = _outer_aten(e)
            for kinfo in e.kernels:
                ops[kinfo.name].add(op or "-")
    rows = []
    for name in sorted(us, key=us.get, reverse=True):
        launched_by = sorted(ops[name])
        rows.append({"kernel": name, "label": _label(name, _launching_ops(launched_by)), "ops": launched_by,
                     "us": us[name] / iters, "calls": calls[name] / iters})  # fmt: skip
    return {"unit": "us per call of the profiled function", "source": "cuda kernels" if cuda else "cpu op self-time (smoke test)",
            "iters": iters, "total_us": sum(us.values()) / iters, "kernels": rows}  # fmt: skip


def top_kernels(breakdown: dict, n: int = 12) -> list[dict]:
    """The `n` kernels of a breakdown with the most time: label, us and calls per call of the function."""
    return [{"kernel": k["label"], "us": round(k["us"], 1), "calls": round(k["calls"], 2)}
            for k in breakdown["kernels"][:n]]  # fmt: skip


def launches(breakdown: dict) -> float:
    """Kernels (ops on a CPU) per call of the function: the host launches each one."""
    return round(sum(k["calls"] for k in breakdown["kernels"]), 1)


def added_kernels(breakdown: dict, baseline: dict, n: int = 12) -> list[dict]:
    """The `n` kernel labels with the most more time per call in `breakdown` than in `baseline` (the GPU work
    that one adds to the other, e.g. a fit's step over the bare step): label, extra us, us of each."""
    mine, theirs = _us_by_label(breakdown), _us_by_label(baseline)
    extra = sorted(mine, key=lambda label: mine[label] - theirs.get(label, 0.0), reverse=True)[:n]
    return [{"kernel": label, "extra_us": round(mine[label] - theirs.get(label, 0.0), 1),
             "us": round(mine[label], 1), "baseline_us": round(theirs.get(label, 0.0), 1)}
            for label in extra if mine[label] > theirs.get(label, 0.0)]  # fmt: skip


def _us_by_label(breakdown: dict) -> dict[str, float]:
    us: dict[str, float] = defaultdict(float)
    for k in breakdown["kernels"]:
        us[k["label"]] += k["us"]
    return us


def by_op(breakdown: dict) -> list[tuple[str, float]]:
    """`kernel_breakdown`'s kernels summed by the aten op(s) that launched them (else the kernel's label),
    largest first: [(op, us per call of fn)]."""
    us: dict[str, float] = defaultdict(float)
    for k in breakdown["kernels"]:
        us[_launching_ops(k["ops"]) or k["label"]] += k["us"]
    return sorted(us.items(), key=lambda item: item[1], reverse=True)


def attention_us(breakdown: dict) -> float:
    """The attention part of `kernel_breakdown`'s total: lfi's interaction-attention kernels, and kernels that
    only SDPA ops launched (cuDNN or flash attention with their helpers). Kernels named by the backend (cuDNN
    also runs convolutions, e.g. ViT-B's patch embedding) or shared with other ops do not count."""
    return sum(
        k["us"]
        for k in breakdown["kernels"]
        if INTERACTION_KERNEL.match(k["kernel"])
        or "scaled_dot_product" in k["kernel"]  # on a CPU the rows are the aten ops themselves
        or (k["ops"] and all("scaled_dot_product" in op for op in k["ops"]))
    )
